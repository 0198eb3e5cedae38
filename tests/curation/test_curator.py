"""The edit-application rules on small hand-made partitions: an edit finds its clusters by
their features however they are numbered now, merges and splits change the partition,
renames and hides follow the cluster through later edits, and an edit it cannot apply is
stale with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from featdisco.curation import ClusterRef, Curator, Edit, KindPartition, Part, check_edit
from featdisco.errors import FeatdiscoError
from featdisco.stages.kmeans import member_floors

TEXTS = [f"t{i}" for i in range(12)]  # strings 0..11; clusters: 0 = t0-t3, 1 = t4-t7, 2 = t8-t11


def curator() -> Curator:
    part_of = np.repeat([0, 1, 2], 4).astype(np.int64)
    kp = KindPartition(np.arange(12), np.ones(12, np.int64), part_of, [Part(i) for i in range(3)], [0, 1, 2])

    def split(sids: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
        return np.arange(len(sids)) % k

    return Curator({"user": kp}, {t: i for i, t in enumerate(TEXTS)}, split)


def ref(cid: int, members: list[str], kind: str = "user") -> ClusterRef:
    return ClusterRef(cid, kind, None, members)


def test_an_edit_finds_its_cluster_by_members_not_by_id() -> None:
    c = curator()
    # the id the researcher saw was 7; its features are now cluster 1's
    (out,) = c.apply([Edit("rename", [ref(7, ["t4", "t5", "t6"])], label="Mine")])
    assert out.status == "applied" and out.parts == [("user", 1)]
    assert c.kinds["user"].parts[1].label == "Mine"


def test_merge_then_rename_and_hide_follow_the_cluster() -> None:
    c = curator()
    outs = c.apply([Edit("merge", [ref(0, ["t0", "t1"]), ref(1, ["t4", "t5"])]),
                    Edit("rename", [ref(0, ["t0", "t5"])], label="Both"),
                    Edit("hide", [ref(2, ["t8"])])])
    assert [o.status for o in outs] == ["applied"] * 3
    kp = c.kinds["user"]
    assert kp.order == [0, 2] and (kp.part_of[:8] == 0).all()
    assert kp.parts[0].label == "Both" and kp.parts[0].raw is None and kp.parts[2].hidden
    assert c.changed


def test_a_rename_that_a_later_split_merge_or_rename_overrides_is_stale_not_applied() -> None:
    """`edit list` listed "rename 6 'Food and markdown' applied -> 7" after `split 6`, while
    cluster 7 carried the split's fresh name: the rename is stale, with the edit that undid it."""
    c = curator()
    outs = c.apply([Edit("rename", [ref(1, ["t4", "t5"])], label="Mine"),
                    Edit("split", [ref(1, ["t4", "t5", "t6"])], k=2),
                    Edit("rename", [ref(0, ["t0", "t1"])], label="First"),
                    Edit("merge", [ref(0, ["t0", "t1"]), ref(2, ["t8", "t9"])]),
                    Edit("rename", [ref(0, ["t0", "t1"])], label="Again"),
                    Edit("rename", [ref(0, ["t0", "t8"])], label="Last"),
                    Edit("hide", [ref(0, ["t0", "t8"])])])
    assert [o.status for o in outs] == ["stale", "applied", "stale", "applied", "stale", "applied", "applied"]
    assert "edit 2 (split)" in (outs[0].reason or "") and outs[0].parts == []
    assert "edit 4 (merge)" in (outs[2].reason or "")
    assert "edit 6 (rename) renamed the cluster again" in (outs[4].reason or "")
    assert c.kinds["user"].parts[0].label == "Last" and c.kinds["user"].parts[0].hidden


def test_split_makes_new_parts_next_to_the_old_one() -> None:
    c = curator()
    (out,) = c.apply([Edit("split", [ref(1, ["t4", "t5"])], k=2)])
    kp = c.kinds["user"]
    assert out.parts == [("user", 1), ("user", 3)] and kp.order == [0, 1, 3, 2]
    assert sorted(kp.part_of[4:8].tolist()) == [1, 1, 3, 3]


def test_stale_edits_say_why() -> None:
    c = curator()
    outs = c.apply([Edit("rename", [ref(0, ["gone", "also gone"])], label="x"),
                    Edit("rename", [ref(0, ["t0", "t4", "t8", "t9"], kind="thought")], label="x"),
                    Edit("rename", [ref(0, ["t0", "t4", "t8"])], label="x"),
                    Edit("merge", [ref(0, ["t0", "t1"]), ref(5, ["t2", "t3"])]),
                    Edit("split", [ref(0, ["t0"])], k=9)])
    assert [o.status for o in outs] == ["stale"] * 5
    reasons = [o.reason or "" for o in outs]
    assert "are in this run any more" in reasons[0]
    assert "no thought clusters" in reasons[1]
    assert "no cluster holds half of its features" in reasons[2]
    assert "already one cluster" in reasons[3]
    assert "too few to split in 9" in reasons[4]
    assert not c.changed and all(p.label is None for p in c.kinds["user"].parts)


def test_malformed_edits_are_refused() -> None:
    with pytest.raises(FeatdiscoError, match="one kind"):
        check_edit(Edit("merge", [ref(0, ["a"]), ref(1, ["b"], kind="thought")]), "e")
    with pytest.raises(FeatdiscoError, match="k of 2 or more"):
        check_edit(Edit("split", [ref(0, ["a"])], k=1), "e")


def test_member_floors_are_each_clusters_low_percentile_of_its_members_similarity() -> None:
    """The transform threshold (``min_similarity``) of each curated cluster, from its own
    members only; a cluster without members gets 0."""
    floors = member_floors(np.array([0, 0, 0, 1, 2]), np.array([0.9, 0.5, 0.7, 1.0, 0.8], np.float32), 4)
    assert floors[0] == pytest.approx(0.504, abs=1e-3)
    assert floors[1] == pytest.approx(1.0) and floors[2] == pytest.approx(0.8) and floors[3] == 0.0
