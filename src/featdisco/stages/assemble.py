"""The cluster table a researcher reads: counts, label, rating, flags and top examples,
one row per cluster (``clusters.parquet``), with the researcher's renames and hides
(``curation_applied.json``, from the curate stage) applied last: a renamed cluster keeps
the namer's label in ``auto_label``; a hidden one is kept, flagged ``hidden``."""

from __future__ import annotations

import orjson
import pyarrow as pa

from featdisco.curation import APPLIED
from featdisco.errors import FeatdiscoError
from featdisco.stages.base import Stage, StageContext, StageResult
from featdisco.stages.members import MEMBER_ARTEFACTS, ClusterMembers


class AssembleStage(Stage):
    name = "assemble"
    version = 2  # 2: renames and hides from curation_applied.json (auto_label, hidden)
    reads = (*MEMBER_ARTEFACTS, "labels.parquet", "ratings.parquet", APPLIED)
    writes = ("clusters.parquet",)

    def run(self, ctx: StageContext) -> StageResult:
        base, members = ClusterMembers.read(ctx)
        labels = ctx.read_table("labels.parquet")
        ratings = ctx.read_table("ratings.parquet")
        renamed, hidden = _curation(ctx)
        ids = base.column("cluster_id").to_pylist()
        auto = labels.column("label")
        label = pa.array([renamed.get(cid, lab) for cid, lab in zip(ids, auto.to_pylist(), strict=True)],
                         pa.string())
        table = base.append_column("label", label) \
            .append_column("description", labels.column("description")) \
            .append_column("interest", ratings.column("interest")) \
            .append_column("interest_reason", ratings.column("reason")) \
            .append_column("private", ratings.column("private")) \
            .append_column("examples", pa.array([members.most_common(i, 10) for i in range(len(members))],
                                                pa.list_(pa.string()))) \
            .append_column("auto_label", auto) \
            .append_column("hidden", pa.array([cid in hidden for cid in ids], pa.bool_()))
        ctx.write_table("clusters.parquet", table)
        counts = {"clusters": table.num_rows}
        if renamed or hidden:
            counts.update(renamed=len(renamed), hidden=len(hidden))
        return StageResult(counts)


def _curation(ctx: StageContext) -> tuple[dict[int, str], set[int]]:
    """Final cluster id → the researcher's label, and the hidden ids (none without edits)."""
    if not ctx.exists(APPLIED):
        return {}, set()
    try:
        data = orjson.loads(ctx.path(APPLIED).read_bytes())
        return ({int(k): str(v) for k, v in data.get("renamed", {}).items()},
                {int(i) for i in data.get("hidden", [])})
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
        raise FeatdiscoError(f"{ctx.path(APPLIED)} is damaged ({e}); rerun `featdisco run` to "
                             "rewrite it from curation.json") from None
