"""Which clusters the printed tables, ``--json`` and the report leave out by default.

Clusters a researcher hid (``featdisco edit RUN hide ID``: the ``hidden`` column) are left out
always: hiding is a decision about the dictionary, not a privacy default. Two rules more,
both lifted by ``--show-private`` (the report's "Show private clusters"):
clusters the rater flagged private (with a reason naming what is private, see
``stages/rate.py``), and — the aggregation rule Clio applies to deployment logs — clusters
drawn from fewer than ``--min-transcripts`` distinct transcripts, so that no cluster can
single out one user's conversation. ``min_transcripts`` given to ``featdisco run`` is kept in
the run's config and is the default of every later command on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featdisco.analysis.activations import load_activations, recounted_clusters
from featdisco.errors import FeatdiscoError
from featdisco.rundir import RunDir


@dataclass(frozen=True, slots=True)
class Visibility:
    hidden: frozenset[int]
    rare: frozenset[int]  # from fewer than ``min_transcripts`` transcripts
    private: frozenset[int]
    min_transcripts: int
    shown: bool  # --show-private: nothing hidden, the counts still said

    def note(self, how: str = "--show-private") -> str | None:
        """One line saying what is hidden (or would be), and how to see it (``how``)."""
        parts = []
        if self.private:
            parts.append(f"{len(self.private):,} flagged private")
        if self.rare and self.min_transcripts == 1:  # not "fewer than 1": absent (a transform's new data)
            parts.append(f"{len(self.rare):,} found in no transcript")
        elif self.rare:
            parts.append(f"{len(self.rare):,} drawn from fewer than {self.min_transcripts:,} transcripts")
        if not parts:
            return None
        what = " and ".join(parts)
        return (f"clusters {what}: shown ({how})" if self.shown
                else f"clusters hidden: {what} ({how} shows them)")


NOTHING_HIDDEN = Visibility(frozenset(), frozenset(), frozenset(), 1, False)


def run_min_transcripts(run_dir: str | Path) -> int:
    """The run's ``min_transcripts`` (``featdisco run --min-transcripts``), else 1."""
    run = RunDir(run_dir)
    value = ((run.manifest.get("config") or {}).get("min_transcripts") if run.exists else None) or 1
    return int(value)


def visibility(run_dir: str | Path, *, min_transcripts: int | None = None,
               show_private: bool = False) -> Visibility:
    """What a command on ``run_dir`` hides (``min_transcripts`` None: the run's own)."""
    n = run_min_transcripts(run_dir) if min_transcripts is None else min_transcripts
    if n < 1:
        raise FeatdiscoError(f"--min-transcripts must be at least 1, got {n}")
    table = recounted_clusters(run_dir)
    ids = np.asarray(table.column("cluster_id").to_pylist(), dtype=np.int64)
    if "transcripts" in table.column_names:
        counts = np.asarray(table.column("transcripts").to_pylist(), dtype=np.int64)
    else:  # a table without counts: count the transcripts now
        act = load_activations(run_dir)
        counts = np.asarray(act.transcript_matrix.getnnz(axis=0))[ids]
    rare = frozenset(int(i) for i in ids[counts < n])
    private = frozenset(int(i) for i, p in zip(ids, table.column("private").to_pylist(), strict=True) if p) \
        if "private" in table.column_names else frozenset()
    curated = frozenset(int(i) for i, h in zip(ids, table.column("hidden").to_pylist(), strict=True) if h) \
        if "hidden" in table.column_names else frozenset()
    hidden = curated | (frozenset() if show_private else rare | private)
    return Visibility(hidden, rare, private, n, show_private)
