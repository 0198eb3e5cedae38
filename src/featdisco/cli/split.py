"""``featdisco split``: read, split, write Parquet, and say what was found."""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table

from featdisco.cli.common import console, err_console
from featdisco.transcripts.read import ReadOptions, ReadReport, read_transcripts
from featdisco.transcripts.split import SplitStats, iter_pieces, write_pieces


def file_notes(report: ReadReport) -> list[str]:
    """Files skipped whole and files cut short, one line each: never a lone record count."""
    lines: list[str] = []
    if report.judge_files:
        lines.append(f"  skipped {len(report.judge_files):,} judge files (reference answers and judgments "
                     "are not model transcripts; name a file to read it):")
        lines += [f"    {f}" for f in report.judge_files]
    if report.skipped_files:
        lines.append(f"  skipped files: {len(report.skipped_files):,}")
        lines += [f"    {f.path}: {f.error}" for f in report.skipped_files]
    for f in report.cut_short:
        lost = (f"about {f.lost:,} records lost (estimated from the bytes left)" if f.lost
                else "the file ends there, so how many records followed is unknown")
        lines.append(f"  {f.path}: cut short at {f.cut_short}: {f.records:,} records kept, {lost}")
    return lines


def run_split(*, inputs: list[Path], output: Path, format: str | None, mapping: str | None,
              model: str | None, meta: str | None, questions: Path | None, max_chars: int | None,
              skip_bad: bool, max_record_bytes: int, limit: int | None, show_stats: bool,
              quiet: bool) -> None:
    meta_fields = [m.strip() for m in (meta or "").split(",") if m.strip()]
    options = ReadOptions(format=format, mapping=mapping or {}, model=model, meta=meta_fields,
                          skip_bad=skip_bad, questions=[questions] if questions else [],
                          max_record_bytes=max_record_bytes, limit=limit)
    report = ReadReport()
    stats = SplitStats()

    def log(msg: str) -> None:
        if not quiet:
            err_console.print(msg, markup=False, highlight=False)

    start = time.perf_counter()
    transcripts = read_transcripts(inputs, options, report=report, log=log)
    rows = write_pieces(iter_pieces(transcripts, max_chars=max_chars, stats=stats), output,
                        meta_columns=meta_fields, empty_error=report.all_skipped_message)
    elapsed = time.perf_counter() - start
    if quiet:
        for warning in report.warnings:  # logged above unless -q: an empty column is easy to miss
            err_console.print(f"featdisco: warning: {warning}", markup=False, highlight=False)
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
    if report.ambiguous_think:
        notes.append(f"ambiguous think tags (kept as response): {report.ambiguous_think:,}")
    if report.duplicate_ids:
        notes.append(f"duplicate transcript ids made unique with #N: {report.duplicate_ids:,}")
    bad = report.bad
    if bad:
        notes.append("skipped bad records: " + ", ".join(f"{r} {n:,}" for r, n in sorted(bad.items())))
    for note in notes:
        console.print(f"  {note}")
    for line in file_notes(report):
        console.print(line, markup=False, highlight=False)
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
