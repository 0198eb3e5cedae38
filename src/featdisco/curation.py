"""A researcher's edits to a run's clusters (``curation.json``) and how they are applied.

``featdisco edit RUN merge|split|rename|hide`` records each edit with the clusters it names,
and each cluster with a *signature*: its most frequent member features. The edit is applied
to the partition before curation, whose clusters have no stable ids yet (those are given
after, by :mod:`featdisco.cluster_ids`), so an edit is applied to whichever cluster of the
same kind now holds most of its signature (or, when none of the signature's texts is left
— a reworded prompt — to the cluster that kept the edit's id, found by its pieces through the
registry); an edit none of whose clusters can be found so (the cluster dissolved, its data
is gone) is *stale*: kept in the file, counted in the run summary and listed in the report,
never dropped or applied to the wrong cluster.

The curate stage (:mod:`featdisco.stages.curate`) applies the edits, in order, to the
k-means partition: merges (unions) and splits change the partition that naming, rating, the
report, the analyses and ``transform`` read, moving only the named clusters' features;
renames and hides are carried to the assemble stage in ``curation_applied.json``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from featdisco.errors import FeatdiscoError
from featdisco.storage.tables import write_bytes_atomic

CURATION = "curation.json"  # the edits, as the researcher made them
APPLIED = "curation_applied.json"  # what the last run made of each edit
OPS = ("merge", "split", "rename", "hide")
SIGNATURE = 20  # most frequent member features kept per cluster reference
MATCH = 0.5  # share of a signature one cluster must hold to be "the same cluster"
MAX_LABEL = 200


class ClusterRefJSON(TypedDict):
    id: int
    kind: str
    label: str | None
    members: list[str]


class EditJSON(TypedDict):
    """An edit in ``curation.json`` (``label`` for a rename, ``k`` for a split)."""

    op: str
    clusters: list[ClusterRefJSON]
    made: str
    label: NotRequired[str]
    k: NotRequired[int]


class NamedCluster(TypedDict):
    id: int
    kind: str
    label: str | None


class OutcomeJSON(TypedDict):
    """An edit's fate in ``curation_applied.json``."""

    index: int
    op: str
    edit: str
    status: str
    reason: str | None
    clusters: list[NamedCluster]
    now: list[int]
    label: str | None
    k: int | None


class AppliedJSON(TypedDict):
    """``curation_applied.json``."""

    edits: list[OutcomeJSON]
    renamed: dict[str, str]
    hidden: list[int]
    counts: dict[str, int]


class EditFate(TypedDict):
    index: int
    edit: str
    status: str
    reason: str | None
    now: list[int]


class CurationSummary(TypedDict):
    """The report overview's ``curation`` entry."""

    edits: list[EditFate]
    hidden: list[list[object]]  # [id, kind, label] of each hidden cluster


@dataclass(slots=True)
class ClusterRef:
    """A cluster as the edit saw it: its id then, kind, label, and signature."""

    id: int
    kind: str
    label: str | None
    members: list[str]

    def describe(self) -> str:
        return f"{self.kind} cluster {self.id}" + (f" ({self.label!r})" if self.label else "")


@dataclass(slots=True)
class Edit:
    op: str
    clusters: list[ClusterRef]
    label: str | None = None  # rename
    k: int | None = None  # split
    made: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def describe(self) -> str:
        ids = " ".join(str(c.id) for c in self.clusters)
        extra = f" {self.label!r}" if self.op == "rename" else f" --k {self.k}" if self.op == "split" else ""
        return f"{self.op} {ids}{extra}"

    def as_json(self) -> EditJSON:
        out = EditJSON(op=self.op, clusters=[
            ClusterRefJSON(id=c.id, kind=c.kind, label=c.label, members=c.members) for c in self.clusters],
            made=self.made)
        if self.label is not None:
            out["label"] = self.label
        if self.k is not None:
            out["k"] = self.k
        return out


