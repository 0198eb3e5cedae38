"""Where each stored analysis came from, so that a view can tell current from stale.

Every ``analysis_*.parquet`` (and every scan) is recorded in the manifest's ``analyses``
section with the fingerprint of the clusters it was computed on (the content hash of the
final cluster artefacts, ``assignments.parquet`` and ``clusters.parquet``), its arguments
and the command that computes it again. After an edit or a rerun changes the clusters the
fingerprint no longer matches, so ``featdisco status --json`` and the report say the
analysis is stale and how to refresh it. Runs of one command with other arguments get their
own name (:func:`analysis_name`) instead of overwriting each other.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import pandas as pd
import pyarrow as pa

from featdisco.rundir import RunDir, file_hash, fingerprint, open_run

CLUSTER_ARTEFACTS = ("assignments.parquet", "clusters.parquet")
SECTION = "analyses"
_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


def clusters_fingerprint(run: RunDir) -> str | None:
    """The content hash of the run's final cluster artefacts (for a transform's output, its
    assignments and the fitted dictionary's clusters); None before there are any."""
    parts: dict[str, str | None] = {name: run.artefact_hash(name) for name in CLUSTER_ARTEFACTS}
    if parts["clusters.parquet"] is None and (fitted := run.manifest.get("fitted_run")):
        path = Path(str(fitted)) / "clusters.parquet"
        parts["clusters.parquet"] = file_hash(path) if path.exists() else None
    if not any(parts.values()):
        return None
    return fingerprint(parts)


def pieces_fingerprint(run: RunDir) -> str | None:
    """The content hash of the run's pieces (what a question scan depends on)."""
    h = run.artefact_hash("pieces.parquet")
    return None if h is None else fingerprint({"pieces.parquet": h})


def safe_name(text: str) -> str:
    """``text`` as a part of a file name: letters, digits and ``-`` only."""
    return _UNSAFE.sub("-", text).strip("-") or "x"


def analysis_name(base: str, args: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """``base`` when ``args`` are the defaults, else ``base`` and the arguments that differ
    (``compare_model`` with ``--unit transcript`` → ``compare_model_unit-transcript``), so
    that one command run with other arguments keeps each result under its own name."""
    parts = []
    for key, value in args.items():
        if key in defaults and value == defaults[key]:
            continue
        if isinstance(value, list | tuple):
            value = "+".join(map(str, value))
        parts.append(f"{_UNSAFE.sub('-', str(key))}-{_UNSAFE.sub('-', str(value)).strip('-')}")
    suffix = "_".join(parts)
    if len(suffix) > 60:
        suffix = fingerprint(dict(args))[:10]
    return f"{base}_{suffix}" if suffix else base


def command_line(command: str, run_dir: str | Path, args: Mapping[str, Any]) -> str:
    """The shell command that computes an analysis again: ``True`` is a bare flag, ``None``
    and ``False`` are left out, lists are comma-joined; ``_``-prefixed keys are positional."""
    words = ["featdisco", *command.split(), str(run_dir)]
    for key, value in args.items():
        if value is None or value is False:
            continue
        if key.startswith("_"):
            words.append(str(value))
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        else:
            words += [flag, ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)]
    return shlex.join(words)


def write_analysis(run_dir: str | Path, name: str, frames: Mapping[str, pd.DataFrame | pa.Table], *,
                   command: str, args: Mapping[str, Any], depends: str = "clusters") -> list[Path]:
    """Write each frame as ``analysis_<file>.parquet`` (the first under ``name`` itself, e.g.
    ``{"": df, "_rates": rates}``) under the run's lock, and record them in the manifest
    with the clusters' fingerprint, ``args`` and the command that refreshes them."""
    with open_run(run_dir, write=True) as run:
        paths = []
        for suffix, frame in frames.items():
            table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
            paths.append(run.write_table(f"analysis_{name}{suffix}.parquet", table))
        record(run, name, [p.name for p in paths], command=command, args=args, depends=depends)
    return paths


def record(run: RunDir, name: str, files: Sequence[str], *, command: str, args: Mapping[str, Any],
           depends: str = "clusters") -> None:
    """The manifest entry of one stored result (the caller holds the run's lock)."""
    fp = clusters_fingerprint(run) if depends == "clusters" else pieces_fingerprint(run)
    run.merge(SECTION, {name: {"files": list(files), "depends": depends, "fingerprint": fp,
                               "args": {k: v for k, v in args.items() if not k.startswith("_")},
                               "command": command_line(command, run.path, args),
                               "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}})


class AnalysisStatus(TypedDict):
    """One stored analysis as ``featdisco status`` and the report tell it."""

    name: str
    files: list[str]
    current: bool  # computed on the clusters (or pieces) the run has now
    depends: str  # clusters or pieces
    args: dict[str, object]  # as recorded (JSON)
    command: str | None  # what refreshes it
    written: str | None
    note: NotRequired[str]


def analyses_status(run_dir: str | Path) -> list[AnalysisStatus]:
    """Every stored analysis of the run: ``name``, ``files``, ``current`` (computed on the
    clusters, or for a question scan the pieces, the run has now), ``args``, ``command``
    (what refreshes it) and ``written``. An ``analysis_*.parquet`` written before
    provenance was kept is listed as not current, with no command."""
    run = RunDir(run_dir)
    now = {"clusters": clusters_fingerprint(run), "pieces": pieces_fingerprint(run)}
    entries = run.manifest.get(SECTION) or {}
    out: list[AnalysisStatus] = []
    claimed: set[str] = set()
    for name, e in sorted(entries.items()):
        files = [f for f in e.get("files") or [] if run.file(f).exists()]
        if not files:
            continue
        claimed.update(files)
        fp = e.get("fingerprint")
        out.append({"name": name, "files": files,
                    "current": fp is not None and fp == now.get(e.get("depends", "clusters")),
                    "depends": e.get("depends", "clusters"), "args": e.get("args") or {},
                    "command": e.get("command"), "written": e.get("written")})
    for path in sorted(run.path.glob("analysis_*.parquet")):
        if path.name not in claimed:
            out.append({"name": path.stem.removeprefix("analysis_"), "files": [path.name], "current": False,
                        "depends": "clusters", "args": {}, "command": None, "written": None,
                        "note": "written before provenance was kept: rerun its command"})
    return out


def stale_files(run_dir: str | Path) -> dict[str, AnalysisStatus]:
    """``analysis_*.parquet`` file name → its status entry, for the files that are not current."""
    return {f: a for a in analyses_status(run_dir) if not a["current"] for f in a["files"]}
