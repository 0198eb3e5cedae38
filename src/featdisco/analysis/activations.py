"""Which clusters each piece and each transcript activates, as sparse binary matrices.

Every analysis starts here: probes, comparisons and co-occurrence are all questions about
these two matrices. A piece activates a cluster when any of its features was assigned to
it; a transcript activates the union of its pieces' clusters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy import sparse

from featdisco.dictionary import activation_matrix
from featdisco.errors import FeatdiscoError
from featdisco.rundir import RunDir

PIECE_COLUMNS = ("piece_id", "transcript_id", "turn", "kind", "model", "text", "metadata")


@dataclass(slots=True)
class Activations:
    """Pieces × clusters and transcripts × clusters, with the row and column tables.

    ``pieces`` has one row per piece (same order as ``piece_matrix`` rows) and a
    ``transcript_row`` column indexing ``transcript_matrix``; ``clusters`` has one row per
    cluster id ``0..n-1`` (``cluster_id``, ``kind``, ``label``).
    """

    pieces: pd.DataFrame
    clusters: pd.DataFrame
    transcript_ids: list[str]
    piece_matrix: sparse.csr_matrix
    transcript_matrix: sparse.csr_matrix
    features: pa.Table | None = None  # with ``with_features``: feature_id, piece_id, kind, text, cluster_id
    pieces_path: Path | None = None  # pieces.parquet: columns not loaded up front are read from it on demand

    @property
    def matrix(self) -> sparse.csr_matrix:
        """Pieces × clusters (``piece_matrix``): what ``transform`` returns as the encoding."""
        return self.piece_matrix

    @property
    def n_clusters(self) -> int:
        """The clusters there are: the matrices have a column per id up to the largest, and
        ids retired by edits or reclusters are empty columns (no kind), not clusters."""
        return int(self.clusters["kind"].notna().sum())

    def kind_mask(self, kind: str) -> np.ndarray:
        """Boolean mask over clusters of one kind."""
        return np.asarray(self.clusters["kind"].to_numpy() == kind)

    @property
    def hidden_mask(self) -> np.ndarray:
        """Boolean mask over clusters a researcher hid (``featdisco edit RUN hide ID``: the
        cluster table's ``hidden`` column): the analyses that test clusters leave them out."""
        if "hidden" not in self.clusters:
            return np.zeros(len(self.clusters), dtype=bool)
        return np.asarray(self.clusters["hidden"].fillna(False).to_numpy(dtype=bool))

    @property
    def hidden_ids(self) -> list[int]:
        """The ids of the hidden clusters, ascending."""
        return [int(c) for c in np.flatnonzero(self.hidden_mask)]

    def column(self, name: str) -> pd.Series:
        """A piece column (any column of pieces.parquet), or a metadata path: ``category``,
        ``metadata.category`` or a dotted path into nested metadata (``metadata.judge.score``)."""
        if name in self.pieces.columns and name not in ("metadata", "transcript_row"):
            return self.pieces[name]
        if self.pieces_path is not None and name != "metadata":
            names = pq.ParquetFile(self.pieces_path).schema_arrow.names
            if name in names:  # a column kept on disk (source, format, ...): read it now
                values = pq.read_table(self.pieces_path, columns=[name]).column(name).to_pylist()
                return pd.Series(values, index=self.pieces.index, dtype=object)
        path = name.removeprefix("metadata.")
        metas = [_meta(m) for m in self.pieces["metadata"]] if "metadata" in self.pieces else []
        values = [_lookup(m, path) for m in metas]
        if all(v is None for v in values):
            cols = sorted((set(self.pieces.columns) | set(self._disk_columns())) - {"text", "metadata", "transcript_row"})
            keys = sorted({k for m in metas[:1000] for k in _paths(m)})
            raise FeatdiscoError(f"no piece column or metadata key named {name!r}; columns: "
                                 f"{', '.join(cols)}; metadata keys: {', '.join(keys) or 'none'}")
        return pd.Series([None if v is None else v if isinstance(v, str) else orjson.dumps(v).decode()
                          if isinstance(v, dict | list) else str(v) for v in values],
                         index=self.pieces.index, dtype=object)

    def _disk_columns(self) -> list[str]:
        return pq.ParquetFile(self.pieces_path).schema_arrow.names if self.pieces_path else []


def _lookup(meta: Mapping[str, object], path: str) -> object:
    """``meta[path]``, else the dotted path walked through nested objects."""
    if path in meta:
        return meta[path]
    value: object = meta
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _paths(meta: Mapping[str, object], prefix: str = "") -> list[str]:
    """Every key of a metadata object, nested ones as dotted paths."""
    out = []
    for k, v in meta.items():
        out.append(prefix + k)
        if isinstance(v, dict):
            out.extend(_paths(v, f"{prefix}{k}."))
    return out


def _meta(raw: Any) -> dict[str, object]:
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def read_clusters(run: RunDir, table: pa.Table | None = None) -> pd.DataFrame:
    """The cluster table (``clusters.parquet``, or the unnamed base table of a run stopped
    before naming, or ``table`` when given), indexed 0..n-1 by cluster id."""
    source = cluster_table_source(run) if table is None else None
    name = str(source) if source is not None else "clusters.parquet"
    if table is None:
        table = pq.read_table(source)
    df = table.to_pandas()
    if "label" not in df.columns:
        df["label"] = None
    df = df.sort_values("cluster_id").reset_index(drop=True)
    ids = df["cluster_id"].to_numpy()
    if len(ids) and (ids[0] < 0 or (np.diff(ids) == 0).any()):
        raise FeatdiscoError(f"{name}: cluster ids must be distinct and not negative")
    df["label"] = [lab if isinstance(lab, str) and lab else f"{k} cluster {c}"
                   for lab, k, c in zip(df["label"], df["kind"], df["cluster_id"], strict=True)]
    df["retired"] = False
    if len(ids) and ids[-1] + 1 != len(ids):
        df = _with_retired(df, int(ids[-1]) + 1)
    return df


def _with_retired(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """Rows for the ids 0..n-1 the table lacks, so that row ``i`` is cluster ``i`` and a
    cluster's id is its column in the activation matrices. Stable ids leave gaps where a
    cluster was merged, split or reclustered away (:mod:`featdisco.cluster_ids`); such a
    row is ``retired``, of no kind, and no feature is in it."""
    full = df.set_index("cluster_id").reindex(np.arange(n))
    gap = ~full.index.isin(df["cluster_id"])
    for col in full.columns:
        if col == "retired":
            full[col] = gap
        elif col == "label":
            full.loc[gap, col] = [f"retired cluster {i}" for i in np.flatnonzero(gap)]
        elif pd.api.types.is_bool_dtype(df[col]):
            full[col] = full[col].fillna(False).astype(bool)
        elif pd.api.types.is_integer_dtype(df[col]) or pd.api.types.is_float_dtype(df[col]):
            full[col] = full[col].fillna(0).astype(df[col].dtype)
    return full.rename_axis("cluster_id").reset_index()


def fitted_run(run: RunDir) -> Path | None:
    """The fitted run whose dictionary a transform's output was made with (its manifest
    names it), or None for a run fitted in place."""
    if not run.exists or run.file("clusters.parquet").exists():
        return None
    fitted = run.manifest.get("fitted_run")
    if not fitted:
        return None
    if not (Path(fitted) / "clusters.parquet").exists():
        raise FeatdiscoError(f"{run.path} is the output of `featdisco transform` with the dictionary in "
                             f"{fitted}, which has no clusters.parquet any more: its labels are needed")
    return Path(fitted)


def cluster_table_source(run: RunDir) -> Path:
    """Where a run's clusters are: its own ``clusters.parquet`` (or the unnamed base table of
    a run stopped before naming), else, for a transform's output, the fitted run's."""
    for name in ("clusters.parquet", "clusters_base.parquet"):
        if run.file(name).exists():
            return run.file(name)
    fitted = fitted_run(run)
    if fitted is not None:
        return fitted / "clusters.parquet"
    raise FeatdiscoError(f"{run.path} has no clusters: run `featdisco run` into it, or "
                         "`featdisco transform FITTED_RUN ... -o` it")


def recounted_clusters(run_dir: str | Path) -> pa.Table:
    """The cluster table of a run, with ``size`` (features), ``pieces`` and ``transcripts``
    counted on the run's own data: for a transform's output, the fitted dictionary's labels
    with this data's counts (and no examples, which were the fitted data's)."""
    run = RunDir(run_dir)
    source = cluster_table_source(run)
    if source.parent.resolve() == run.path.resolve():
        return pq.read_table(source)
    act = load_activations(run_dir)
    df = pq.read_table(source).to_pandas().sort_values("cluster_id").reset_index(drop=True)
    cids = run.read_table("assignments.parquet", ["cluster_id"]).column(0).to_numpy(zero_copy_only=False)
    cids = np.asarray(cids[cids >= 0] if cids.dtype.kind in "iu" else [c for c in cids if c is not None and c >= 0],
                      dtype=np.int64)
    ids = df["cluster_id"].to_numpy()  # stable ids: each is its column in the matrices
    df["size"] = np.bincount(cids, minlength=act.piece_matrix.shape[1])[ids]
    df["pieces"] = np.asarray(act.piece_matrix.getnnz(axis=0))[ids]
    df["transcripts"] = np.asarray(act.transcript_matrix.getnnz(axis=0))[ids]
    if "examples" in df:
        df["examples"] = [[] for _ in range(len(df))]
    return pa.Table.from_pandas(df, preserve_index=False)


def load_activations(run_dir: str | Path, *, clusters: pa.Table | None = None,
                     with_features: bool = False) -> Activations:
    """Build both matrices from a run directory's assignments; ``clusters``: the fitted
    cluster table when the run is a transform's output; ``with_features``: keep each
    feature's text and cluster too."""
    run = RunDir(run_dir)
    if not run.file("assignments.parquet").exists():
        raise FeatdiscoError(f"{run.path} has no assignments.parquet: run `featdisco run` into it first")
    ptable = run.read_table("pieces.parquet")
    pieces = ptable.select([c for c in PIECE_COLUMNS if c in ptable.column_names]).to_pandas()
    extra = [c for c in ptable.column_names if c not in PIECE_COLUMNS and c not in
             ("source", "record", "format", "chars", "truncated", "redacted", "system")]
    for c in extra:
        pieces[c] = ptable.column(c).to_pandas()
    features = run.read_table("features.parquet").select(["feature_id", "piece_id"])
    assignments = run.read_table("assignments.parquet").select(["feature_id", "cluster_id"])
    if features.num_rows != assignments.num_rows or not features.column("feature_id").equals(
            assignments.column("feature_id")):
        assignments = features.join(assignments, "feature_id", join_type="left outer")
        cluster_col = pc.fill_null(assignments.column("cluster_id"), -1)
        feature_pieces = assignments.column("piece_id").to_pylist()
    else:
        cluster_col = assignments.column("cluster_id")
        feature_pieces = features.column("piece_id").to_pylist()
    cluster_table = read_clusters(run, clusters)
    cids = np.asarray(cluster_col.to_numpy(zero_copy_only=False), dtype=np.int64)
    if len(cids) and cids.max() >= len(cluster_table):
        raise FeatdiscoError(f"{run.path}: assignments name cluster {cids.max()}, the cluster table "
                             f"has {len(cluster_table)}")
    known = set(pieces["piece_id"])
    if any(p not in known for p in feature_pieces):
        raise FeatdiscoError(f"{run.path}: features.parquet names pieces missing from pieces.parquet")
    pm = activation_matrix(pieces["piece_id"].tolist(), feature_pieces, cids, len(cluster_table))
    codes, uniques = pd.factorize(pieces["transcript_id"], sort=False)
    pieces["transcript_row"] = codes
    tm = _transcript_matrix(pm, codes, len(uniques))
    feats = None
    if with_features:
        feats = run.read_table("features.parquet", ["feature_id", "piece_id", "kind", "text"]) \
            .append_column("cluster_id", pa.array(cids, pa.int64()))
    return Activations(pieces, cluster_table, [str(u) for u in uniques], pm.tocsr(), tm, feats,
                       pieces_path=run.file("pieces.parquet"))


def _transcript_matrix(pm: sparse.csr_matrix, rows: np.ndarray, n: int) -> sparse.csr_matrix:
    """OR of the piece rows of each transcript (a 0/1 indicator product, then clipped)."""
    agg = sparse.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, np.arange(len(rows)))),
                            shape=(n, len(rows)))
    tm = (agg @ pm.astype(np.int32)).tocsr()
    tm.data[:] = 1
    return tm.astype(np.int8)


