"""The id registry on small hand-made partitions: a cluster keeps its id when its members
stay, an edited cluster's ids retire into the clusters its members went to, a new cluster
gets an id never used before, a reworded recluster still matches through the pieces, and an
undone merge brings the old ids back."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from featdisco.cluster_ids import MEMBERS, REGISTRY, Registry, id_history

# Three user clusters of four features each: texts a0..a3 in pieces pa0..pa3, and so on.
GROUPS = {"a": 0, "b": 1, "c": 2}


def members(parts: dict[int, list[str]], reword: str = "") -> pa.Table:
    """One row per feature: its part, its text (``reword`` appended) and its piece."""
    rows = [(p, t + reword, "p" + t) for p, texts in parts.items() for t in texts]
    return pa.table({"part": pa.array([r[0] for r in rows], pa.int64()), "text": [r[1] for r in rows],
                     "piece_id": [r[2] for r in rows]})


def group(g: str) -> list[str]:
    return [f"{g}{i}" for i in range(4)]


def first() -> Registry:
    reg = Registry()
    ids = reg.assign(members({0: group("a"), 1: group("b"), 2: group("c")}), ["user"] * 3)
    assert ids.tolist() == [0, 1, 2]  # a first run numbers its clusters in order
    return reg


def test_the_same_clusters_keep_their_ids_in_any_order() -> None:
    reg = first()
    ids = reg.assign(members({0: group("c"), 1: group("a"), 2: group("b")}), ["user"] * 3)
    assert ids.tolist() == [2, 0, 1] and not reg.retired() and reg.next_id == 3


def test_a_cluster_drawn_wider_by_a_new_seed_keeps_its_id() -> None:
    """A new seed puts all of a's members in a cluster three times its size, with halves of
    b and c (Jaccard 1/3, under the floor): the id follows its members' majority; b and c keep
    theirs on the clusters that hold their other halves."""
    reg = Registry()
    b, c = [f"b{i}" for i in range(8)], [f"c{i}" for i in range(8)]
    assert reg.assign(members({0: group("a"), 1: b, 2: c}), ["user"] * 3).tolist() == [0, 1, 2]
    ids = reg.assign(members({0: group("a") + b[:4] + c[:4], 1: b[4:], 2: c[4:]}), ["user"] * 3)
    assert ids.tolist() == [0, 1, 2] and not reg.retired()


def test_a_merge_retires_both_ids_into_a_new_one_and_others_keep_theirs() -> None:
    reg = first()
    ids = reg.assign(members({0: group("a") + group("b"), 1: group("c")}), ["user"] * 2,
                     barred={0: {0, 1}}, why={0: "merge by edit 1", 1: "merge by edit 1"})
    assert ids.tolist() == [3, 2]  # a new id, never used; c keeps 2
    retired = reg.retired()
    assert sorted(retired) == [0, 1]
    assert all(r.into == [3] and r.why == "merge by edit 1" for r in retired.values())
    # a later new cluster gets a fresh id too, never a retired one
    ids = reg.assign(members({0: group("a") + group("b"), 1: group("c"), 2: group("d")}), ["user"] * 3)
    assert ids.tolist() == [3, 2, 4]


def test_a_split_retires_the_id_into_both_parts() -> None:
    reg = first()
    ids = reg.assign(members({0: group("a"), 1: group("b"), 2: ["c0", "c1"], 3: ["c2", "c3"]}), ["user"] * 4,
                     barred={2: {2}, 3: {2}}, why={2: "split by edit 1"})
    assert ids.tolist() == [0, 1, 3, 4]
    assert reg.retired()[2].into == [3, 4]


def test_without_a_bar_the_bigger_part_of_a_merge_keeps_its_id() -> None:
    """An automatic merge of a big cluster with a small one (no edit bars it) is the big
    cluster grown: it keeps its id, the small one retires into it."""
    reg = Registry()
    reg.assign(members({0: [f"a{i}" for i in range(10)], 1: ["b0"]}), ["user"] * 2)
    ids = reg.assign(members({0: [f"a{i}" for i in range(10)] + ["b0"]}), ["user"])
    assert ids.tolist() == [0] and reg.retired()[1].into == [0]


def test_a_reworded_recluster_matches_through_the_pieces() -> None:
    """A changed featurize prompt rewords every feature: no text is shared, but the clusters
    still hold the same pieces, so they keep their ids."""
    reg = first()
    ids = reg.assign(members({0: group("b"), 1: group("c"), 2: group("a")}, reword=" (reworded)"), ["user"] * 3)
    assert ids.tolist() == [1, 2, 0] and not reg.retired()


def test_an_undone_merge_brings_the_old_ids_back() -> None:
    reg = first()
    reg.assign(members({0: group("a") + group("b"), 1: group("c")}), ["user"] * 2, barred={0: {0, 1}})
    ids = reg.assign(members({0: group("a"), 1: group("b"), 2: group("c")}), ["user"] * 3)
    assert ids.tolist() == [0, 1, 2]
    assert list(reg.retired()) == [3] and reg.retired()[3].into == [0, 1]


def test_kinds_never_share_an_id_and_a_kind_that_vanishes_retires(tmp_path: Path) -> None:
    reg = Registry()
    ids = reg.assign(members({0: group("a"), 1: group("b")}), ["user", "response"])
    assert ids.tolist() == [0, 1]
    ids = reg.assign(members({0: group("a")}), ["user"])
    assert ids.tolist() == [0] and reg.retired()[1].into == []
    (tmp_path / REGISTRY).write_bytes(reg.to_bytes())
    pq.write_table(reg.members, tmp_path / MEMBERS)
    again = Registry.read(tmp_path / REGISTRY, tmp_path / MEMBERS)
    assert again.as_json() == reg.as_json() and again.members.equals(reg.members)
    history = id_history(tmp_path)
    assert history == {"next_id": 2, "live": [0],
                       "retired": [{"id": 1, "kind": "response", "label": None, "into": [], "why": "reclustered"}]}
