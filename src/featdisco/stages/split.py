"""The split stage: transcripts from outside the run → ``pieces.parquet``.

It is the pipeline's source: its inputs are files (or transcripts) given to this
invocation, so it runs whenever it is given them and its output's content hash stands for
them downstream. Reading and splitting live in :mod:`featdisco.transcripts`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from featdisco.stages.base import Stage, StageContext, StageResult
from featdisco.transcripts.model import Transcript
from featdisco.transcripts.read import ReadOptions, ReadReport, read_transcripts
from featdisco.transcripts.split import SplitStats, iter_pieces, piece_batches, piece_schema


@dataclass(slots=True)
class SplitInputs:
    """What the split stage reads: paths (with reading options) or transcripts."""

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


class SplitStage(Stage):
    name = "split"
    version = 1
    writes = ("pieces.parquet",)
    config = ("max_chars",)
    source = True

    def run(self, ctx: StageContext) -> StageResult:
        inputs: SplitInputs = ctx.inputs
        stats = SplitStats()
        # Streamed to disk a batch at a time: the pieces of a big run (all their text)
        # never sit in memory together.
        meta = inputs.read_options.meta if inputs.read_options is not None else []  # --meta columns
        ctx.write_stream(
            "pieces.parquet", piece_schema(meta),
            piece_batches(iter_pieces(inputs.transcripts_iter(ctx.log), max_chars=ctx.config.max_chars,
                                      stats=stats), meta),
            empty_error="no pieces to work on: the input holds no user, thought or response text")
        report = inputs.report
        counts = {"transcripts": stats.transcripts, **stats.by_kind(),
                  "skipped_records": sum(report.bad.values()), "skipped_files": len(report.skipped_files),
                  "ambiguous_think": report.ambiguous_think,
                  "shared_tree_turns": stats.shared_pieces,  # split once for several tree paths
                  "notes": report.notes()}  # shown by the run summary and status: a skip is never silent
        return StageResult(counts)