def frequency(act: Activations) -> pd.DataFrame:
    """Each cluster's frequency: pieces that activate it out of the pieces of its kind, and
    distinct transcripts out of the transcripts that have a piece of that kind."""
    kinds = act.pieces["kind"].to_numpy()
    piece_counts = np.asarray(act.piece_matrix.getnnz(axis=0))
    transcript_counts = np.asarray(act.transcript_matrix.getnnz(axis=0))
    n_pieces, n_transcripts = {}, {}
    for kind in np.unique(kinds):
        mask = kinds == kind
        n_pieces[kind] = int(mask.sum())
        n_transcripts[kind] = len(np.unique(act.pieces["transcript_row"].to_numpy()[mask]))
    c = act.clusters
    live = ~c["retired"].to_numpy(dtype=bool) if "retired" in c else np.ones(len(c), bool)
    piece_counts, transcript_counts, c = piece_counts[live], transcript_counts[live], c[live]
    df = pd.DataFrame({
        "cluster_id": c["cluster_id"].to_numpy(),
        "kind": c["kind"].to_numpy(),
        "label": c["label"].to_numpy(),
        "pieces": piece_counts,
        "kind_pieces": [n_pieces.get(k, 0) for k in c["kind"]],
        "transcripts": transcript_counts,
        "kind_transcripts": [n_transcripts.get(k, 0) for k in c["kind"]],
    })
    with np.errstate(invalid="ignore", divide="ignore"):
        df["piece_rate"] = np.where(df["kind_pieces"] > 0, df["pieces"] / df["kind_pieces"], 0.0)
        df["transcript_rate"] = np.where(df["kind_transcripts"] > 0,
                                         df["transcripts"] / df["kind_transcripts"], 0.0)
    return df.sort_values(["kind", "pieces"], ascending=[True, False]).reset_index(drop=True)


