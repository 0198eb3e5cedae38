"""Pieces → features: one autorater call per piece; the rater sees only that piece.

The schema the LLM fills (``{"features": [...]}``) is not the record we store: a stored
:data:`FEATURES_SCHEMA` row has ids and provenance, and its text is cleaned (whitespace,
forbidden characters, duplicates within the piece, copies of the prompt's own examples).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMRequest, Sampling
from featdisco.llm.engine import CallEngine, CallResult
from featdisco.prompts import Prompt
from featdisco.stages.base import Stage, StageContext, StageResult

# Bump when this stage's output for the same inputs and config changes (a fix, a new
# column): a run made with older code then redoes this stage instead of keeping stale results.
STAGE_VERSION = 1

KIND_DESCRIPTIONS = {
    "user": "a message a user wrote to an AI assistant",
    "thought": "the private reasoning (thoughts) an AI model wrote before answering",
    "response": "a response an AI assistant wrote to a user",
}
CHARS_PER_TOKEN = 4
MAX_FEATURE_WORDS = 12  # the prompt asks for under ten words
FEATURES_SCHEMA = pa.schema([
    ("feature_id", pa.string()),
    ("piece_id", pa.string()),
    ("transcript_id", pa.string()),
    ("kind", pa.string()),
    ("text", pa.string()),
])
_FORBIDDEN = re.compile(r"[()\[\]{}:;\"“”0-9#*_`<>|/\\]+")
_SPACE = re.compile(r"\s+")
_EXAMPLE_LINE = re.compile(r"^- [^:]+:\s*(.+)$", re.MULTILINE)


@dataclass(slots=True)
class FeaturizeConfig:
    min_features: int = 10
    max_features: int = 20
    max_piece_tokens: int = 2000
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_features <= self.max_features:
            raise FeatdiscoError(f"need 1 <= --min-features ({self.min_features}) <= --max-features "
                                 f"({self.max_features})")
        if self.max_piece_tokens < 50:
            raise FeatdiscoError("--max-piece-tokens must be at least 50")


@dataclass(slots=True)
class FeaturizeReport:
    pieces: int = 0
    ok: int = 0
    failed: int = 0
    failed_by_reason: Counter[str] = field(default_factory=Counter)
    not_sent: int = 0  # held back at the --max-cost cap: not failures, sent by a rerun
    truncated: int = 0
    features: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # duplicate, example, empty

    def as_dict(self) -> dict[str, Any]:
        return {"pieces": self.pieces, "ok": self.ok, "failed": self.failed,
                "failed_by_reason": dict(self.failed_by_reason), "not_sent": self.not_sent,
                "truncated": self.truncated,
                "features": self.features, "dropped": dict(self.dropped)}


def feature_schema(cfg: FeaturizeConfig) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"features": {
            "type": "array",
            "items": {"type": "string", "minLength": 2, "maxLength": 120},
            "minItems": cfg.min_features,
            "maxItems": cfg.max_features,
        }},
        "required": ["features"],
        "additionalProperties": False,
    }


def example_features(prompt: Prompt) -> frozenset[str]:
    """The example features the prompt itself lists: small models copy them verbatim, so a
    feature identical to one is dropped (SPEC: real chats showed this)."""
    out: set[str] = set()
    for line in _EXAMPLE_LINE.findall(prompt.system):
        out.update(normalise_key(x) for x in line.split(";") if x.strip())
    return frozenset(out)


def normalise_key(text: str) -> str:
    return _SPACE.sub(" ", text).strip().lower()


def clean_feature(text: str) -> str:
    """Plain letters only, single spaces, first letter capitalised (SPEC step 3)."""
    text = _SPACE.sub(" ", _FORBIDDEN.sub(" ", text)).strip(" .,-'")
    return text[:1].upper() + text[1:] if text else ""


def truncate_piece(text: str, max_tokens: int) -> tuple[str, bool]:
    limit = max_tokens * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text, False
    return f"{text[:limit]}\n[… truncated: {len(text) - limit} more characters not shown]", True


def build_requests(texts: Sequence[str], kinds: Sequence[str], prompt: Prompt,
                   cfg: FeaturizeConfig) -> tuple[list[LLMRequest], int]:
    schema = feature_schema(cfg)
    sampling = Sampling(temperature=cfg.temperature, max_tokens=cfg.max_features * 16 + 64)
    requests: list[LLMRequest] = []
    truncated = 0
    for text, kind in zip(texts, kinds, strict=True):
        body, cut = truncate_piece(text, cfg.max_piece_tokens)
        truncated += cut
        messages = prompt.render(kind_description=KIND_DESCRIPTIONS[kind], text=body,
                                 min_features=cfg.min_features, max_features=cfg.max_features)
        requests.append(LLMRequest(messages, schema=schema, schema_name="features",
                                   sampling=sampling, prompt_version=prompt.version))
    return requests, truncated


def features_from_result(result: CallResult, examples: frozenset[str],
                         dropped: Counter[str]) -> list[str]:
    raw = result.data.get("features", []) if isinstance(result.data, dict) else []
    seen: set[str] = set()
    out: list[str] = []
    for item in raw:
        text = clean_feature(str(item))
        key = normalise_key(text)
        if not text:
            dropped["empty"] += 1
        elif len(text.split()) > MAX_FEATURE_WORDS:  # a quotation or a summary, not a feature
            dropped["too_long"] += 1
        elif key in examples:
            dropped["example"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            out.append(text)
    return out


CHUNK_PIECES = 32_768  # pieces whose requests and replies are in memory at once


def featurize(pieces: pa.Table, engine: CallEngine, prompt: Prompt,
              cfg: FeaturizeConfig | None = None,
              chunk_pieces: int = CHUNK_PIECES) -> tuple[pa.Table, FeaturizeReport]:
    """Features of every piece; failed pieces are counted (and retried by the next run,
    since the cache keeps only successes as final). :func:`featurize_chunks` on a table."""
    report = FeaturizeReport(pieces=pieces.num_rows)
    chunks = (pieces.slice(start, chunk_pieces)
              for start in range(0, pieces.num_rows, chunk_pieces))
    batches = list(featurize_chunks(chunks, engine, prompt, cfg, report,
                                    n_chunks=-(-pieces.num_rows // chunk_pieces)))
    return pa.Table.from_batches(batches, schema=FEATURES_SCHEMA), report


def featurize_chunks(chunks: Iterable[pa.Table | pa.RecordBatch], engine: CallEngine,
                     prompt: Prompt, cfg: FeaturizeConfig | None, report: FeaturizeReport,
                     n_chunks: int | None = None) -> Iterator[pa.RecordBatch]:
    """The features of each chunk of pieces (columns piece_id, transcript_id, kind, text),
    as one record batch per chunk; ``report`` counts as it goes.

    Each chunk goes to the engine whole and its features become compact Arrow columns
    before the next is read: rendered requests (~2.5 kB each) and parsed replies are what
    would otherwise grow with the run, about 1 GB per 100k pieces. With chunks read from
    Parquet and batches written back as they come, neither the pieces nor the features of
    a run sit in memory together. A chunk boundary drains the engine's workers once, which
    costs at most one call's latency per chunk.
    """
    cfg = cfg or FeaturizeConfig()
    examples = example_features(prompt)
    for c, part in enumerate(chunks):
        kinds = part.column("kind").to_pylist()
        requests, truncated = build_requests(part.column("text").to_pylist(), kinds, prompt, cfg)
        report.truncated += truncated
        desc = ("featurize" if n_chunks == 1 else
                f"featurize {c + 1}/{n_chunks}" if n_chunks else f"featurize {c + 1}")
        results = engine.run_sync(requests, desc=desc)
        del requests
        cols: dict[str, list[str]] = {name: [] for name in FEATURES_SCHEMA.names}
        for piece_id, tid, kind, result in zip(part.column("piece_id").to_pylist(),
                                               part.column("transcript_id").to_pylist(), kinds,
                                               results, strict=True):
            if result.status == "skipped_budget":
                report.not_sent += 1
                continue
            if not result.ok:
                report.failed += 1
                report.failed_by_reason[result.reason or result.status] += 1
                continue
            report.ok += 1
            for i, text in enumerate(features_from_result(result, examples, report.dropped)):
                cols["feature_id"].append(f"{piece_id}#{i}")
                cols["piece_id"].append(piece_id)
                cols["transcript_id"].append(tid)
                cols["kind"].append(kind)
                cols["text"].append(text)
        batch = pa.RecordBatch.from_pydict(cols, schema=FEATURES_SCHEMA)
        report.features += batch.num_rows
        yield batch


class FeaturizeStage(Stage):
    """``pieces.parquet`` → ``features.parquet``: the bulk of a run's spend."""

    name = "featurize"
    version = STAGE_VERSION
    reads = ("pieces.parquet",)
    writes = ("features.parquet",)
    config = ("min_features", "max_features", "max_piece_tokens")
    prompt = "featurize"
    backends = ("llm",)

    @staticmethod
    def settings(config: Any) -> FeaturizeConfig:
        return FeaturizeConfig(config.min_features, config.max_features, config.max_piece_tokens)

    def run(self, ctx: StageContext) -> StageResult:
        fcfg = self.settings(ctx.config)
        engine = ctx.engine
        # Pieces are read a chunk at a time and features written as each chunk finishes:
        # neither all the pieces' text nor all the features are held at once.
        with pq.ParquetFile(ctx.path("pieces.parquet")) as pieces:
            n = pieces.metadata.num_rows
            report = FeaturizeReport(pieces=n)
            chunks = pieces.iter_batches(batch_size=CHUNK_PIECES,
                                         columns=["piece_id", "transcript_id", "kind", "text"])
            rows = ctx.write_stream("features.parquet", FEATURES_SCHEMA,
                                    featurize_chunks(chunks, engine, ctx.prompt, fcfg, report,
                                                     n_chunks=-(-n // CHUNK_PIECES)))
        if report.failed:
            ctx.log(f"featurize: {report.failed} of {report.pieces} pieces failed "
                    f"({dict(report.failed_by_reason)}); a rerun retries them")
        if report.truncated:
            ctx.log(f"featurize: {report.truncated} pieces were longer than "
                    f"{fcfg.max_piece_tokens} tokens and were truncated")
        stop = None
        if engine.summary.skipped_budget > 0:
            stop = ("stopped at the --max-cost cap during featurize; rerun with a higher cap to "
                    "continue (finished calls are cached)")
        elif rows == 0:
            raise FeatdiscoError("the autorater produced no features (every call failed?); "
                                 "see the featurize counts above")
        return StageResult(report.as_dict(), complete=report.failed == 0 and report.not_sent == 0,
                           stop=stop)
