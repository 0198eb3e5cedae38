"""``featdisco report DIR``: turn a fitted run directory into ``DIR/report/``.

The page (index.html, charts.js, app.js, app.css, copied from ``static/``) loads ``data/overview.js``
first, a few kilobytes whatever the run's size; the cluster lists, the cluster and
transcript pages and the search index are shards loaded when a view needs them.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from featdisco.analysis.activations import fitted_run, recounted_clusters
from featdisco.analysis.provenance import dictionary_changed
from featdisco.analysis.visibility import Visibility, run_min_transcripts
from featdisco.curation import report_summary
from featdisco.errors import FeatdiscoError
from featdisco.report import tables
from featdisco.report.analysis import AnalysisEntry, write_analyses
from featdisco.report.evidence import write_evidence
from featdisco.report.map import MAP_POINTS, map_layout
from featdisco.report.search import transcript_postings, write_search
from featdisco.report.shards import ShardWriter
from featdisco.rundir import RunDir
from featdisco.runsummary import headline, run_totals, stage_cells

REQUIRED = ("manifest.json", "pieces.parquet", "features.parquet", "assignments.parquet")
STATIC = ("index.html", "charts.js", "labels.js", "map.js", "app.js", "app.css", "map.css")
KINDS = ("user", "thought", "response")
TOP_N = 8  # clusters of each kind on the overview


@dataclass(slots=True)
class ReportStats:
    """What a build wrote: where, how much, and how long each step took."""

    path: Path
    files: int = 0
    bytes: int = 0
    first_view_bytes: int = 0  # index.html + charts.js + app.js + app.css + overview.js
    clusters: int = 0
    transcripts: int = 0
    pieces: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


class ClusterRow(TypedDict, total=False):
    """A cluster as the report reads it: a row of the run's cluster table (more columns than
    these), its place on the map, and the page's hide flags (set by :func:`_hide`)."""

    cluster_id: int
    kind: str
    label: str | None
    description: str | None
    size: int
    pieces: int
    transcripts: int
    interest: float | None
    private: bool  # flagged private by the rater; after _hide: hidden until the page's toggle
    hidden: bool  # hidden by `featdisco edit`
    x: float | None
    y: float | None
    flagged: bool
    rare: bool


