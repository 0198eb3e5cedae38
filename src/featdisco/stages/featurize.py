"""Pieces → features: one autorater call per piece; the rater sees only that piece.

By default (``featurize.v2``) each feature comes with a short verbatim quote from the piece
that shows it; the quote is checked against the piece (:mod:`featdisco.quotes`) and
stored with its character span and a ``verified`` flag, so every feature can be traced to
text and the share of quotes the autorater invented is counted per run. ``evidence=False``
(``--no-evidence``) asks the plain ``featurize.v1`` prompt: no quotes, fewer output tokens.

What the LLM fills (:class:`~featdisco.llm.replies.EvidencedFeatures` or
:class:`~featdisco.llm.replies.Features`) is not the record we store: a stored
:data:`FEATURES_SCHEMA` row has ids and provenance, and its text is cleaned (whitespace,
forbidden characters, duplicates within the piece, copies of the prompt's own examples).
Features stay quote-free in their own wording: they are what gets clustered.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NotRequired, TypedDict

import pyarrow as pa
import pyarrow.parquet as pq

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMRequest, Sampling
from featdisco.llm.engine import CallEngine, CallResult
from featdisco.llm.replies import EvidencedFeatures, Features
from featdisco.llm.summary import Failures
from featdisco.prompts import Prompt
from featdisco.quotes import QuoteIndex
from featdisco.rundir import StageCounts
from featdisco.stages.base import Stage, StageConfig, StageContext, StageResult, stage_config

# Bump when this stage's output for the same inputs and config changes (a fix, a new
# column): a run made with older code then redoes this stage instead of keeping stale results.
STAGE_VERSION = 3  # 2: quotes, spans and verified flags; 3: quotes verified on word boundaries, with a reason

KIND_DESCRIPTIONS = {
    "user": "a message a user wrote to an AI assistant",
    "thought": "the private reasoning (thoughts) an AI model wrote before answering",
    "response": "a response an AI assistant wrote to a user",
}
PLAIN_PROMPT_VERSION = 3  # featurize.v3: features without quotes (--no-evidence); v4 is the same with quotes
CHARS_PER_TOKEN = 4
MAX_FEATURE_WORDS = 12  # the prompt asks for under ten words
QUOTED_WORDS = 4  # a feature of this many words that is its own quote copies the piece (small models do)
FEATURES_SCHEMA = pa.schema([
    ("feature_id", pa.string()),
    ("piece_id", pa.string()),
    ("transcript_id", pa.string()),
    ("kind", pa.string()),
    ("text", pa.string()),
    ("quote", pa.string()),  # null without evidence; "" for a whole-piece property
    ("quote_start", pa.int32()),  # character span of the quote in the piece's text,
    ("quote_end", pa.int32()),  # null when it was not found there (or is empty)
    ("verified", pa.bool_()),  # the quote is in the piece; null when there is no quote
    ("quote_failure", pa.string()),  # why verified is false: not_found, too_short or inside_word
])
_FORBIDDEN = re.compile(r"[()\[\]{}:;\"“”0-9#*_`<>|/\\=°%^~]+")
_LETTERS = re.compile(r"[^\W\d_]{2}")  # a feature needs a word: "°", "N=" are fragments
_SPACE = re.compile(r"\s+")
_EXAMPLE_LINE = re.compile(r"^- [^:]+:\s*(.+)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class FeaturizeConfig(StageConfig):
    """What shapes the featurize stage's output (its fingerprint holds all of it)."""

    min_features: int = 10
    max_features: int = 20
    max_piece_tokens: int = 2000
    temperature: float = 0.0
    evidence: bool = True  # ask for a verbatim quote per feature (featurize.v2)

    def __post_init__(self) -> None:
        if not 1 <= self.min_features <= self.max_features:
            raise FeatdiscoError(f"need 1 <= --min-features ({self.min_features}) <= --max-features "
                                 f"({self.max_features})")
        if self.max_piece_tokens < 50:
            raise FeatdiscoError("--max-piece-tokens must be at least 50")


