"""Stable cluster ids: a cluster keeps its id across edits, reruns and reclusterings.

The ids a researcher sees (the report, ``clusters.parquet``, ``featdisco edit``, label
files for ``validate``, stored analyses) are only worth writing down if they keep meaning
the same cluster. So the final partition's clusters are not numbered by position: each new
partition is matched to the previous one by member overlap, as BERTopic aligns topics across
models. For each kind, the Jaccard overlap of every old cluster (live or retired) with every
new one is taken over member feature texts, or over member pieces (so a reworded
featurize prompt, which changes every text, still matches through the pieces), counting only texts and pieces present in both partitions (so more data does not dilute
it). Texts are used while at least half of the kind's old texts are still there, pieces
otherwise (two clusters of a kind may share pieces, never a text). Hungarian assignment
(:func:`scipy.optimize.linear_sum_assignment`) pairs them one to one; a pair scoring at
least :data:`MATCH_FLOOR`, or whose new cluster holds a :data:`MAJORITY` of the old one's
members, keeps the old id. A new cluster that matches nothing gets
``next_id``, an id never used before in the run. An old id that nothing matched is
*retired* and records its successors: the new clusters holding at least
:data:`SUCCESSOR_SHARE` of its members (a merge: the merged cluster; a split: its parts).

A cluster made by an explicit ``edit merge`` or ``edit split`` may not inherit an id the
edit names (``barred``): merging A and B makes a new cluster C and retires A and B into it,
and a split does likewise. A retired id can come back when a cluster matching it reappears
(``edit drop`` of that merge): it is the same cluster, not a reused id.

The registry lives in the run as ``cluster_ids.json`` (next id, each id's kind, status,
last label, and for retired ids where they went) and ``cluster_ids_members.parquet`` (each
id's member texts and pieces the last time it was live). It is state of the curate stage,
written atomically with the partition it numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NotRequired, TypedDict

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components

from featdisco.errors import FeatdiscoError

REGISTRY = "cluster_ids.json"
MEMBERS = "cluster_ids_members.parquet"
MATCH_FLOOR = 0.4  # Jaccard overlap a new cluster needs with an old one to keep its id
MAJORITY = 0.5  # ... or the share of the old one's members it holds (the id follows its majority)
SUCCESSOR_SHARE = 0.1  # share of a retired cluster's members a new cluster holds to be named its successor
_LIVE_BONUS = 1e-6  # a live id wins a tie with a retired one
MEMBERS_SCHEMA = pa.schema([("cluster_id", pa.int64()), ("unit", pa.string()), ("key", pa.string())])
TEXTS_KEPT = 0.5  # share of a kind's old member texts still present to match by texts (else by pieces)


class IdJSON(TypedDict):
    """An id's entry in ``cluster_ids.json`` (``into`` and ``why`` for a retired one only)."""

    kind: str
    status: str
    label: str | None
    into: NotRequired[list[int]]
    why: NotRequired[str | None]


class RegistryJSON(TypedDict):
    """``cluster_ids.json``."""

    version: int
    next_id: int
    ids: dict[str, IdJSON]


class RetiredId(TypedDict):
    id: int
    kind: str
    label: str | None
    into: list[int]  # the ids its members went to
    why: str | None


class IdHistory(TypedDict):
    """The ids as ``featdisco status --json`` and ``featdisco edit RUN list`` show them."""

    next_id: int
    live: list[int]
    retired: list[RetiredId]


@dataclass(slots=True)
class IdRecord:
    """One id: its kind, ``live`` or ``retired``, its last label, and where a retired one went."""

    kind: str
    status: str = "live"
    label: str | None = None
    into: list[int] = field(default_factory=list)
    why: str | None = None

    def as_json(self) -> IdJSON:
        out = IdJSON(kind=self.kind, status=self.status, label=self.label)
        if self.status == "retired":
            out["into"], out["why"] = self.into, self.why
        return out


