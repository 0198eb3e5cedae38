"""``featdisco edit RUN merge A B [C…] | split A [--k N] | rename A LABEL | hide A | list | drop N``.

Each edit is recorded in ``RUN/curation.json`` with the clusters it names (and their most
frequent features, which is how a later run finds them again after a recluster), then
applied by rerunning the pipeline's stages after embedding: only new or changed clusters are
named and rated again, the rest come from the LLM cache. ``--no-apply`` only records.
Cluster ids are stable (:mod:`featdisco.cluster_ids`): an edit retires the ids it merges or
splits, and ``list`` shows where each retired id went.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import pyarrow.parquet as pq
import typer
from rich.table import Table

from featdisco.cli.common import console
from featdisco.curation import (
    APPLIED,
    CURATION,
    PENDING,
    ClusterRef,
    Edit,
    check_edit,
    edit_fates,
    read_edits,
    signatures,
    write_edits,
)
from featdisco.errors import FeatdiscoError
from featdisco.rundir import check_run_dir, open_run

IdsArg = Annotated[list[int], typer.Argument(help="Cluster ids, as the report and clusters.parquet show them.",
                                             show_default=False)]

edit_app = typer.Typer(help="Fix what clustering got wrong: merge, split, rename or hide clusters. "
                            "Edits are kept in RUN/curation.json and reapplied by every rerun.",
                       no_args_is_help=True)


@edit_app.callback()
def edit_main(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="A fitted run directory.")],
    apply: Annotated[bool, typer.Option("--apply/--no-apply",
                                        help="Rerun the stages after clustering now (default) or only record.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and results.")] = False,
) -> None:
    """Curate a run's clusters."""
    ctx.obj = {"run": check_run_dir(run_dir), "apply": apply, "quiet": quiet}


def reference(run: Path, ids: list[int]) -> list[ClusterRef]:
    """The clusters ``ids`` of the run as it is now, with their signatures."""
    path = run / "clusters.parquet"
    if not path.exists():
        raise FeatdiscoError(f"{run} has no clusters.parquet: run `featdisco run` to completion first")
    clusters = {r["cluster_id"]: r for r in pq.read_table(path, columns=["cluster_id", "kind", "label"]).to_pylist()}
    missing = [i for i in ids if i not in clusters]
    if missing:
        from featdisco.cluster_ids import retired_into

        retired = retired_into(run)
        why = "; ".join(f"{i} was retired" + (f" into {' '.join(map(str, retired[i]))}" if retired[i] else "")
                        if i in retired else f"{i} does not exist" for i in missing)
        raise FeatdiscoError(f"{run}/clusters.parquet has no cluster {', '.join(map(str, missing))}: {why} "
                             "(`featdisco edit RUN list` shows the ids)")
    assign = pq.read_table(run / "assignments.parquet", columns=["cluster_id"]).column(0)
    texts = pq.read_table(run / "features.parquet", columns=["text"]).column(0)
    sig = signatures(texts, assign, ids)
    return [ClusterRef(i, clusters[i]["kind"], clusters[i]["label"], sig[i]) for i in ids]


def _record(ctx: typer.Context, edit: Edit) -> None:
    run: Path = ctx.obj["run"]
    check_edit(edit, f"edit {edit.describe()}")
    with open_run(run):  # the edit and its rerun under the run's lock: no writer beside it
        edits = read_edits(run / CURATION)
        # the same command again after Ctrl-C stopped its rerun ("rerunning the same command
        # resumes"): the edit is recorded and pending, so apply it rather than record it twice
        # (the copy would be stale at once, its cluster split or merged away by the first)
        pending = [f["index"] for f in edit_fates(run) if f["status"] == PENDING
                   and edits[f["index"] - 1].describe() == edit.describe()]
        if pending:
            console.print(f"edit {pending[-1]} ({edit.describe()}) is recorded already and not applied yet: "
                          "applying it", markup=False)
            _apply(ctx)
            return
        edits.append(edit)
        write_edits(run / CURATION, edits)
        console.print(f"recorded edit {len(edits)}: {edit.op} "
                      + ", ".join(c.describe() for c in edit.clusters)
                      + (f" as {edit.label!r}" if edit.op == "rename" else "")
                      + (f" into {edit.k}" if edit.op == "split" else ""), markup=False)
        _apply(ctx)


def _apply(ctx: typer.Context) -> None:
    run: Path = ctx.obj["run"]
    if not ctx.obj["apply"]:
        console.print(f"not applied yet: `featdisco run --run-dir {run}` (or any rerun) applies it", markup=False)
        return
    from featdisco.cli.run import log_line, print_summary
    from featdisco.pipeline import STAGES, Pipeline, config_from_manifest

    quiet = ctx.obj["quiet"]
    pipe = Pipeline(run, config_from_manifest(run), log=log_line(quiet), progress="none" if quiet else "auto")
    pipe.account.command = "featdisco edit"  # the stages it reruns are shown as made by edit
    result = pipe.run(stages=STAGES[STAGES.index("embed") + 1:])  # cached: only edits cost anything
    if not quiet:
        print_summary(result)
    _print_outcomes(run, only_stale=True)
    if (run / "report" / "index.html").exists():
        console.print(f"rebuild the report to see it: featdisco report {run}", markup=False)
    if not result.complete:
        console.print(f"[yellow]run incomplete: {result.stopped_reason or 'some calls failed'}; "
                      f"rerun `featdisco run --run-dir {run}` to finish[/yellow]")
        raise typer.Exit(3)