def write_analysis(run_dir: str | Path, name: str, df: pd.DataFrame, *, command: str | None = None,
                   args: Mapping[str, object] | None = None, extra: dict[str, pd.DataFrame] | None = None,
                   depends: str = "members", hidden: list[int] | None = None,
                   hidden_kinds: list[str] | None = None) -> Path:
    """Write ``analysis_<name>.parquet`` (and ``analysis_<name><suffix>.parquet`` for each of
    ``extra``) atomically into the run directory, under its lock, recorded with the
    fingerprint of what it ``depends`` on (the clusters' members; ``labels`` when the result
    depends on the clusters' names too), ``args`` and ``command``
    (:mod:`featdisco.analysis.provenance`). ``hidden``: for an analysis that left the
    hidden clusters out, their ids (recorded, so that hiding or showing one makes it stale);
    ``hidden_kinds``: the kinds it tests, when not all.
    The paths go into ``df.attrs["written"]`` for the CLI to print."""
    from featdisco.analysis.provenance import write_analysis as write_recorded

    paths = write_recorded(run_dir, name, {"": df, **(extra or {})}, command=command or name, args=args or {},
                           depends=depends, hidden=hidden, hidden_kinds=hidden_kinds)
    df.attrs["written"] = [str(p) for p in paths]
    return paths[0]


def cluster_frequency(run_dir: str | Path, *, write: bool = True) -> pd.DataFrame:
    """:func:`frequency` of a run directory, saved as ``analysis_frequency.parquet``."""
    df = frequency(load_activations(run_dir))
    if write:
        write_analysis(run_dir, "frequency", df, command="frequency")
    return df
