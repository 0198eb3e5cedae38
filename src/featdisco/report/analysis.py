"""Analysis outputs (``analysis_*.parquet``, written by ``featdisco`` analyses) for the
report: each becomes one shard of columns, capped in rows, that the page shows as a table
and, when it recognises the columns, as a plot (comparison bars with intervals, probe F1
distribution, hierarchy tree). Absent files simply mean absent views.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypedDict

import pyarrow as pa
import pyarrow.parquet as pq

from featdisco.report.shards import ShardWriter

MAX_ROWS = 5000  # rows per analysis shown in the page (the file on disk keeps them all)


def _clean(values: list[Any]) -> list[Any]:
    """JSON-safe cells: NaN/inf become null, lists of scalars stay lists, anything else
    nested becomes text."""
    out: list[Any] = []
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            out.append(None)
        elif isinstance(v, bool | int | float | str) or v is None:
            out.append(v)
        elif isinstance(v, list) and all(isinstance(x, bool | int | float | str) for x in v):
            out.append(_clean(v))  # e.g. the user clusters that drive a probe
        else:
            out.append(str(v))
    return out


class AnalysisEntry(TypedDict):
    """An analysis as the overview lists it."""

    name: str
    rows: int
    columns: list[str]
    cut: bool  # more rows than the page shows
    stale: bool  # computed on other clusters than the run has now
    refresh: str | None  # the command that refreshes it


def write_analyses(run_dir: Path, writer: ShardWriter) -> list[AnalysisEntry]:
    """Write ``a/<name>.js`` for every analysis file; returns their summaries for the
    overview (name, rows, columns, whether rows were cut). Label columns show each
    cluster's label now (a rename leaves a membership analysis current)."""
    from featdisco.analysis.provenance import LabelsNow, files_status

    status = files_status(run_dir)
    labels = LabelsNow(run_dir)
    found: list[AnalysisEntry] = []
    for path in sorted(run_dir.glob("analysis_*.parquet")):
        name = path.stem.removeprefix("analysis_")
        if not name.replace("_", "").replace("-", "").isalnum():
            continue  # shard names come from file names; keep them plain
        try:
            pf = pq.ParquetFile(path)
        except (OSError, pa.ArrowInvalid):
            continue  # an analysis being written right now, or a broken file: skip it
        rows = pf.metadata.num_rows
        table = labels.apply(pf.read().slice(0, MAX_ROWS) if rows else pf.schema_arrow.empty_table(),
                             status.get(path.name))
        columns = {c: _clean(table.column(c).to_pylist()) for c in table.column_names}
        meta = {k.decode(errors="replace"): v.decode(errors="replace")
                for k, v in (pf.schema_arrow.metadata or {}).items() if not k.startswith(b"ARROW") and k != b"pandas"}
        old = status.get(path.name)
        old = old if old is not None and not old["current"] else None  # computed on other clusters than now
        refresh = (old.get("command") or "rerun the command that wrote it") if old else None
        writer.write(f"a/{name}.js", f"a/{name}", {"name": name, "rows": rows, "columns": columns,
                                                   "meta": meta, "stale": old is not None, "refresh": refresh})
        found.append({"name": name, "rows": rows, "columns": table.column_names,
                      "cut": rows > MAX_ROWS, "stale": old is not None, "refresh": refresh})
    return found