def _print_outcomes(run: Path, only_stale: bool = False) -> None:
    path = run / APPLIED
    outcomes: dict[int, dict[str, Any]] = {}
    if path.exists():
        outcomes = {o["index"]: o for o in orjson.loads(path.read_bytes()).get("edits", [])}
    edits = read_edits(run / CURATION)
    table = Table(title="edits", show_edge=False)
    for col in ("#", "edit", "made", "status", "now"):
        table.add_column(col, overflow="fold")
    shown = 0
    for i, e in enumerate(edits, 1):
        o = outcomes.get(i)
        if o is not None and o.get("edit") != e.describe():
            o = None  # the file changed since the last run: that outcome is another edit's
        status = "not applied yet" if o is None else o["status"] + (f": {o['reason']}" if o.get("reason") else "")
        if only_stale and (o is None or o["status"] != "stale"):
            continue
        table.add_row(str(i), e.describe(), e.made, status, " ".join(map(str, o["now"])) if o else "")
        shown += 1
    if shown:
        console.print(table)
    elif not only_stale:
        console.print(f"{run} has no edits", markup=False)
    if not only_stale:
        _print_retired(run)


def _print_retired(run: Path) -> None:
    """The retired ids: each with its last label and the ids its members went to."""
    from featdisco.cluster_ids import id_history

    history = id_history(run)
    if not history or not history["retired"]:
        return
    table = Table(title="retired cluster ids (merged, split or reclustered away)", show_edge=False)
    for col in ("id", "kind", "label", "now in", "why"):
        table.add_column(col, overflow="fold")
    for r in history["retired"]:
        table.add_row(str(r["id"]), r["kind"], r["label"] or "", " ".join(map(str, r["into"])) or "(gone)",
                      r["why"] or "")
    console.print(table)
    console.print(f"next new id: {history['next_id']}", markup=False)


@edit_app.command("merge")
def merge_cmd(ctx: typer.Context, ids: IdsArg) -> None:
    """Merge clusters of one kind into one (it is named again from its members)."""
    _record(ctx, Edit("merge", reference(ctx.obj["run"], ids)))


@edit_app.command("split")
def split_cmd(ctx: typer.Context, cluster: Annotated[int, typer.Argument(help="Cluster id.")],
              k: Annotated[int, typer.Option("--k", min=2, help="Clusters to split it into.")] = 2) -> None:
    """Split a cluster in k by k-means over its members' embeddings (each part is named)."""
    ref = reference(ctx.obj["run"], [cluster])[0]
    distinct = pq.read_table(ctx.obj["run"] / "clusters.parquet", columns=["cluster_id", "distinct"],
                             filters=[("cluster_id", "=", cluster)]).column("distinct")
    if len(distinct) and distinct[0].as_py() < k:
        raise FeatdiscoError(f"{ref.describe()} has {distinct[0].as_py()} distinct features: too few to split in {k}")
    _record(ctx, Edit("split", [ref], k=k))


@edit_app.command("rename")
def rename_cmd(ctx: typer.Context, cluster: Annotated[int, typer.Argument(help="Cluster id.")],
               label: Annotated[str, typer.Argument(help="The new label.")]) -> None:
    """Give a cluster your own label (the namer's stays in clusters.parquet as auto_label)."""
    _record(ctx, Edit("rename", reference(ctx.obj["run"], [cluster]), label=" ".join(label.split())))


@edit_app.command("hide")
def hide_cmd(ctx: typer.Context, cluster: Annotated[int, typer.Argument(help="Cluster id.")]) -> None:
    """Hide a cluster from the report (it stays in clusters.parquet, flagged hidden)."""
    _record(ctx, Edit("hide", reference(ctx.obj["run"], [cluster])))


@edit_app.command("list")
def list_cmd(ctx: typer.Context) -> None:
    """The run's edits and what the last run made of each (applied, or stale and why)."""
    with open_run(ctx.obj["run"], write=False):  # a file or a typo is an error, not an empty list
        _print_outcomes(ctx.obj["run"])


@edit_app.command("drop")
def drop_cmd(ctx: typer.Context, number: Annotated[int, typer.Argument(help="The edit's number in `list`.")]) -> None:
    """Remove an edit (undo it) and rerun."""
    run: Path = ctx.obj["run"]
    with open_run(run):
        edits = read_edits(run / CURATION)
        if not 1 <= number <= len(edits):
            raise FeatdiscoError(f"{run}/{CURATION} has {len(edits)} edits; there is no edit {number}")
        gone = edits.pop(number - 1)
        write_edits(run / CURATION, edits)
        console.print(f"dropped edit {number}: {gone.describe()}", markup=False)
        _apply(ctx)


def register(app: typer.Typer) -> None:
    app.add_typer(edit_app, name="edit")

