"""``featdisco validate | find``: check the LLM's judgements against a person's labels, and
find the clusters about a topic by meaning."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from featdisco.cli.analysis import RunDirArg, show, wrote
from featdisco.cli.common import console


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):  # NumPy scalars
        return _jsonable(v.item())
    return v


def register(app: typer.Typer) -> None:
    """Add ``validate`` and ``find`` to the ``featdisco`` app."""

    @app.command("validate")
    def validate_cmd(
        run_dir: RunDirArg,
        labels: Annotated[Path, typer.Argument(
            help="CSV of piece_id,target,label rows: target scan:<name> or cluster:<kind>:<id>, "
                 "label true or false (the report's labelling mode exports it).", show_default=False)],
    ) -> None:
        """How far the LLM agrees with your labels: per scan or cluster, the confusion counts,
        precision, recall and agreement with 95% Wilson intervals, F1 and Cohen's kappa."""
        from featdisco.evidence.validate import validate

        df = validate(run_dir, labels)
        console.print(f"{int(df['n'].sum()):,} labels checked against {len(df)} target"
                      f"{'s' if len(df) != 1 else ''}")
        for r in df.itertuples():
            if r.unanswered:
                console.print(f"{r.target}: {r.unanswered} labelled pieces have no answer in the scan "
                              "(failed or unsent calls) and were not counted")
        shown = df.assign(**{
            "tp/fp/fn/tn": [f"{a}/{b}/{c}/{d}" for a, b, c, d in zip(df["tp"], df["fp"], df["fn"], df["tn"], strict=True)],
            **{name: [_rate(*v) for v in zip(df[name], df[f"{name}_low"], df[f"{name}_high"], strict=True)]
               for name in ("precision", "recall", "agreement")}})
        show(shown, ["target", "n", "tp/fp/fn/tn", "precision", "recall", "agreement", "f1", "kappa"],
             "agreement with your labels (95% Wilson intervals)", len(df))
        wrote(run_dir, "validation")

    @app.command("find")
    def find_cmd(
        run_dir: RunDirArg,
        query: Annotated[str, typer.Argument(help="What to look for, in your own words.", show_default=False)],
        top: Annotated[int, typer.Option("--top", min=1, help="Clusters to list.")] = 10,
        kind: Annotated[list[str] | None, typer.Option(
            "--kind", help="Only clusters of this kind: user, thought or response (repeatable).")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="One JSON object per cluster per line.")] = False,
        private: Annotated[bool, typer.Option(
            "--private", help="Include clusters the rater flagged as revealing private information.")] = False,
    ) -> None:
        """Clusters ranked by how close your query is to their member features, embedded with
        the run's own embedder; with size and prevalence (share of pieces of the cluster's kind)."""
        from featdisco.evidence.find import find_clusters

        df, hidden = find_clusters(run_dir, query, top=top, kinds=kind, include_private=private)
        if json_out:
            for row in df.to_dict(orient="records"):
                typer.echo(orjson.dumps({k: _jsonable(v) for k, v in row.items()}).decode())
            return
        show(df, ["rank", "cluster_id", "kind", "label", "score", "size", "prevalence", "best_member"],
             f"clusters closest to {query!r}", top)
        if hidden:
            console.print(f"{hidden} private cluster{'s' if hidden > 1 else ''} left out (--private to include)")


def _rate(value: float, lo: float, hi: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f} [{lo:.2f}, {hi:.2f}]"
