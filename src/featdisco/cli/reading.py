"""The reading flags ``split``, ``run`` and ``transform`` share: one definition each, so the
three commands take the same names with the same meaning."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from featdisco.transcripts.read import ReadOptions

FormatOpt = Annotated[str | None, typer.Option(
    "--format", "-f", help="Force a record format instead of detecting it (see `featdisco formats`).")]
MapOpt = Annotated[str | None, typer.Option(
    "--map", help="Map record fields (dotted paths allowed), e.g. user=prompt,response=output.text,"
    "model=generator (targets: user, response, thought, system, model, id).")]
MetaOpt = Annotated[str | None, typer.Option(
    "--meta", help="Record fields to keep as columns, comma-separated (dotted paths allowed).")]
SourceModelOpt = Annotated[str | None, typer.Option(
    "--source-model", help="Model name for transcripts that do not name one.")]
SourceModelFromOpt = Annotated[str | None, typer.Option(
    "--source-model-from", help="Take each transcript's model name from its file name, its folder "
    "name or a record field: filename, dirname or FIELD (dotted path); it wins over the record's own.")]
SkipBadOpt = Annotated[bool, typer.Option(
    "--skip-bad", help="Skip bad records (counted by reason) instead of stopping.")]
LimitOpt = Annotated[int | None, typer.Option(
    "--limit", min=1, help="Read at most this many records from each file.")]
TreeOpt = Annotated[str, typer.Option(
    "--tree", help="Conversation trees (OpenAssistant): all (every root-to-leaf path; shared turns "
    "are split once) or first (the top-ranked path only).")]


def meta_fields(meta: str | None) -> list[str]:
    return [m.strip() for m in (meta or "").split(",") if m.strip()]


def read_options(*, format: str | None, map_: str | None, meta: str | None, source_model: str | None,
                 source_model_from: str | None, skip_bad: bool, limit: int | None, tree: str = "all",
                 questions: Path | None = None, max_record_bytes: int | None = None) -> ReadOptions:
    """:class:`ReadOptions` from the shared flags (invalid values are errors before any work)."""
    from featdisco.transcripts.read import ReadOptions
    from featdisco.transcripts.sources import DEFAULT_MAX_RECORD_BYTES

    return ReadOptions(format=format, mapping=map_ or {}, model=source_model, meta=meta_fields(meta),
                       skip_bad=skip_bad, limit=limit, source_model_from=source_model_from, tree=tree,
                       questions=[questions] if questions else [],
                       max_record_bytes=max_record_bytes or DEFAULT_MAX_RECORD_BYTES)


_READING_PARAMS = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
                   for name, annotation, default in (
                       ("format", FormatOpt, None), ("map_", MapOpt, None), ("meta", MetaOpt, None),
                       ("source_model", SourceModelOpt, None), ("source_model_from", SourceModelFromOpt, None),
                       ("skip_bad", SkipBadOpt, False), ("limit", LimitOpt, None), ("tree", TreeOpt, "all"))]


def with_reading(fn: Callable[..., None]) -> Callable[..., None]:
    """Give a command that reads transcripts the reading flags (listed last in its help) and
    call it with the :class:`ReadOptions` they make, as ``reading``: one definition for split,
    run, transform and scan."""
    from featdisco.transcripts.read import ReadOptions

    sig = inspect.signature(fn, eval_str=True, locals={"ReadOptions": ReadOptions})
    params = [p for p in sig.parameters.values() if p.name != "reading"]

    @functools.wraps(fn)
    def command(*, format: str | None, map_: str | None, meta: str | None, source_model: str | None,
                source_model_from: str | None, skip_bad: bool, limit: int | None, tree: str,
                **kwargs: Any) -> None:
        fn(**kwargs, reading=read_options(format=format, map_=map_, meta=meta, source_model=source_model,
                                          source_model_from=source_model_from, skip_bad=skip_bad,
                                          limit=limit, tree=tree))

    all_params = params + _READING_PARAMS
    command.__signature__ = sig.replace(parameters=all_params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in all_params} | {"return": None}
    return command