@dataclass(slots=True)
class Registry:
    """``cluster_ids.json`` in memory, with each id's members (``cluster_ids_members.parquet``)."""

    next_id: int = 0
    ids: dict[int, IdRecord] = field(default_factory=dict)
    members: pa.Table = field(default_factory=MEMBERS_SCHEMA.empty_table)

    @classmethod
    def read(cls, registry: Path, members: Path) -> Registry:
        """The run's registry; an empty one when the run has none yet."""
        if not registry.exists():
            return cls()
        try:
            raw = orjson.loads(registry.read_bytes())
            ids = {int(k): IdRecord(str(v["kind"]), str(v.get("status", "live")), v.get("label"),
                                    [int(i) for i in v.get("into") or []], v.get("why"))
                   for k, v in raw["ids"].items()}
            reg = cls(int(raw["next_id"]), ids)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise FeatdiscoError(f"{registry} is damaged ({e}); delete it and {members.name} to number "
                                 "the clusters afresh (ids then change once)") from None
        if members.exists():
            reg.members = pq.read_table(members, schema=MEMBERS_SCHEMA)
        return reg

    def as_json(self) -> RegistryJSON:
        return RegistryJSON(version=1, next_id=self.next_id,
                            ids={str(i): r.as_json() for i, r in sorted(self.ids.items())})

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.as_json(), option=orjson.OPT_INDENT_2)

    def retired(self) -> dict[int, IdRecord]:
        return {i: r for i, r in sorted(self.ids.items()) if r.status == "retired"}

    def assign(self, parts: pa.Table, part_kinds: list[str], barred: dict[int, set[int]] | None = None,
               why: dict[int, str] | None = None, strings: pa.Array | pa.ChunkedArray | None = None
               ) -> NDArray[np.int64]:
        """The id of each new cluster (``part`` 0..n-1, of kind ``part_kinds[part]``), given
        its members: ``parts`` has one row per feature with ``part``, ``text`` (or ``sid``,
        its row in ``strings``) and ``piece_id``. ``barred[part]``: old ids that part may not take (the ids its edit
        retired); ``why[old_id]``: why an id retires (else "reclustered"). Updates the
        registry — statuses, successors, next id and the member store — in place."""
        barred, why = barred or {}, why or {}
        n = len(part_kinds)
        out = np.full(n, -1, np.int64)
        new_members = _distinct_members(parts, strings)
        old_ids = np.asarray(sorted(self.ids), np.int64)
        shares: dict[int, list[tuple[float, int]]] = {}  # old id → (share of its members, part)
        for kind in sorted(set(part_kinds)):
            cols = np.asarray([j for j in range(n) if part_kinds[j] == kind], np.int64)
            rows = np.asarray([i for i in old_ids if self.ids[int(i)].kind == kind], np.int64)
            if not len(rows):
                continue
            a, b, jac, share = _overlap(self.members, new_members,
                                        _unit(self.members, new_members, rows, cols), rows, cols)
            order = np.lexsort((-share, a))  # each old id's biggest successor, and any big enough
            top = order[np.r_[True, a[order][1:] != a[order][:-1]]] if len(a) else order
            for i in np.union1d(top, np.flatnonzero(share >= SUCCESSOR_SHARE)).tolist():
                shares.setdefault(int(rows[a[i]]), []).append((float(share[i]), int(cols[b[i]])))
            # a pair may keep the id when the two overlap enough, or when the new cluster holds
            # most of the old one's members (a theme that k-means drew wider under a new seed)
            ok = (jac >= MATCH_FLOOR) | (share >= MAJORITY)
            for part, olds in barred.items():  # an edited cluster may not take the ids its edit retired
                ok &= ~((cols[b] == part) & np.isin(rows[a], list(olds)))
            live = np.asarray([self.ids[int(i)].status == "live" for i in rows])
            for x, y in _match(a[ok], b[ok], jac[ok] + _LIVE_BONUS * live[a[ok]], len(rows), len(cols)):
                out[cols[y]] = rows[x]
        for j in range(n):
            if out[j] < 0:
                out[j] = self.next_id
                self.next_id += 1
        kept = set(out.tolist())
        for j, cid in enumerate(out.tolist()):
            self.ids[cid] = IdRecord(part_kinds[j], "live", self.ids[cid].label if cid in self.ids else None)
        for old, rec in self.ids.items():
            if old in kept or (rec.status == "retired" and old not in shares):
                continue
            found = sorted(shares.get(old, []), key=lambda sp: (-sp[0], sp[1]))  # most of it first
            into = [int(out[p]) for s, p in found if s >= SUCCESSOR_SHARE] or [int(out[p]) for _, p in found[:1]]
            if rec.status == "live" or into:
                rec.status, rec.into, rec.why = "retired", into, why.get(old, rec.why if rec.status == "retired"
                                                                         else "reclustered")
        self._store(new_members, out)
        return out

    def _store(self, new_members: pa.Table, ids: NDArray[np.int64]) -> None:
        """Keep each live id's members as they are now, and each retired id's last ones."""
        now = pa.table({"cluster_id": pa.array(ids[new_members.column("part").to_numpy()], pa.int64()),
                        "unit": new_members.column("unit"), "key": new_members.column("key")})
        old = self.members.filter(pc.invert(pc.is_in(self.members.column("cluster_id"),
                                                     pa.array(np.unique(ids), pa.int64()))))
        self.members = pa.concat_tables([old, now]).sort_by([("cluster_id", "ascending"), ("unit", "ascending"),
                                                            ("key", "ascending")])

    def label(self, labels: dict[int, str | None]) -> None:
        """Remember each live id's label (shown for it once it is retired)."""
        for cid, lab in labels.items():
            if cid in self.ids:
                self.ids[cid].label = lab


