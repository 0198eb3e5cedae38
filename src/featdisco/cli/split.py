"""``featdisco split``: read, split, write Parquet, and say what was found."""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table

from featdisco.cli.common import console, err_console
from featdisco.transcripts.read import ReadOptions, ReadReport, read_transcripts
from featdisco.transcripts.split import SplitStats, iter_pieces, write_pieces


def run_split(*, inputs: list[Path], output: Path, options: ReadOptions, max_chars: int | None,
              show_stats: bool, quiet: bool) -> None:
    meta_fields = options.meta
    report = ReadReport()
    stats = SplitStats()

    def log(msg: str) -> None:
        if not quiet:
            err_console.print(msg, markup=False, highlight=False)

    start = time.perf_counter()
    transcripts = read_transcripts(inputs, options, report=report, log=log)
    rows = write_pieces(iter_pieces(transcripts, max_chars=max_chars, stats=stats), output,
                        meta_columns=meta_fields)
    elapsed = time.perf_counter() - start
    if quiet:
        return
    kinds = stats.by_kind()
    console.print(
        f"wrote {rows:,} pieces (user {kinds.get('user', 0):,}, thought {kinds.get('thought', 0):,}, "
        f"response {kinds.get('response', 0):,}) from {stats.transcripts:,} transcripts "
        f"to {output} in {elapsed:.1f}s"
    )
    notes = []
    if stats.empty_dropped:
        notes.append("empty pieces dropped: " + ", ".join(
            f"{k} {n:,}" for k, n in sorted(stats.empty_dropped.items())))
    if stats.redacted_blocks:
        notes.append(f"redacted reasoning blocks: {stats.redacted_blocks:,} "
                     f"({stats.redacted_only_turns:,} turns had only redacted reasoning)")
    if stats.truncated:
        notes.append(f"truncated to {max_chars:,} characters: {stats.truncated:,} pieces")
    if stats.shared_pieces:
        notes.append(f"turns shared by paths of a conversation tree, split once: {stats.shared_pieces:,}")
    if report.duplicate_ids:
        notes.append(f"duplicate transcript ids made unique with #N: {report.duplicate_ids:,}")
    bad = report.bad
    if bad:
        notes.append("skipped bad records: " + ", ".join(f"{r} {n:,}" for r, n in sorted(bad.items())))
    for note in notes:
        console.print(f"  {note}")
    if show_stats:
        table = Table(title="pieces by model and kind")
        table.add_column("model")
        for kind in ("user", "thought", "response"):
            table.add_column(kind, justify="right")
        models = sorted({m for (_k, m) in stats.pieces})
        for m in models:
            table.add_row(m or "(unknown)", *(f"{stats.pieces.get((k, m), 0):,}"
                                              for k in ("user", "thought", "response")))
        table.add_row("[bold]total[/bold]", *(f"{kinds.get(k, 0):,}" for k in ("user", "thought", "response")))
        console.print(table)
        ftable = Table(title="files")
        ftable.add_column("file", overflow="fold")
        for col in ("format", "records", "transcripts", "skipped"):
            ftable.add_column(col, justify="left" if col == "format" else "right")
        for f in report.files:
            ftable.add_row(f.path, f.format + ("" if f.detected else " (forced)"), f"{f.records:,}",
                           f"{f.transcripts:,}", f"{sum(f.bad.values()):,}")
        console.print(ftable)
