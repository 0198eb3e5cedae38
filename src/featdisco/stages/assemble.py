"""The cluster table a researcher reads: counts, label, rating, flags and top examples,
one row per cluster (``clusters.parquet``)."""

from __future__ import annotations

import pyarrow as pa

from featdisco.stages.base import Stage, StageContext, StageResult
from featdisco.stages.members import MEMBER_ARTEFACTS, ClusterMembers


class AssembleStage(Stage):
    name = "assemble"
    version = 1
    reads = (*MEMBER_ARTEFACTS, "labels.parquet", "ratings.parquet")
    writes = ("clusters.parquet",)

    def run(self, ctx: StageContext) -> StageResult:
        base, members = ClusterMembers.read(ctx)
        labels = ctx.read_table("labels.parquet")
        ratings = ctx.read_table("ratings.parquet")
        table = base.append_column("label", labels.column("label")) \
            .append_column("description", labels.column("description")) \
            .append_column("interest", ratings.column("interest")) \
            .append_column("interest_reason", ratings.column("reason")) \
            .append_column("private", ratings.column("private")) \
            .append_column("examples", pa.array([members.most_common(i, 10) for i in range(len(members))],
                                                pa.list_(pa.string())))
        ctx.write_table("clusters.parquet", table)
        return StageResult({"clusters": table.num_rows})
