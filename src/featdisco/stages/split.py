"""Reading and splitting: transcripts from outside the run → ``pieces_uncut.parquet`` →
``pieces.parquet``.

Two stages, so that splitting is a stage like the others. ``read`` is the pipeline's
source: its inputs are files (or transcripts) given to this invocation, so it runs whenever
it is given them, and its output (every piece at full length) stands for them downstream.
``split`` applies the run's config to those pieces (``--max-chars``): a rerun without
inputs but with another ``--max-chars`` cuts the stored pieces again, exactly as a first run
with that setting would have. Reading and splitting live in :mod:`featdisco.transcripts`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from featdisco.errors import FeatdiscoError
from featdisco.stages.base import Stage, StageConfig, StageContext, StageResult
from featdisco.transcripts import split as split_module
from featdisco.transcripts.model import Transcript
from featdisco.transcripts.read import ReadOptions, ReadReport, read_transcripts
from featdisco.transcripts.split import SplitStats, iter_pieces, piece_batches, piece_schema

UNCUT = "pieces_uncut.parquet"  # every piece at full length, as read


@dataclass(slots=True)
class SplitInputs:
    """What the read stage reads: paths (with reading options) or transcripts."""

    paths: list[str | Path] | None = None
    read_options: ReadOptions | None = None
    transcripts: Iterable[Transcript] | None = None
    report: ReadReport = field(default_factory=ReadReport)

    def transcripts_iter(self, log: object = None) -> Iterable[Transcript]:
        if self.transcripts is not None:
            return self.transcripts
        assert self.paths is not None
        return read_transcripts(list(self.paths), self.read_options or ReadOptions(),
                                report=self.report, log=log)  # type: ignore[arg-type]


class ReadStage(Stage):
    """Transcripts given to this invocation → every piece, uncut."""

    name = "read"
    version = 1
    writes = (UNCUT,)
    source = True

    def run(self, ctx: StageContext) -> StageResult:
        inputs: SplitInputs = ctx.inputs
        stats = SplitStats()
        # Streamed to disk a batch at a time: the pieces of a big run (all their text)
        # never sit in memory together.
        meta = inputs.read_options.meta if inputs.read_options is not None else []  # --meta columns
        ctx.write_stream(
            UNCUT, piece_schema(meta),
            piece_batches(iter_pieces(inputs.transcripts_iter(ctx.log), stats=stats), meta),
            empty_error="no pieces to work on: the input holds no user, thought or response text")
        report = inputs.report
        notes = report.notes()
        if stats.empty_dropped:  # as `featdisco split` says it: a null reply is no piece, and is counted
            notes.insert(0, "empty pieces dropped: " + ", ".join(
                f"{k} {n:,}" for k, n in sorted(stats.empty_dropped.items())))
        if stats.redacted_blocks:
            notes.append(f"redacted reasoning blocks: {stats.redacted_blocks:,} "
                         f"({stats.redacted_only_turns:,} turns had only redacted reasoning)")
        counts = {"transcripts": stats.transcripts, **stats.by_kind(),
                  "skipped_records": sum(report.bad.values()), "skipped_files": len(report.skipped_files),
                  "ambiguous_think": report.ambiguous_think,
                  "empty_dropped": sum(stats.empty_dropped.values()), "redacted_blocks": stats.redacted_blocks,
                  "shared_tree_turns": stats.shared_pieces,  # split once for several tree paths
                  "notes": notes}  # shown by the run summary and status: a skip is never silent
        return StageResult(counts)


@dataclass(frozen=True, slots=True)
class SplitConfig(StageConfig):
    """What shapes ``pieces.parquet``: longer pieces are cut to ``max_chars`` (None: not cut)."""

    max_chars: int | None = None


def cut_text(text: str, chars: int, max_chars: int) -> str:
    """A piece cut as :func:`featdisco.transcripts.split.split_transcript` cuts it."""
    return f"{text[:max_chars]}\n[… truncated {chars - max_chars} characters]"


def cut_batches(batches: Iterable[pa.RecordBatch], max_chars: int | None,
                counts: dict[str, int] | None = None) -> Iterator[pa.RecordBatch]:
    """``batches`` of uncut pieces with every text longer than ``max_chars`` cut (marked
    ``truncated``); a piece already cut when read is left as it is."""
    for batch in batches:
        if max_chars is None or "text" not in batch.schema.names:
            yield batch
            continue
        texts = batch.column("text").to_pylist()
        has_flags = "truncated" in batch.schema.names
        flags = batch.column("truncated").to_pylist() if has_flags else [False] * len(texts)
        chars = batch.column("chars").to_pylist() if "chars" in batch.schema.names else [len(t) for t in texts]
        for i, text in enumerate(texts):
            if not flags[i] and text is not None and len(text) > max_chars:
                texts[i] = cut_text(text, chars[i] if chars[i] is not None else len(text), max_chars)
                flags[i] = True
                if counts is not None:
                    counts["truncated"] = counts.get("truncated", 0) + 1
        i_text = batch.schema.get_field_index("text")
        batch = batch.set_column(i_text, batch.schema.field(i_text), pa.array(texts, batch.schema.field(i_text).type))
        if has_flags:
            i_flag = batch.schema.get_field_index("truncated")
            batch = batch.set_column(i_flag, batch.schema.field(i_flag), pa.array(flags, pa.bool_()))
        yield batch


class SplitStage(Stage):
    """Uncut pieces → ``pieces.parquet``, cut to the run's ``--max-chars``."""

    name = "split"
    version = 2  # 2: a stage of its own, over the stored uncut pieces
    reads = (UNCUT,)
    writes = ("pieces.parquet",)
    Config = SplitConfig

    def run(self, ctx: StageContext) -> StageResult:
        cfg: SplitConfig = ctx.config
        source, dest = ctx.path(UNCUT), ctx.output("pieces.parquet")
        if not source.exists():
            raise FeatdiscoError(f"{source} is missing: give transcript files to read")
        with pq.ParquetFile(source) as pf:
            n, schema = pf.metadata.num_rows, pf.schema_arrow
            kinds: dict[str, int] = {}
            for batch in pf.iter_batches(columns=["kind"]):
                for k in batch.column(0).to_pylist():
                    kinds[k] = kinds.get(k, 0) + 1
            counts: dict[str, int] = {"pieces": n, **kinds, "truncated": 0}  # and per piece kind
            if cfg.max_chars is None:  # nothing to cut: the same bytes (a hard link costs no space)
                _link_or_copy(source, dest)
            else:
                ctx.write_stream("pieces.parquet", schema,
                                 cut_batches(pf.iter_batches(batch_size=split_module.BATCH_ROWS),
                                             cfg.max_chars, counts))
        if cfg.max_chars is not None:
            ctx.log(f"split: {counts['truncated']:,} of {n:,} pieces cut to {cfg.max_chars:,} characters")
        return StageResult(counts)


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
