"""The notebook-facing entry points, kept apart from the CLI so neither imports the other."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from featdisco.transcripts.model import Transcript
from featdisco.transcripts.read import ReadReport, read_transcripts
from featdisco.transcripts.split import SplitStats, iter_pieces, pieces_to_table


def split(
    source: str | Path | Iterable[str | Path] | Iterable[Transcript],
    *,
    max_chars: int | None = None,
    meta: list[str] | None = None,
    stats: SplitStats | None = None,
    report: ReadReport | None = None,
    **read_options: Any,
) -> pa.Table:
    """Pieces of every transcript as an Arrow table (``.to_pandas()``, ``polars.from_arrow``).

    ``source`` is a path, a list of paths, or transcripts from :func:`read_transcripts`;
    ``read_options`` are passed to :func:`read_transcripts` (``format``, ``mapping``, ...).
    """
    if isinstance(source, str | Path):
        transcripts: Iterable[Transcript] = read_transcripts(source, report=report, meta=meta or [],
                                                             **read_options)
    else:
        items = list(source)
        if items and all(isinstance(i, Transcript) for i in items):
            transcripts = items  # type: ignore[assignment]
        else:
            transcripts = read_transcripts(items, report=report, meta=meta or [],  # type: ignore[arg-type]
                                           **read_options)
    return pieces_to_table(iter_pieces(transcripts, max_chars=max_chars, stats=stats), meta)