class FeaturizeCounts(TypedDict):
    """The featurize stage's counts, as the manifest keeps them."""

    pieces: int
    ok: int
    failed: int
    failed_by_reason: dict[str, int]
    not_sent: int
    truncated: int
    features: int
    dropped: dict[str, int]
    quotes: NotRequired[dict[str, int]]  # with evidence only
    quote_failures: NotRequired[dict[str, int]]
    unverified_share: NotRequired[float | None]


@dataclass(slots=True)
class FeaturizeReport(Failures):
    pieces: int = 0
    ok: int = 0
    not_sent: int = 0  # held back at the --max-cost cap: not failures, sent by a rerun
    truncated: int = 0
    features: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # duplicate, example, empty, no_letters
    quotes: Counter[str] = field(default_factory=Counter)  # verified, unverified, empty
    quote_failures: Counter[str] = field(default_factory=Counter)  # not_found, too_short, inside_word

    @property
    def unverified_share(self) -> float | None:
        """Share of non-empty quotes not found in their piece: how often the autorater
        invents its evidence. None without quotes."""
        n = self.quotes["verified"] + self.quotes["unverified"]
        return self.quotes["unverified"] / n if n else None

    def as_dict(self) -> FeaturizeCounts:
        out: FeaturizeCounts = {"pieces": self.pieces, "ok": self.ok, "failed": self.failed,
               "failed_by_reason": dict(self.failed_by_reason), "not_sent": self.not_sent,
               "truncated": self.truncated,
               "features": self.features, "dropped": dict(self.dropped)}
        if self.quotes:
            share = self.unverified_share
            out["quotes"] = dict(self.quotes)
            out["quote_failures"] = dict(self.quote_failures)
            out["unverified_share"] = None if share is None else round(share, 4)
        return out


def evidence_line(counts: StageCounts) -> str | None:
    """The run summary's line on quotes, from the featurize stage's recorded counts (as
    :class:`FeaturizeCounts`, or from a run without quotes: none)."""
    quotes = counts.get("quotes")
    if not quotes or not isinstance(quotes, dict):
        return None
    checked = quotes.get("verified", 0) + quotes.get("unverified", 0)
    share = quotes.get("unverified", 0) / checked if checked else 0.0
    failures = counts.get("quote_failures")
    failures = failures if isinstance(failures, dict) else {}
    why = ", ".join(f"{r} {n:,}" for r, n in sorted(failures.items()) if n)
    return (f"evidence: {quotes.get('unverified', 0):,} of {checked:,} quotes not found in their piece "
            f"({share:.1%} unverifiable, flagged verified=false{'; ' + why if why else ''}); "
            f"{quotes.get('empty', 0):,} features quote nothing (whole-piece properties)")


def reply_model(cfg: FeaturizeConfig) -> type[Features] | type[EvidencedFeatures]:
    """What the autorater fills: features with quotes, or plain features."""
    shape = EvidencedFeatures if cfg.evidence else Features
    return shape.bounded(cfg.min_features, cfg.max_features)


def max_reply_tokens(cfg: FeaturizeConfig) -> int:
    """Room for the reply: ~16 tokens a feature, ~32 more for its quote."""
    return cfg.max_features * (48 if cfg.evidence else 16) + 64


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


def has_letters(text: str) -> bool:
    """A feature with no word of letters ("°", "N", "--") names nothing."""
    return _LETTERS.search(text) is not None


def truncate_piece(text: str, max_tokens: int) -> tuple[str, bool]:
    limit = max_tokens * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text, False
    return f"{text[:limit]}\n[… truncated: {len(text) - limit} more characters not shown]", True


