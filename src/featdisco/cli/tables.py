"""The one table printer every command uses: a rich table for people, or ``--json`` (one JSON
object per row, keyed by the same column names as the command's Parquet output) and ``--csv``
for programs.

Why one function: each command used to build its own rich table squeezed into 80 columns,
so ``featdisco compare … | cat`` folded labels four letters a column and nothing could be
parsed. Here a table written to a pipe or file keeps its natural width, and the machine
formats print every column of the rows (all rows unless ``--top`` is given).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from featdisco.cli.common import console, err_console
from featdisco.errors import FeatdiscoError

JsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print the rows as JSON lines: one object per row, keyed by the column names of the "
    "Parquet output (e.g. label); other messages go to stderr.")]
CsvOpt = Annotated[bool, typer.Option(
    "--csv", help="Print the rows as CSV with a header of the Parquet column names; lists are JSON.")]

WIDE = 100_000  # "no limit" for rich when the output is not a terminal
CELL_WIDTH = 40  # widest column on a terminal; text folds within it


ID_COLUMNS = ("cluster_id", "cluster_a", "cluster_b")  # rows about a hidden cluster are left out


@dataclass(frozen=True, slots=True)
class Output:
    """How a command prints its results: ``table`` (default), ``json`` or ``csv``; rows about
    the clusters in ``hidden`` (private, or from too few transcripts) are left out."""

    format: str = "table"
    hidden: frozenset[int] = frozenset()

    @classmethod
    def of(cls, json_: bool = False, csv_: bool = False) -> Output:
        if json_ and csv_:
            raise FeatdiscoError("--json and --csv cannot be combined; pick one")
        return cls("json" if json_ else "csv" if csv_ else "table")

    @property
    def machine(self) -> bool:
        return self.format != "table"

    def limit(self, top: int | None, default: int) -> int | None:
        """Rows to print: ``--top`` when given, else ``default`` in a table and all in JSON/CSV."""
        return top if top is not None else None if self.machine else default

    def say(self, message: str) -> None:
        """A line for people: stdout with tables, stderr when stdout carries JSON or CSV."""
        (err_console if self.machine else console).print(message, markup=False, highlight=False)

    def rows(self, data: pd.DataFrame | pa.Table | Sequence[Mapping[str, object]], columns: Sequence[str],
             title: str | None = None, top: int | None = None, *, primary: bool = True) -> None:
        """Print ``data``: as a table of ``columns`` (at most ``top`` rows), or, in a machine
        format and when ``primary``, every column of the first ``top`` rows (all rows when
        ``top`` is None). Secondary tables are left out of machine output, so that it holds
        one kind of row."""
        df = self.visible(to_frame(data))
        if self.machine:
            if primary:
                write_rows(df if top is None else df.head(top), self.format)
            return
        print_table(df, columns, title, top)


    def visible(self, df: pd.DataFrame) -> pd.DataFrame:
        if not self.hidden or df.empty:
            return df
        keep = np.ones(len(df), dtype=bool)
        for col in ID_COLUMNS:
            if col in df.columns:
                keep &= ~df[col].isin(self.hidden).to_numpy()
        return df[keep]


def to_frame(data: pd.DataFrame | pa.Table | Sequence[Mapping[str, object]]) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    rows = data.to_pylist() if isinstance(data, pa.Table) else list(data)
    names = data.column_names if isinstance(data, pa.Table) else list(dict.fromkeys(k for r in rows for k in r))
    # object columns: a missing cell stays None instead of turning a column of counts into floats
    return pd.DataFrame({c: pd.Series([r.get(c) for r in rows], dtype=object) for c in names})


def plain(v: Any) -> Any:
    """A cell as a JSON value: numpy scalars and arrays unwrapped, NaN as null."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.ndarray):
        return [plain(x) for x in v.tolist()]
    if isinstance(v, list | tuple):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, datetime | date | pd.Timestamp):
        return v.isoformat()
    if v is pd.NaT or v is pd.NA:
        return None
    return v


def records(df: pd.DataFrame) -> Iterable[dict[str, object]]:
    """Each row as JSON values (:func:`plain`)."""
    cols = [str(c) for c in df.columns]
    for row in df.itertuples(index=False, name=None):
        yield {c: plain(v) for c, v in zip(cols, row, strict=True)}


def write_rows(df: pd.DataFrame, fmt: str) -> None:
    out = sys.stdout
    if fmt == "json":
        for rec in records(df):  # JSON has no infinity: an infinite rate ratio is null, as in pandas
            rec = {k: None if isinstance(v, float) and math.isinf(v) else v for k, v in rec.items()}
            out.write(json.dumps(rec, ensure_ascii=False, allow_nan=False, default=str) + "\n")
    else:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([str(c) for c in df.columns])
        for rec in records(df):
            writer.writerow(["" if v is None else json.dumps(v, ensure_ascii=False)
                             if isinstance(v, list | dict) else v for v in rec.values()])
    out.flush()


def cell(v: Any) -> str:
    """A cell for people: floats to three places, integers as integers, lists shortened."""
    v = plain(v)
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.3f}"
    if isinstance(v, list):
        return "; ".join(str(x) for x in v[:3]) + (f"; … ({len(v)})" if len(v) > 3 else "")
    return str(v)


def print_table(df: pd.DataFrame, columns: Sequence[str], title: str | None, top: int | None) -> None:
    """A rich table; on a terminal columns fold at 40 characters, elsewhere nothing is folded."""
    terminal = console.is_terminal
    cols = [c for c in columns if c in df.columns]
    table = Table(title=title, show_edge=False)
    for c in cols:
        numeric = all(isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_)
                      for v in df[c].head(1000) if v is not None and v is not pd.NA)
        table.add_column(c, overflow="fold", max_width=CELL_WIDTH if terminal else None,
                         justify="right" if numeric else "left", no_wrap=not terminal)
    shown = df if top is None else df.head(top)
    for row in shown[cols].itertuples(index=False, name=None):
        table.add_row(*(Text(cell(v)) for v in row))  # Text: labels are never read as markup
    # a console's print cannot widen past its own width, so a pipe gets a console as wide as needed
    if terminal:
        console.print(table)
        return
    wide = Console(width=WIDE, highlight=False, color_system=None)
    with wide.capture() as captured:
        wide.print(table, crop=False)
    console.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