def _distinct_members(parts: pa.Table, strings: pa.Array | pa.ChunkedArray | None) -> pa.Table:
    """(part, unit, key): each part's distinct texts and distinct pieces. With ``strings``,
    ``parts`` names each feature's text by its row there (``sid``), so a big run's feature
    texts need not be in memory: only each part's distinct ones are looked up."""
    out = []
    for unit, col in (("text", "text" if strings is None else "sid"), ("piece", "piece_id")):
        t = parts.select(["part", col]).group_by(["part", col]).aggregate([])
        key = t.column(col) if col != "sid" else pc.take(strings, t.column(col))
        out.append(pa.table({"part": t.column("part").cast(pa.int64()),
                             "unit": pa.array([unit] * t.num_rows, pa.string()),
                             "key": key.cast(pa.string())}))
    return pa.concat_tables(out)


def _unit(old: pa.Table, new: pa.Table, rows: NDArray[np.int64], cols: NDArray[np.int64]) -> str:
    """What to match one kind's clusters by: their member texts, unless most of the old
    texts are gone (a reworded featurize prompt), then the pieces they are in. Texts first,
    as two clusters of a kind often share pieces but never a text."""
    o = old.filter(pc.and_(pc.equal(old.column("unit"), "text"),
                           pc.is_in(old.column("cluster_id"), pa.array(rows, pa.int64()))))
    nw = new.filter(pc.and_(pc.equal(new.column("unit"), "text"),
                            pc.is_in(new.column("part"), pa.array(cols, pa.int64()))))
    old_texts = pc.unique(o.column("key"))
    kept = pc.sum(pc.is_in(old_texts, value_set=pc.unique(nw.column("key")))).as_py() or 0
    return "text" if kept >= TEXTS_KEPT * len(old_texts) else "piece"


def _overlap(old: pa.Table, new: pa.Table, unit: str, rows: NDArray[np.int64], cols: NDArray[np.int64]
             ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """The (old, new) pairs that share a key of ``unit`` — positions in ``rows`` (old ids)
    and ``cols`` (new parts) — with their Jaccard overlap and the share of the old id's
    members the part holds, both counted over the keys present on both sides only (so new
    data or dropped data does not dilute them). Sparse: a text is in one cluster a side."""
    o = old.filter(pc.and_(pc.equal(old.column("unit"), unit),
                           pc.is_in(old.column("cluster_id"), pa.array(rows, pa.int64()))))
    nw = new.filter(pc.and_(pc.equal(new.column("unit"), unit),
                            pc.is_in(new.column("part"), pa.array(cols, pa.int64()))))
    o = o.filter(pc.is_in(o.column("key"), value_set=pc.unique(nw.column("key"))))
    nw = nw.filter(pc.is_in(nw.column("key"), value_set=pc.unique(o.column("key"))))
    if not o.num_rows:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0), np.zeros(0)
    keys = pc.unique(o.column("key"))
    ok = pc.index_in(o.column("key"), value_set=keys).to_numpy()
    nk = pc.index_in(nw.column("key"), value_set=keys).to_numpy()
    orow = np.searchsorted(rows, o.column("cluster_id").to_numpy())
    ncol = np.searchsorted(cols, nw.column("part").to_numpy())
    mo = sparse.csr_matrix((np.ones(len(ok)), (orow, ok)), shape=(len(rows), len(keys)))
    mn = sparse.csr_matrix((np.ones(len(nk)), (ncol, nk)), shape=(len(cols), len(keys)))
    inter = (mo @ mn.T).tocoo()
    osize = np.asarray(mo.sum(axis=1)).ravel()
    nsize = np.asarray(mn.sum(axis=1)).ravel()
    a, b, both = inter.row.astype(np.int64), inter.col.astype(np.int64), inter.data
    return a, b, both / (osize[a] + nsize[b] - both), both / osize[a]