def _edit_from(raw: Any, where: str) -> Edit:
    """One edit from ``curation.json``; a clear error naming the file and the edit."""
    if not isinstance(raw, dict) or raw.get("op") not in OPS:
        raise FeatdiscoError(f"{where}: an edit needs \"op\", one of {', '.join(OPS)}")
    refs = raw.get("clusters")
    if not isinstance(refs, list) or not refs:
        raise FeatdiscoError(f"{where}: \"clusters\" must be a non-empty list")
    clusters = []
    for r in refs:
        if not (isinstance(r, dict) and isinstance(r.get("id"), int) and isinstance(r.get("kind"), str)
                and isinstance(r.get("members"), list) and all(isinstance(m, str) for m in r["members"])):
            raise FeatdiscoError(f"{where}: each cluster needs an integer \"id\", a \"kind\" and "
                                 "\"members\" (a list of feature texts)")
        clusters.append(ClusterRef(r["id"], r["kind"], r.get("label"), list(r["members"])))
    edit = Edit(raw["op"], clusters, raw.get("label"), raw.get("k"), str(raw.get("made") or ""))
    check_edit(edit, where)
    return edit


def check_edit(edit: Edit, where: str) -> None:
    """The shape rules of each kind of edit (ids and kinds are checked against the run by
    :func:`featdisco.curation.reference`)."""
    n = len(edit.clusters)
    if edit.op == "merge":
        if n < 2 or len({c.id for c in edit.clusters}) < n:
            raise FeatdiscoError(f"{where}: merge needs two or more different clusters")
        if len({c.kind for c in edit.clusters}) > 1:
            raise FeatdiscoError(f"{where}: merge joins clusters of one kind, got "
                                 f"{', '.join(sorted({c.kind for c in edit.clusters}))}")
    elif n != 1:
        raise FeatdiscoError(f"{where}: {edit.op} takes one cluster")
    if edit.op == "split" and not (isinstance(edit.k, int) and edit.k >= 2):
        raise FeatdiscoError(f"{where}: split needs k of 2 or more")
    if edit.op == "rename":
        if not isinstance(edit.label, str) or not edit.label.strip():
            raise FeatdiscoError(f"{where}: rename needs a non-empty label")
        if len(edit.label) > MAX_LABEL:
            raise FeatdiscoError(f"{where}: a label is at most {MAX_LABEL} characters")


def read_edits(path: Path) -> list[Edit]:
    """The edits in ``path`` (``[]`` when there is none)."""
    if not path.exists():
        return []
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise FeatdiscoError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("edits"), list):
        raise FeatdiscoError(f"{path}: expected {{\"edits\": [...]}}")
    return [_edit_from(raw, f"{path}: edit {i + 1}") for i, raw in enumerate(data["edits"])]


def write_edits(path: Path, edits: list[Edit]) -> None:
    write_bytes_atomic(path, orjson.dumps({"version": 1, "edits": [e.as_json() for e in edits]},
                                          option=orjson.OPT_INDENT_2))


def signatures(texts: pa.ChunkedArray | pa.Array, cluster_ids: pa.ChunkedArray | pa.Array,
               wanted: list[int], n: int = SIGNATURE) -> dict[int, list[str]]:
    """The ``n`` most frequent member texts of each wanted cluster (ties alphabetical)."""
    t = pa.table({"cluster_id": cluster_ids, "text": texts})
    t = t.filter(pc.is_in(t.column("cluster_id"), pa.array(wanted, pa.int64())))
    counts = t.group_by(["cluster_id", "text"]).aggregate([([], "count_all")]) \
        .sort_by([("cluster_id", "ascending"), ("count_all", "descending"), ("text", "ascending")])
    out: dict[int, list[str]] = {c: [] for c in wanted}
    for cid, text in zip(counts.column("cluster_id").to_pylist(), counts.column("text").to_pylist(),
                         strict=True):
        if len(out[cid]) < n:
            out[cid].append(text)
    return out


# -- applying edits to a partition ------------------------------------------------------


@dataclass(slots=True)
class Part:
    """A cluster while edits are applied: ``raw`` is its k-means index when unchanged (its
    centroid and similarities are kept), None once a merge or split changed its members."""

    raw: int | None
    label: str | None = None
    hidden: bool = False


@dataclass(slots=True)
class KindPartition:
    """One kind's distinct strings (``sids``, sorted, with ``weights``) and the part each is in."""

    sids: NDArray[np.int64]
    weights: NDArray[np.int64]
    part_of: NDArray[np.int64]  # index into ``parts`` per distinct string
    parts: list[Part]
    order: list[int]  # the live parts, in the order their clusters are numbered


