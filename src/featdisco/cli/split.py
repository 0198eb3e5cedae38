"""``featdisco split``: read, split, write Parquet, and say what was found."""

from __future__ import annotations

import time
from pathlib import Path

from featdisco.cli.common import err_console
from featdisco.cli.tables import Output
from featdisco.errors import FeatdiscoError
from featdisco.transcripts.model import PIECE_KINDS
from featdisco.transcripts.read import ReadOptions, ReadReport, read_transcripts
from featdisco.transcripts.split import SplitStats, iter_pieces, write_pieces


def file_notes(report: ReadReport) -> list[str]:
    """Files skipped whole and files cut short (see :meth:`ReadReport.file_notes`)."""
    return report.file_notes()


def run_split(*, inputs: list[Path], output: Path, options: ReadOptions, max_chars: int | None,
              show_stats: bool, quiet: bool, out: Output | None = None) -> None:
    """Split ``inputs`` into ``output``; with ``--json``/``--csv`` the pieces per model and
    kind are printed as rows."""
    out = out or Output()
    suffix = output.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ""):
        raise FeatdiscoError(f"-o {output}: split writes Parquet (.parquet) or CSV (.csv), not {suffix}")
    meta_fields = options.meta
    report = ReadReport()
    stats = SplitStats()

    def log(msg: str) -> None:
        if not quiet:
            err_console.print(msg, markup=False, highlight=False)

    start = time.perf_counter()
    transcripts = read_transcripts(inputs, options, report=report, log=log)
    target = output.with_name(output.name + ".parquet.tmp") if suffix == ".csv" else output
    try:
        rows = write_pieces(iter_pieces(transcripts, max_chars=max_chars, stats=stats), target,
                            meta_columns=meta_fields, empty_error=report.all_skipped_message)
        if suffix == ".csv":  # what the name says: CSV, not Parquet under a CSV name
            parquet_to_csv(target, output)
    finally:
        if target != output:
            target.unlink(missing_ok=True)
    elapsed = time.perf_counter() - start
    if quiet and not out.machine:
        for warning in report.warnings:  # logged above unless -q: an empty column is easy to miss
            err_console.print(f"featdisco: warning: {warning}", markup=False, highlight=False)
        return
    kinds = stats.by_kind()
    out.say(
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
    if report.ambiguous_think:
        notes.append(f"ambiguous think tags (kept as response): {report.ambiguous_think:,}")
    if report.duplicate_ids:
        notes.append(f"duplicate transcript ids made unique with #N: {report.duplicate_ids:,}")
    bad = report.bad
    if bad:
        notes.append("skipped bad records: " + ", ".join(f"{r} {n:,}" for r, n in sorted(bad.items())))
    for note in notes:
        out.say(f"  {note}")
    for line in file_notes(report):
        out.say(line)
    if show_stats or out.machine:
        models = sorted({m for (_k, m) in stats.pieces})
        by_model: list[dict[str, object]] = [
            {"model": m or "(unknown)", **{k: stats.pieces.get((k, m), 0) for k in PIECE_KINDS}} for m in models]
        total: list[dict[str, object]] = [{"model": "total", **{k: kinds.get(k, 0) for k in PIECE_KINDS}}]
        out.rows(by_model if out.machine else by_model + total, ["model", *PIECE_KINDS],
                 "pieces by model and kind")
        out.rows([{"file": f.path, "format": f.format + ("" if f.detected else " (forced)"), "records": f.records,
                   "transcripts": f.transcripts, "skipped": sum(f.bad.values())} for f in report.files],
                 ["file", "format", "records", "transcripts", "skipped"], "files", primary=False)


def parquet_to_csv(source: Path, dest: Path) -> None:
    """Stream a Parquet file into CSV with a header (written beside, then moved in)."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    tmp = dest.with_name(dest.name + ".tmp")
    with pq.ParquetFile(source) as pf, pcsv.CSVWriter(tmp, pf.schema_arrow) as writer:
        for batch in pf.iter_batches(batch_size=65_536):
            writer.write_batch(batch)
    tmp.replace(dest)
