"""Prices per model, cost of a call, and token estimates for ``--dry-run``.

The built-in table is list prices in USD per million input / output tokens as published by
the providers in 2025; prices change, so users can override or extend it from a JSON or
TOML file (``{"model": {"input": 2.5, "output": 10}}`` or ``{"model": [2.5, 10]}``) or a
dict. A model missing from the table has an unknown cost (None) and a single warning;
it never stops a run — except under ``--max-cost``, where the engine refuses to guess.

Token estimates use about four characters per token, the usual rule of thumb for English
with BPE tokenizers; it is within ~20% for prose and undercounts code and non-Latin text.
Real usage reported by the provider replaces it as soon as calls are made.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMRequest, Usage

log = logging.getLogger(__name__)

# USD per 1M tokens: (input, output).
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "claude-opus-4": (15.00, 75.00),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-opus-4-5": (5.00, 25.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.5-pro": (1.25, 10.00),
}

FREE_BACKENDS = frozenset({"local"})
PRICES_ENV = "FEATDISCO_PRICES"  # a price file used when --prices is not given


def estimate_tokens(text: str) -> int:
    """About four characters per token (see the module docstring for its limits)."""
    return (len(text) + 3) // 4


def estimate_input_tokens(request: LLMRequest) -> int:
    """Prompt tokens of a request: its messages, a few tokens of framing per message, and
    the schema when one is sent."""
    n = sum(estimate_tokens(m.content) + 4 for m in request.messages)
    if request.schema is not None:
        n += estimate_tokens(json.dumps(request.schema))
    return n


class PriceTable:
    """Model -> (input, output) USD per 1M tokens, matched exactly, then without a
    ``provider/`` prefix, then by the longest known prefix (dated snapshots such as
    ``gpt-4o-mini-2024-07-18`` price as ``gpt-4o-mini``)."""

    def __init__(self, overrides: Mapping[str, Any] | str | Path | None = None, *,
                 include_defaults: bool = True) -> None:
        self.prices: dict[str, tuple[float, float]] = dict(DEFAULT_PRICES) if include_defaults else {}
        self.source = "built-in table"
        self._from_file: set[str] = set()
        if overrides is not None:
            self.update(overrides)
        self._warned: set[str] = set()

    @classmethod
    def for_run(cls, path: str | Path | None = None) -> PriceTable:
        """The built-in table extended by ``path``, else by the file ``FEATDISCO_PRICES``
        names (read now, so that a bad file stops a run before anything is spent)."""
        path = path or os.environ.get(PRICES_ENV) or None
        table = cls(path)
        if path:
            table.source = str(Path(path).absolute())
        return table

    def used(self, backend: str, model: str) -> dict[str, Any]:
        """The price a run used for its model, for the manifest: USD per 1M tokens and where
        it came from (None: unknown, so costs are unknown)."""
        if backend in FREE_BACKENDS:
            return {"model": model, "input": 0.0, "output": 0.0, "source": f"{backend} backend (free)"}
        p = self.lookup(model)
        name = self._match(model)
        source = self.source if name in self._from_file else "built-in table"
        return {"model": model, "input": p[0] if p else None, "output": p[1] if p else None,
                "source": source if p else "unknown (no price; --prices FILE adds one)"}

    def update(self, overrides: Mapping[str, Any] | str | Path) -> None:
        where = ""
        if isinstance(overrides, (str, Path)):
            where = f"price file {overrides}"
            overrides = _load_file(Path(overrides))
        for model, v in overrides.items():
            self.prices[str(model)] = _parse_price(str(model), v, where)
            self._from_file.add(str(model))

    def _match(self, model: str) -> str | None:
        for name in (model, model.rsplit("/", 1)[-1]):
            if name in self.prices:
                return name
        name = model.rsplit("/", 1)[-1]
        return max((k for k in self.prices if name.startswith(k + "-")), key=len, default=None)

    def lookup(self, model: str) -> tuple[float, float] | None:
        name = self._match(model)
        return self.prices[name] if name else None

    def known(self, backend: str, model: str) -> bool:
        return backend in FREE_BACKENDS or self.lookup(model) is not None

    def cost(self, backend: str, model: str, usage: Usage) -> float | None:
        """USD for this usage, or None (with one warning per model) when unpriced."""
        if backend in FREE_BACKENDS:
            return 0.0
        p = self.lookup(model)
        if p is None:
            if model not in self._warned:
                self._warned.add(model)
                log.warning("no price known for model %r: its cost is reported as unknown "
                            "(add it with --prices FILE or %s)", model, PRICES_ENV)
            return None
        return (usage.input_tokens * p[0] + usage.output_tokens * p[1]) / 1e6


# Above this a price is a typo (the dearest list price is well under $1,000 per 1M tokens):
# a huge price makes every cost overflow to inf, which silently switches the cost cap off.
MAX_PRICE = 100_000.0


def _parse_price(model: str, v: Any, where: str = "") -> tuple[float, float]:
    """(input, output) USD per 1M tokens, refusing NaN, negative, infinite or absurd prices:
    any of them makes costs NaN or inf, and ``--max-cost`` then never stops anything."""
    at = f"{where}: " if where else ""
    try:
        if isinstance(v, Mapping):
            pair = float(v["input"]), float(v["output"])
        else:
            a, b = v
            pair = float(a), float(b)
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise FeatdiscoError(f"{at}price for {model!r} must be {{'input': X, 'output': Y}} or "
                             f"[X, Y] in USD per 1M tokens, got {v!r}") from e
    for side, x in zip(("input", "output"), pair, strict=True):
        if not (0.0 <= x <= MAX_PRICE):  # False for NaN too
            why = ("is not a number" if math.isnan(x) else "is negative" if x < 0
                   else f"is above {MAX_PRICE:,.0f} USD per 1M tokens")
            raise FeatdiscoError(f"{at}the {side} price of {model!r} ({x!r}) {why}; a price is "
                                 "USD per 1M tokens, 0 or more")
    return pair


def _load_file(path: Path) -> Mapping[str, object]:
    if path.exists() and not path.is_file() and not path.is_dir():
        raise FeatdiscoError(f"price file {path} is not a regular file (from --prices or {PRICES_ENV}): "
                             "a pipe such as <(…) can be read once, but the run keeps the path and "
                             "later commands read it again; save the prices to a file")
    if not path.is_file():
        raise FeatdiscoError(f"price file {path} does not exist (from --prices or {PRICES_ENV})")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise FeatdiscoError(f"cannot read price file {path}: {e.strerror}") from e
    try:
        data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise FeatdiscoError(f"price file {path} is not valid {path.suffix[1:] or 'JSON'}: {e}") from e
    if not isinstance(data, dict):
        raise FeatdiscoError(f"price file {path} must map model names to prices")
    return data.get("prices", data) if isinstance(data.get("prices"), dict) else data