@dataclass(slots=True)
class Outcome:
    """What became of one edit: applied or stale (with why), the ids it named, the ids of
    the clusters it made (final numbering, filled in at the end)."""

    index: int
    edit: Edit
    status: str = "applied"
    reason: str | None = None
    parts: list[tuple[str, int]] = field(default_factory=list)  # (kind, part) it produced
    now: list[int] = field(default_factory=list)

    def as_json(self) -> OutcomeJSON:
        return OutcomeJSON(index=self.index, op=self.edit.op, edit=self.edit.describe(),
                           status=self.status, reason=self.reason,
                           clusters=[NamedCluster(id=c.id, kind=c.kind, label=c.label) for c in self.edit.clusters],
                           now=self.now, label=self.edit.label, k=self.edit.k)


class Curator:
    """Applies edits in order to per-kind partitions of distinct strings.

    ``sid_of`` maps the feature texts the edits name to their rows in ``strings.parquet``
    (texts no longer in the run are absent); ``split`` is called
    as ``split(sids, weights, k)`` and returns each string's part (0..k-1) — k-means on
    the strings' embeddings, supplied by the stage.
    """

    def __init__(self, kinds: dict[str, KindPartition], sid_of: dict[str, int], split: Any,
                 by_id: Any = None) -> None:
        self.kinds, self.sid_of, self._split = kinds, sid_of, split
        # ``by_id(ref, kind_partition)``: the part that is the cluster ``ref.id`` names now,
        # found through the id registry (its pieces), for a ref whose features were all reworded
        self._by_id = by_id
        self.changed = False  # a merge or split was applied: the partition must be rewritten

    def resolve(self, ref: ClusterRef) -> tuple[int | None, str]:
        """The live part that holds most of ``ref``'s signature, or None and why not."""
        kp = self.kinds.get(ref.kind)
        if kp is None:
            return None, f"this run has no {ref.kind} clusters"
        sids = np.asarray([self.sid_of[t] for t in ref.members if t in self.sid_of], np.int64)
        pos = np.searchsorted(kp.sids, sids)
        found = pos[(pos < len(kp.sids)) & (kp.sids[np.minimum(pos, len(kp.sids) - 1)] == sids)]
        if not len(found):
            part = self._by_id(ref, kp) if self._by_id is not None else None
            if part is not None:  # reworded features, but the cluster kept its id: it is still there
                return part, ""
            return None, f"none of the features of {ref.describe()} are in this run any more"
        votes = np.bincount(kp.part_of[found])
        best = int(np.argmax(votes))
        if votes[best] < MATCH * len(ref.members):
            return None, (f"{ref.describe()} is gone: no cluster holds half of its features "
                          f"(the most, {int(votes[best])} of {len(ref.members)})")
        return best, ""

    def apply(self, edits: list[Edit]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for i, edit in enumerate(edits):
            out = Outcome(i + 1, edit)
            resolved = [self.resolve(ref) for ref in edit.clusters]
            stale = [why for p, why in resolved if p is None]
            parts = [p for p, _ in resolved if p is not None]
            kind = edit.clusters[0].kind
            if stale:
                out.status, out.reason = "stale", "; ".join(stale)
            elif len(set(parts)) < len(parts):
                out.status, out.reason = "stale", "the clusters it merges are already one cluster"
            else:
                why, made = self._apply_one(edit, kind, parts)
                if why:
                    out.status, out.reason = "stale", why
                else:
                    _supersede_renames(outcomes, out, kind, parts)
                    out.parts = [(kind, p) for p in made]
            outcomes.append(out)
        return outcomes

    def _apply_one(self, edit: Edit, kind: str, parts: list[int]) -> tuple[str, list[int]]:
        """Apply one resolved edit; returns why it cannot be applied ("" when it was) and
        the parts it leaves (the merged one, the split ones, the renamed or hidden one)."""
        kp = self.kinds[kind]
        target = kp.parts[parts[0]]
        if edit.op == "rename":
            target.label = " ".join((edit.label or "").split())
        elif edit.op == "hide":
            target.hidden = True
        elif edit.op == "merge":
            others = set(parts[1:])
            kp.part_of[np.isin(kp.part_of, list(others))] = parts[0]
            target.hidden = all(kp.parts[p].hidden for p in parts)
            target.raw, target.label = None, None
            kp.order = [p for p in kp.order if p not in others]
            self.changed = True
        elif edit.op == "split":
            members = np.flatnonzero(kp.part_of == parts[0])
            k = int(edit.k or 2)
            if len(members) < k:
                return (f"{edit.clusters[0].describe()} has {len(members)} distinct features now, "
                        f"too few to split in {k}"), []
            labels = np.asarray(self._split(kp.sids[members], kp.weights[members], k), np.int64)
            new = [parts[0]]
            for j, lab in enumerate(int(x) for x in np.unique(labels)):
                if j:
                    new.append(len(kp.parts))
                    kp.parts.append(Part(None, None, target.hidden))
                kp.part_of[members[labels == lab]] = new[-1]
            target.raw, target.label = None, None
            at = kp.order.index(parts[0])
            kp.order[at + 1:at + 1] = new[1:]
            self.changed = True
            return "", new
        return "", parts[:1]


def _supersede_renames(earlier: list[Outcome], out: Outcome, kind: str, parts: list[int]) -> None:
    """A merge or split names its clusters afresh and a rename replaces the label: an earlier
    rename of those clusters no longer shows, so it is stale (with why), not listed as applied
    to a cluster that does not carry its label."""
    if out.edit.op not in ("merge", "split", "rename"):
        return
    touched = {(kind, p) for p in parts}
    for o in earlier:
        if o.edit.op == "rename" and o.status == "applied" and touched & set(o.parts):
            o.status, o.parts = "stale", []
            o.reason = (f"edit {out.index} ({out.edit.op}) " + ("renamed the cluster again" if out.edit.op == "rename"
                        else "named the clusters it made afresh; rename them again"))


def applied_json(outcomes: list[Outcome], renamed: dict[int, str], hidden: list[int]) -> AppliedJSON:
    """``curation_applied.json``: each edit's fate, and the renames and hides by final id."""
    return AppliedJSON(edits=[o.as_json() for o in outcomes],
                       renamed={str(k): v for k, v in sorted(renamed.items())},
                       hidden=sorted(hidden),
                       counts=counts(outcomes))


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    return {"edits": len(outcomes), "applied": sum(o.status == "applied" for o in outcomes),
            "stale": sum(o.status == "stale" for o in outcomes)}


PENDING = "not applied yet"  # an edit recorded (``--no-apply``, or its rerun interrupted) that no run has applied


def edit_fates(run_dir: Path) -> list[EditFate]:
    """Each edit in ``curation.json`` with what the last run made of it, or :data:`PENDING`
    when no run has applied it yet (the clusters do not show it)."""
    outcomes: dict[int, dict[str, Any]] = {}
    if (run_dir / APPLIED).exists():
        outcomes = {o["index"]: o for o in orjson.loads((run_dir / APPLIED).read_bytes()).get("edits", [])}
    fates = []
    for i, e in enumerate(read_edits(run_dir / CURATION) if (run_dir / CURATION).exists() else [], 1):
        o = outcomes.get(i)
        if o is None or o.get("edit") != e.describe():  # the file changed since: that outcome was another edit's
            fates.append(EditFate(index=i, edit=e.describe(), status=PENDING,
                                  reason=f"`featdisco run --run-dir {run_dir}` applies it", now=[]))
        else:
            fates.append(EditFate(index=i, edit=str(o["edit"]), status=str(o.get("status")), reason=o.get("reason"),
                                  now=list(o.get("now") or [])))
    return fates


def report_summary(run_dir: Path, hidden: Sequence[Mapping[str, Any]]) -> CurationSummary | None:
    """For the report's overview: each edit's fate (stale ones with why, those no run has
    applied yet) and the hidden clusters (id, kind, label); None for a run nobody edited."""
    edits = edit_fates(run_dir)
    if not edits and not hidden:
        return None
    return CurationSummary(edits=edits, hidden=[[c["cluster_id"], c["kind"], c.get("label")] for c in hidden])