def _match(a: NDArray[np.int64], b: NDArray[np.int64], score: NDArray[np.float64], n_old: int, n_new: int
           ) -> list[tuple[int, int]]:
    """The one-to-one pairing of highest total score among candidate pairs (``a[i]``,
    ``b[i]``): Hungarian assignment within each connected group of candidates, which are
    few per cluster (Jaccard ≥ 0.4 admits at most two partners), so thousands of clusters
    never make a dense thousands × thousands problem."""
    if not len(a):
        return []
    graph = sparse.coo_matrix((np.ones(len(a)), (a, n_old + b)), shape=(n_old + n_new,) * 2)
    _, comp = connected_components(graph, directed=False)
    out: list[tuple[int, int]] = []
    for c in np.unique(comp[a]):
        sel = comp[a] == c
        ra, rb = np.unique(a[sel]), np.unique(b[sel])
        dense = np.zeros((len(ra), len(rb)))
        dense[np.searchsorted(ra, a[sel]), np.searchsorted(rb, b[sel])] = score[sel]
        r, k = linear_sum_assignment(-dense)
        out.extend((int(ra[x]), int(rb[y])) for x, y in zip(r, k, strict=True) if dense[x, y] > 0)
    return out


def find_by_pieces(registry: Registry, cluster_id: int, piece_of_part: pa.Table) -> int | None:
    """The part (of ``piece_of_part``: one row per feature, ``part`` and ``piece_id``) whose
    pieces overlap the registry's pieces of ``cluster_id`` the most, when that overlap is at
    least :data:`MATCH_FLOOR` (Jaccard over the pieces present on both sides); else None.
    How an edit finds its cluster again once a reworded prompt changed every feature text."""
    mine = registry.members.filter(pc.and_(pc.equal(registry.members.column("cluster_id"), cluster_id),
                                           pc.equal(registry.members.column("unit"), "piece")))
    if not mine.num_rows:
        return None
    t = piece_of_part.group_by(["part", "piece_id"]).aggregate([])
    new = pa.table({"part": t.column("part").cast(pa.int64()), "unit": pa.array(["piece"] * t.num_rows, pa.string()),
                    "key": t.column("piece_id").cast(pa.string())})
    parts = np.unique(t.column("part").to_numpy()).astype(np.int64)
    _, b, jac, _ = _overlap(mine, new, "piece", np.asarray([cluster_id], np.int64), parts)
    if not len(jac) or jac.max() < MATCH_FLOOR:
        return None
    return int(parts[b[int(np.argmax(jac))]])


def id_history(run_dir: str | Path) -> IdHistory | None:
    """What ``featdisco status --json`` and ``featdisco edit RUN list`` show of the ids: the
    next id, the live ids, and each retired id with its last label and where it went;
    None for a run without a registry (not clustered yet)."""
    path = Path(run_dir) / REGISTRY
    if not path.exists():
        return None
    reg = Registry.read(path, Path(run_dir) / MEMBERS)
    return IdHistory(next_id=reg.next_id,
                     live=sorted(i for i, r in reg.ids.items() if r.status == "live"),
                     retired=[RetiredId(id=i, kind=r.kind, label=r.label, into=r.into, why=r.why)
                              for i, r in reg.retired().items()])


def retired_into(run_dir: str | Path) -> dict[int, list[int]]:
    """Each retired id of the run and the ids its members went to (empty without a registry):
    what a user who names a retired id is told."""
    history = id_history(run_dir)
    return {r["id"]: r["into"] for r in history["retired"]} if history else {}