def build_requests(texts: Sequence[str], kinds: Sequence[str], prompt: Prompt,
                   cfg: FeaturizeConfig) -> tuple[list[LLMRequest], int]:
    model = reply_model(cfg)
    schema = model.json_schema()
    sampling = Sampling(temperature=cfg.temperature, max_tokens=max_reply_tokens(cfg))
    requests: list[LLMRequest] = []
    truncated = 0
    for text, kind in zip(texts, kinds, strict=True):
        body, cut = truncate_piece(text, cfg.max_piece_tokens)
        truncated += cut
        messages = prompt.render(kind_description=KIND_DESCRIPTIONS[kind], text=body,
                                 min_features=cfg.min_features, max_features=cfg.max_features)
        requests.append(LLMRequest(messages, schema=schema, schema_name=model.schema_name,
                                   sampling=sampling, prompt_version=prompt.version))
    return requests, truncated


@dataclass(frozen=True, slots=True)
class Found:
    """One kept feature of a reply: its cleaned text and its quote (None without evidence)."""

    text: str
    quote: str | None = None


def features_from_result(result: CallResult, examples: frozenset[str], dropped: Counter[str],
                         evidence: bool = False) -> list[Found]:
    """The reply's features, cleaned, each kept once; every drop is counted by reason."""
    raw: list[tuple[str, str | None]]
    if evidence:
        raw = [(f.feature, f.quote) for f in EvidencedFeatures.read(result.data).features]
    else:
        raw = [(f, None) for f in Features.read(result.data).features]
    seen: set[str] = set()
    out: list[Found] = []
    for item, quote in raw:
        text = clean_feature(item)
        key = normalise_key(text)
        if not item.strip():
            dropped["empty"] += 1
        elif not has_letters(text):  # digits or symbols only, once cleaned
            dropped["no_letters"] += 1
        elif len(text.split()) > MAX_FEATURE_WORDS:  # a quotation or a summary, not a feature
            dropped["too_long"] += 1
        elif quote and len(text.split()) >= QUOTED_WORDS and key == normalise_key(clean_feature(quote)):
            dropped["copies_quote"] += 1  # the piece's words, not a description of them
        elif key in examples:
            dropped["example"] += 1
        elif key in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(key)
            out.append(Found(text, quote))
    return out


@dataclass(slots=True)
class FeaturizeEstimate:
    """A featurize dry run with the run's setting and with the other one, so a user sees
    what evidence costs before choosing. Attributes not named here are the chosen estimate's."""

    chosen: Any  # featdisco.llm.engine.Estimate
    other: Any
    evidence: bool

    def __getattr__(self, name: str) -> Any:
        return getattr(self.chosen, name)

    def __str__(self) -> str:
        def cost(e: Any) -> str:
            return "unknown" if e.cost is None else f"${e.cost:.4f}"

        with_, without = (self.chosen, self.other) if self.evidence else (self.other, self.chosen)
        # a side estimated from cached reply lengths and one from max_tokens are not comparable
        # ("without" would look dearer): then each says what its figure is
        differ = with_.output_basis != without.output_basis

        def basis(e: Any) -> str:
            return f" ({e.output_basis})" if differ else ""

        return (f"{self.chosen}\n  with evidence (quotes, the default): {with_.output_tokens:,} output "
                f"tokens{basis(with_)}, cost {cost(with_)}; without (--no-evidence): "
                f"{without.output_tokens:,} output tokens{basis(without)}, cost {cost(without)}")


