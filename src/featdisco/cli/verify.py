"""``featdisco validate | find``: check the LLM's judgements against a person's labels, and
find the clusters about a topic by meaning."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from featdisco.cli.analysis import (
    MinTranscriptsOpt,
    RunDirArg,
    ShowPrivateOpt,
    Top10,
    output_for,
    wrote,
)
from featdisco.cli.common import readable_file
from featdisco.cli.tables import CsvOpt, JsonOpt, Output
from featdisco.rundir import check_run_dir


def register(app: typer.Typer) -> None:
    """Add ``validate`` and ``find`` to the ``featdisco`` app."""

    @app.command("validate")
    def validate_cmd(
        run_dir: RunDirArg,
        labels: Annotated[Path, typer.Argument(
            help="CSV of piece_id,target,label rows: target scan:<name> or cluster:<kind>:<id>, "
                 "label true or false (the report's labelling mode exports it).", show_default=False)],
        json_: JsonOpt = False, csv_: CsvOpt = False,
    ) -> None:
        """How far the LLM agrees with your labels: per scan or cluster, the confusion counts,
        precision, recall and agreement with 95% Wilson intervals, F1 and Cohen's kappa."""
        from featdisco.evidence.validate import unmatched_note, validate
        from featdisco.rundir import open_run

        check_run_dir(run_dir)
        readable_file(labels, "labels file")
        out = Output.of(json_, csv_)
        with open_run(run_dir, write=True):
            df = validate(run_dir, labels)
        out.say(f"{int(df['n'].sum()):,} labels checked against {len(df)} target{'s' if len(df) != 1 else ''}")
        if df.attrs.get("unmatched"):
            out.say(unmatched_note(labels, df.attrs["unmatched"]))
        for r in df.itertuples():
            if r.unanswered:
                out.say(f"{r.target}: {r.unanswered} labelled pieces have no answer in the scan "
                        "(failed or unsent calls) and were not counted")
        if out.machine:
            out.rows(df, [])
        else:
            shown = df.assign(**{
                "tp/fp/fn/tn": [f"{a}/{b}/{c}/{d}" for a, b, c, d in
                                zip(df["tp"], df["fp"], df["fn"], df["tn"], strict=True)],
                **{name: [_rate(*v) for v in zip(df[name], df[f"{name}_low"], df[f"{name}_high"], strict=True)]
                   for name in ("precision", "recall", "agreement")}})
            out.rows(shown, ["target", "n", "tp/fp/fn/tn", "precision", "recall", "agreement", "f1", "kappa"],
                     "agreement with your labels (95% Wilson intervals)")
        wrote(out, df)

    @app.command("find")
    def find_cmd(
        run_dir: RunDirArg,
        query: Annotated[str, typer.Argument(help="What to look for, in your own words.", show_default=False)],
        top: Top10 = None,
        kind: Annotated[list[str] | None, typer.Option(
            "--kind", help="Only clusters of this kind: user, thought or response (repeatable).")] = None,
        json_: JsonOpt = False, csv_: CsvOpt = False,
        min_transcripts: MinTranscriptsOpt = None, show_private: ShowPrivateOpt = False,
    ) -> None:
        """Clusters ranked by how close your query is to their member features, embedded with
        the run's own embedder; with size and prevalence (share of pieces of the cluster's kind)."""
        from featdisco.evidence.find import find_clusters
        from featdisco.rundir import open_run

        shown = query if len(query) <= 60 else query[:57] + "..."  # a pasted page is not echoed whole
        with open_run(run_dir, write=True):  # it fills the run's embedding cache
            out = output_for(run_dir, json_, csv_, min_transcripts, show_private)
            df = find_clusters(run_dir, query, top=out.limit(top, 10), kinds=kind, hidden=out.hidden)
        best = df.attrs["best_score"]
        if df.empty and not best >= df.attrs["floor"]:  # empty because of --top 0 is not "about nothing"
            # hidden clusters were not searched: "no cluster" would be a claim about them too
            n = len(out.hidden)
            which, hidden = ("no cluster shown", f"; the {n:,} hidden cluster{'s were' if n != 1 else ' was'} not "
                             "searched (--show-private searches them)") if n else ("no cluster", "")
            floor = df.attrs["floor"]
            digits = 3 if best == best and f"{best:.2f}" == f"{floor:.2f}" else 2  # "0.12, best 0.12" says nothing
            out.say(f"{which} is about {shown!r}: none scores above the relevance floor {floor:.{digits}f} "
                    "(the best score random strings reach in this run"
                    + (f"; the best cluster scored {best:.{digits}f})" if best == best else ")") + hidden)
            return
        out.rows(df, ["rank", "cluster_id", "kind", "label", "score", "size", "prevalence", "best_member"],
                 f"clusters closest to {shown!r} (scores above the relevance floor {df.attrs['floor']:.2f})")


def _rate(value: float, lo: float, hi: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f} [{lo:.2f}, {hi:.2f}]"