def _hist(values: np.ndarray, bins: np.ndarray) -> dict[str, list[float]]:
    counts, edges = np.histogram(values, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _size_bins(sizes: np.ndarray) -> np.ndarray:
    top = max(float(sizes.max()) if len(sizes) else 1.0, 1.0)
    return np.unique(np.round(np.logspace(0, np.log10(top + 1), 16)))


class _KindSummary(TypedDict):
    """The overview's figures for one kind of piece."""

    clusters: int
    private: int  # flagged private by the rating
    rare: int  # drawn from too few transcripts
    hidden: int  # either
    features: int
    pieces: int
    sizes: dict[str, list[float]]  # histogram: edges, counts
    interest: dict[str, list[float]]
    top: list[int]  # the top clusters' ids, hidden ones left out
    top_all: list[int]


def _overview(run: Path, manifest: dict[str, Any], clusters: list[ClusterRow], n_pieces: int, n_transcripts: int,
              analyses: list[AnalysisEntry], kinds_pieces: dict[str, int], vis: Visibility) -> dict[str, Any]:
    totals = run_totals(manifest, run)
    per_kind: dict[str, _KindSummary] = {}
    for kind in KINDS:
        rows = [c for c in clusters if c["kind"] == kind]
        if not rows:
            continue
        sizes = np.asarray([c["size"] for c in rows], dtype=float)
        interest = np.asarray([c["interest"] for c in rows if c["interest"] is not None], dtype=float)
        ranked = sorted(rows, key=lambda c: (-(c["interest"] or 0), -c["size"]))
        per_kind[kind] = _KindSummary(
            clusters=len(rows), private=sum(c["flagged"] for c in rows), rare=sum(c["rare"] for c in rows),
            hidden=sum(c["private"] for c in rows),
            features=int(sizes.sum()), pieces=kinds_pieces.get(kind, 0),
            sizes=_hist(sizes, _size_bins(sizes)),
            interest=_hist(interest, np.arange(0, 101, 5)),
            # the top clusters with and without private ones, so the toggle needs no other shard
            top=[c["cluster_id"] for c in ranked if not c["private"]][:TOP_N],
            top_all=[c["cluster_id"] for c in ranked][:TOP_N],
        )
    top_ids = {i for k in per_kind.values() for i in k["top"] + k["top_all"]}
    return {
        "config": manifest.get("config", {}), "versions": manifest.get("versions", {}),
        "findings": manifest.get("findings") or [],  # `featdisco demo findings`: what the report opens on
        "created": manifest.get("created"), "updated": manifest.get("updated"),
        # the same totals and words as `featdisco status` and the run summary
        "totals": totals.as_dict(), "headline": headline(totals) + ([note] if (note := vis.note('"Show private clusters"')) else [])
        + ([f"Warning: {changed}"] if (changed := dictionary_changed(run)) else []),  # a transform's output
        "min_transcripts": vis.min_transcripts,
        "stages": [stage_cells(s) for s in totals.stages],
        "pieces": n_pieces, "transcripts": n_transcripts, "kinds": per_kind,
        "clusters": {c["cluster_id"]: _brief(c) for c in clusters if c["cluster_id"] in top_ids},
        "n_clusters": len(clusters), "analyses": analyses,
        "shards": {"t": tables.TRANSCRIPTS_PER_SHARD, "c": tables.CLUSTERS_PER_SHARD,
                   "ti": tables.DIRECTORY_PER_SHARD},
        "built": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


class _NewCluster(TypedDict, total=False):
    """A transform's candidate new cluster, with the columns its file has."""

    label: str | None
    kind: str
    size: int
    pieces: int
    examples: list[str]  # the first three
    nearest_label: str | None  # the fitted dictionary's nearest cluster


def _new_clusters(run: Path, top: int = 50) -> list[_NewCluster] | None:
    """A transform's candidate new clusters (``new_clusters.parquet``), largest first; None
    when the run is no transform output (or one made before they were found)."""
    path = run / "new_clusters.parquet"
    if not path.exists():
        return None
    table = pq.read_table(path)
    keep = [c for c in ("label", "kind", "size", "pieces", "examples", "nearest_label") if c in table.column_names]
    rows: list[_NewCluster] = table.select(keep).slice(0, top).to_pylist()
    return [{**r, "examples": (r.get("examples") or [])[:3]} for r in rows]


def _brief(c: ClusterRow) -> list[Any]:
    """A cluster in the lists and the map: [id, label, size, pieces, transcripts, interest,
    private, x, y, description] (arrays, not objects: 20k of them must load fast)."""
    return [c["cluster_id"], c["label"], c["size"], c["pieces"], c["transcripts"], c["interest"],
            bool(c["private"]), c.get("x"), c.get("y"), c.get("description")]


def _hide(clusters: list[ClusterRow], min_transcripts: int) -> Visibility:
    """Mark the clusters the page hides until "Show private clusters" is ticked: flagged
    private, or drawn from fewer than ``min_transcripts`` transcripts (``private`` is then the
    page's hide flag; ``flagged`` and ``rare`` say why)."""
    for c in clusters:
        c["flagged"] = bool(c.get("private"))
        c["rare"] = (c.get("transcripts") or 0) < min_transcripts
        c["private"] = c["flagged"] or c["rare"]
    return Visibility(frozenset(c["cluster_id"] for c in clusters if c["private"]),
                      frozenset(c["cluster_id"] for c in clusters if c["rare"]),
                      frozenset(c["cluster_id"] for c in clusters if c["flagged"]), min_transcripts, False)


def _check_finished(run: Path) -> None:
    """Refuse a folder that lacks what the report reads, naming what is missing."""
    missing = [n for n in REQUIRED if not (run / n).exists()]
    if missing:
        raise FeatdiscoError(f"{run} is not a finished run or transform output (missing "
                             f"{', '.join(missing)}): run `featdisco run` to completion first")


def _check_destination(dest: Path) -> None:
    """Refuse a folder whose ``data/`` or page files are someone else's: a build replaces the
    page files and the whole of ``data/`` there, so ``-o .`` in a project deleted its data
    folder. An earlier report (or a build of one stopped part-way) is replaced; files of other
    names are left alone."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise FeatdiscoError(f"{dest} is a file, not a folder for the report; give a new or empty folder")
    data = dest / "data"
    if (data / "overview.js").exists():
        return  # a report: rebuilt in place
    page = dest / "index.html"
    ours = page.is_file() and b"featdisco" in page.read_bytes()[:65536]
    theirs = ["data/"] if data.exists() and (not data.is_dir() or any(data.iterdir())) else []
    if not ours:
        theirs += [n for n in STATIC if (dest / n).exists()]
    if theirs:
        raise FeatdiscoError(f"{dest} holds {', '.join(theirs)}, not from a featdisco report, which a report "
                             "would replace: give a new or empty folder with -o")


def _read_manifest(run: Path) -> dict[str, Any]:
    try:
        return orjson.loads((run / "manifest.json").read_bytes())
    except orjson.JSONDecodeError as e:
        raise FeatdiscoError(f"{run}/manifest.json is not valid JSON ({e})") from None


class _Laps:
    """Seconds per build step, recorded into the stats as each step ends."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds, self.t0 = seconds, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.t0, 2)
        self.t0 = now


def _placed_clusters(clusters_t: pa.Table, positions: dict[int, tuple[float, float]],
                     ) -> tuple[list[ClusterRow], list[ClusterRow]]:
    """The clusters as rows with their map position: those listed, and those hidden by
    `featdisco edit` (listed nowhere)."""
    clusters = cast(list[ClusterRow], clusters_t.drop_columns(
        [c for c in ("examples",) if c in clusters_t.column_names]).to_pylist())
    for c in clusters:
        c["x"], c["y"] = positions.get(c["cluster_id"], (None, None))
    hidden = [c for c in clusters if c.get("hidden")]
    return [c for c in clusters if not c.get("hidden")], hidden


def _kind_pieces(run: Path) -> dict[str, int]:
    """Pieces per kind in the run."""
    kinds_pieces = dict(zip(*np.unique(
        pq.read_table(run / "pieces.parquet", columns=["kind"]).column(0).to_numpy(zero_copy_only=False),
        return_counts=True), strict=True))
    return {str(k): int(v) for k, v in kinds_pieces.items()}


def _write_kind_lists(writer: ShardWriter, clusters: list[ClusterRow]) -> None:
    """One shard per kind listing its clusters (briefly), for the cluster lists and the map."""
    for kind in KINDS:
        rows = [_brief(c) for c in clusters if c["kind"] == kind]
        if rows:
            writer.write(f"k/{kind}.js", f"k/{kind}", rows)


def _copy_static(dest: Path) -> int:
    """Copy the page (html, scripts, styles) into ``dest``; its size in bytes."""
    static = resources.files("featdisco.report") / "static"
    page_bytes = 0
    for name in STATIC:
        blob = (static / name).read_bytes()
        (dest / name).write_bytes(blob)
        page_bytes += len(blob)
    return page_bytes


def build_report(run_dir: str | Path, out: str | Path | None = None, *, search: bool = True,
                 min_transcripts: int | None = None, map_points: int = MAP_POINTS) -> ReportStats:
    """Write the report of a fitted run to ``out`` (default ``run_dir/report``); clusters from
    fewer than ``min_transcripts`` transcripts (default: the run's) are hidden like private ones;
    the map lays out at most ``map_points`` points."""
    run = Path(run_dir)
    _check_finished(run)
    dest = Path(out) if out else run / "report"
    _check_destination(dest)
    data = dest / "data"
    # built aside and swapped in whole: an interrupted or failed build keeps the last report
    # (emptying data/ first left an index.html over missing shards)
    staging = dest / f".data.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        stats = _build(run, dest, ShardWriter(staging), search=search, min_transcripts=min_transcripts,
                       map_points=map_points)
        old = dest / f".data.old-{os.getpid()}"
        if data.exists():
            os.replace(data, old)  # stale shards of an earlier build would mislead
        os.replace(staging, data)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return stats


def _build(run: Path, dest: Path, writer: ShardWriter, *, search: bool, min_transcripts: int | None,
           map_points: int) -> ReportStats:
    stats = ReportStats(dest)
    lap = _Laps(stats.seconds)
    manifest = _read_manifest(run)
    # a transform's output: the fitted dictionary's clusters, counted on this data
    clusters_t = recounted_clusters(run)
    fitted = fitted_run(RunDir(run))
    layout = map_layout(run, clusters_t, max_points=map_points, centroids_dir=fitted or run,
                        seed=int((manifest.get("config") or {}).get("seed") or 0))
    writer.write("map.js", "map", layout.shard or {})
    lap("map")
    clusters, hidden = _placed_clusters(clusters_t, layout.positions)
    vis = _hide(clusters, run_min_transcripts(run) if min_transcripts is None else min_transcripts)
    lap("clusters")
    order = tables.piece_order(run)
    feats = tables.feature_table(run)
    counts = tables.feature_counts(feats)
    lap("features")
    stats.transcripts = len(order.transcript_ids)
    stats.pieces = len(order.tidx)
    tables.write_transcripts(run, writer, order, feats)
    lap("transcripts")
    tables.write_clusters(run, writer, clusters_t, order, feats, counts)
    lap("cluster pages")
    evidence = write_evidence(run, writer, order, clusters_t, manifest)
    lap("evidence")
    if search:
        posts = transcript_postings(run, order.tidx)
        write_search(writer, clusters_t, counts, posts)
        del posts
    lap("search")
    del feats
    _write_kind_lists(writer, clusters)
    analyses = write_analyses(run, writer)
    overview = _overview(run, manifest, clusters, stats.pieces, stats.transcripts, analyses, _kind_pieces(run), vis)
    overview["search"] = search
    overview["new_clusters"] = _new_clusters(run)
    overview["evidence"] = evidence
    overview["curation"] = report_summary(run, hidden)
    ov_bytes = writer.write("overview.js", "overview", overview)
    page_bytes = _copy_static(dest)
    lap("overview")
    stats.files = writer.files + len(STATIC)
    stats.bytes = writer.bytes + page_bytes
    stats.first_view_bytes = page_bytes + ov_bytes
    stats.clusters = len(clusters)
    return stats