def dry_run_both(batches: Callable[[], Iterable[pa.RecordBatch]],
                 estimate: Callable[[Iterable[pa.RecordBatch], Prompt, FeaturizeConfig], Any],
                 prompt: Prompt, other_prompt: Prompt, cfg: FeaturizeConfig) -> FeaturizeEstimate:
    """``estimate`` (a dry run of pieces) for ``cfg`` with ``prompt`` and for the other
    evidence setting with ``other_prompt``; ``batches`` gives the pieces afresh each time."""
    other_cfg = replace(cfg, evidence=not cfg.evidence)
    return FeaturizeEstimate(estimate(batches(), prompt, cfg),
                             estimate(batches(), other_prompt, other_cfg), cfg.evidence)


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
        # One kind after the other: consecutive calls then share the prompt up to the piece,
        # which a local model keeps in its KV cache (and servers' prefix caches reuse).
        order = sorted(range(len(requests)), key=kinds.__getitem__)
        by_position = dict(zip(order, engine.run_sync([requests[i] for i in order], desc=desc), strict=True))
        results = [by_position[i] for i in range(len(order))]
        del requests, by_position
        cols: dict[str, list[Any]] = {name: [] for name in FEATURES_SCHEMA.names}
        for piece_id, tid, kind, text, result in zip(part.column("piece_id").to_pylist(),
                                                     part.column("transcript_id").to_pylist(), kinds,
                                                     part.column("text").to_pylist(), results,
                                                     strict=True):
            if result.status == "skipped_budget":
                report.not_sent += 1
                continue
            if not result.ok:
                report.fail(result.reason or result.status)
                continue
            report.ok += 1
            found = features_from_result(result, examples, report.dropped, cfg.evidence)
            index = QuoteIndex(text) if cfg.evidence else None
            for i, f in enumerate(found):
                cols["feature_id"].append(f"{piece_id}#{i}")
                cols["piece_id"].append(piece_id)
                cols["transcript_id"].append(tid)
                cols["kind"].append(kind)
                cols["text"].append(f.text)
                _add_quote(cols, index, f.quote, report)
        batch = pa.RecordBatch.from_pydict(cols, schema=FEATURES_SCHEMA)
        report.features += batch.num_rows
        yield batch


def _add_quote(cols: dict[str, list[Any]], index: QuoteIndex | None, quote: str | None,
               report: FeaturizeReport) -> None:
    """The quote columns of one feature: its span, whether the piece holds it, and why not."""
    check = index.check(quote) if index is not None and quote and quote.strip() else None
    span = check.span if check is not None else None
    if quote is None or index is None:
        verified = None
    elif check is None:
        verified = None
        report.quotes["empty"] += 1
    else:
        verified = check.verified
        report.quotes["verified" if verified else "unverified"] += 1
        if check.failure:
            report.quote_failures[check.failure] += 1
    cols["quote_failure"].append(check.failure if check is not None else None)
    cols["quote"].append(quote)
    cols["quote_start"].append(span.start if span else None)
    cols["quote_end"].append(span.end if span else None)
    cols["verified"].append(verified)


class FeaturizeStage(Stage):
    """``pieces.parquet`` → ``features.parquet``: the bulk of a run's spend."""

    name = "featurize"
    version = STAGE_VERSION
    reads = ("pieces.parquet",)
    writes = ("features.parquet",)
    Config = FeaturizeConfig
    prompt = "featurize"
    backends = ("llm",)

    @staticmethod
    def settings(config: Any) -> FeaturizeConfig:
        """This stage's config from the run's (:func:`~featdisco.stages.base.stage_config`)."""
        out: FeaturizeConfig = stage_config(FeaturizeStage, config)
        return out

    def run(self, ctx: StageContext) -> StageResult:
        fcfg: FeaturizeConfig = ctx.config
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
            why = ", ".join(f"{k} {v:,}" for k, v in sorted(report.failed_by_reason.items(), key=lambda kv: -kv[1]))
            ctx.log(f"featurize: {report.failed:,} of {report.pieces:,} pieces failed ({why}); a rerun retries them")
        if report.quotes:
            share = report.unverified_share
            checked = report.quotes["verified"] + report.quotes["unverified"]
            ctx.log(f"featurize: {report.quotes['unverified']:,} of {checked:,} quotes were not found in "
                    f"their piece ({0.0 if share is None else share:.1%} unverifiable); they are kept "
                    "and flagged verified=false")
        if report.dropped["no_letters"]:
            ctx.log(f"featurize: {report.dropped['no_letters']:,} features without a word of letters "
                    "(symbol fragments) were dropped")
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
