"""``featdisco probe | compare | cooccur | frequency | score-labels | hierarchy | stability``:
analyses of a fitted run directory. Each prints a short table and where its Parquet went;
the full results (with every count) are in ``analysis_<name>.parquet`` in the run directory.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from featdisco.cli.common import PricesOpt, exit_if_failed
from featdisco.cli.tables import CsvOpt, JsonOpt, Output
from featdisco.errors import FeatdiscoError
from featdisco.rundir import check_run_dir

RunDirArg = Annotated[Path, typer.Argument(
    help="A fitted run directory (from `featdisco run`), or a `featdisco transform` output folder.")]
_TOP = "Rows to print (default {}; with --json/--csv: all rows)."
Top10 = Annotated[int | None, typer.Option("--top", min=0, help=_TOP.format(10), show_default=False)]
Top10Kind = Annotated[int | None, typer.Option("--top", min=0, help=_TOP.format("10 per kind"), show_default=False)]
Top15 = Annotated[int | None, typer.Option("--top", min=0, help=_TOP.format(15), show_default=False)]
Top20 = Annotated[int | None, typer.Option("--top", min=0, help=_TOP.format(20), show_default=False)]
Top20Level = Annotated[int | None, typer.Option("--top", min=0, help=_TOP.format("20 per level"),
                                                show_default=False)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the random sampling.")]
LlmOpt = Annotated[str | None, typer.Option("--llm", help="LLM backend (default: the run's).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="LLM model (default: the run's).")]
BaseUrlOpt = Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible server URL (default: the run's).")]
ConcOpt = Annotated[int | None, typer.Option("--concurrency", min=1, help="Parallel LLM calls (default: the run's).")]


MinTranscriptsOpt = Annotated[int | None, typer.Option(
    "--min-transcripts", min=1, help="Hide clusters drawn from fewer than N distinct transcripts, so that none "
    "singles out one conversation (default: the run's --min-transcripts, else 1).", show_default=False)]
ShowPrivateOpt = Annotated[bool, typer.Option(
    "--show-private", help="Also show clusters flagged private or drawn from too few transcripts.")]


def output_for(run_dir: Path, json_: bool, csv_: bool, min_transcripts: int | None, show_private: bool) -> Output:
    """The command's output, leaving out rows about hidden clusters (and saying how many)."""
    from featdisco.analysis.provenance import dictionary_changed
    from featdisco.analysis.visibility import visibility

    check_run_dir(run_dir)
    out = Output.of(json_, csv_)
    if (changed := dictionary_changed(run_dir)) is not None:  # a transform's output, its dictionary edited since
        out.say(f"warning: {changed}")
    vis = visibility(run_dir, min_transcripts=min_transcripts, show_private=show_private)
    if (note := vis.note()) is not None:
        out.say(note)
    return replace(out, hidden=vis.hidden)


_OUTPUT_PARAMS = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
                  for name, annotation, default in (("json_", JsonOpt, False), ("csv_", CsvOpt, False),
                                                    ("min_transcripts", MinTranscriptsOpt, None),
                                                    ("show_private", ShowPrivateOpt, False))]


def with_output(fn: Callable[..., None]) -> Callable[..., None]:
    """Give an analysis command the options they all share (--json, --csv, --min-transcripts,
    --show-private, listed last in its help) and call it with the :class:`Output` they make."""
    sig = inspect.signature(fn, eval_str=True)
    params = [p for p in sig.parameters.values() if p.name != "out"]

    @functools.wraps(fn)
    def command(*, json_: bool, csv_: bool, min_transcripts: int | None, show_private: bool,
                **kwargs: Any) -> None:
        from featdisco.rundir import open_run

        with open_run(kwargs["run_dir"], write=True):  # one writer at a time; a second stops at once
            fn(**kwargs, out=output_for(kwargs["run_dir"], json_, csv_, min_transcripts, show_private))

    all_params = params + _OUTPUT_PARAMS
    command.__signature__ = sig.replace(parameters=all_params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in all_params} | {"return": None}
    return command


def left_out(out: Output, df: Any, what: str) -> None:
    """How many hidden clusters the analysis left out (``featdisco edit RUN hide ID``), when any."""
    if n := len(df.attrs.get("hidden_left_out") or []):
        out.say(f"{n:,} hidden cluster{'s' if n != 1 else ''} left out: {what}")


def wrote(out: Output, df: Any) -> None:
    """Where the analysis went (its name carries the arguments that make it another question)."""
    out.say("written: " + ", ".join(df.attrs.get("written") or []))


@with_output
def frequency_cmd(run_dir: RunDirArg, top: Top10Kind = None, *, out: Output) -> None:
    """How often each cluster occurs: in pieces of its kind and in distinct transcripts."""
    from featdisco.analysis.activations import cluster_frequency

    df = cluster_frequency(run_dir)
    n = out.limit(top, 10)
    if out.machine:
        out.rows(df.groupby("kind", sort=False).head(n) if n is not None else df, [], top=None)
    for kind, g in df.groupby("kind") if not out.machine else []:
        out.rows(g, ["cluster_id", "label", "pieces", "kind_pieces", "piece_rate", "transcripts",
                     "transcript_rate"], f"most frequent {kind} clusters", n)
    wrote(out, df)


@with_output
def probe_cmd(
    run_dir: RunDirArg,
    targets: Annotated[int, typer.Option("--targets", min=1, help="Most common thought and response clusters to probe, per kind.")] = 1000,
    context: Annotated[str, typer.Option("--context", help="turn: user clusters of the user turn just before the target piece; transcript: of all its user turns.")] = "turn",
    class_weight: Annotated[str, typer.Option("--class-weight", help="balanced (default) or none.")] = "balanced",
    C: Annotated[float, typer.Option("--C", min=1e-6, help="Inverse L2 regularisation strength.")] = 1.0,
    test_size: Annotated[float, typer.Option("--test-size", help="Share of transcripts held out, strictly between 0 and 1.")] = 0.25,
    min_positives: Annotated[int, typer.Option("--min-positives", min=1, help="Skip targets seen in fewer pieces.")] = 10,
    jobs: Annotated[int | None, typer.Option("--jobs", min=1, help="Parallel worker processes (default: all cores).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the held-out split.")] = 0,
    top: Top15 = None,
    *,
    out: Output,
) -> None:
    """Which user features predict thought and response features: one logistic-regression
    probe per target, held-out split by transcript, F1/precision/recall/AUROC against the
    best input-blind F1, and the user clusters with the largest positive weights."""
    from featdisco.analysis.probes import run_probes, summarize_probes

    if class_weight not in ("balanced", "none"):
        raise FeatdiscoError(f"--class-weight {class_weight!r}: use balanced or none")
    if not 0 < test_size < 1:  # checked before the run is read; 0 or 1 leaves no train or no test split
        raise FeatdiscoError(f"--test-size {test_size}: must be strictly between 0 and 1")

    df = run_probes(run_dir, n_targets=targets, context=context, test_size=test_size, seed=seed, C=C,
                    class_weight=None if class_weight == "none" else class_weight,
                    min_positives=min_positives, n_jobs=jobs)
    left_out(out, df, "not probed as targets, not counted in the correction")
    out.rows(summarize_probes(df), ["kind", "targets", "fitted", "beat_baseline", "beat_null", "beat_by_0.1", "median_f1",
                                    "median_baseline_f1", "median_lift_of_winners"], "probe summary", 10,
             primary=False)
    out.rows(df.sort_values("f1_lift", ascending=False),
             ["kind", "cluster_id", "label", "f1", "baseline_f1", "null_f1_95", "q_value", "beats_null",
              "precision", "recall", "auroc", "test_positives", "n_test", "top_user_labels"],
             "most predictable targets", out.limit(top, 15))
    wrote(out, df)


@with_output
def compare_cmd(
    run_dir: RunDirArg,
    by: Annotated[str, typer.Option("--by", help="Any piece column (model, source, format, ...) or metadata path "
                                    "(category, metadata.judge.score) to group by; each is kept as "
                                    "analysis_compare_<by>.parquet.")],
    groups: Annotated[str | None, typer.Option("--groups", help="Only these groups, comma-separated.")] = None,
    unit: Annotated[str, typer.Option("--unit", help="piece (default) or transcript.")] = "piece",
    min_count: Annotated[int, typer.Option("--min-count", min=1, help="Skip clusters seen fewer times in all groups together.")] = 1,
    alpha: Annotated[float, typer.Option("--alpha", help="False discovery rate for 'significant'.")] = 0.05,
    paired: Annotated[bool | None, typer.Option("--paired/--unpaired", help="Force or forbid the paired test over shared prompts (default: when groups share prompts).")] = None,
    top: Top20 = None,
    *,
    out: Output,
) -> None:
    """How groups differ: each cluster's rate per group with Wilson intervals, rate ratio,
    Fisher / chi-square with Benjamini–Hochberg, and a paired test over shared prompts."""
    from featdisco.analysis.compare import run_compare

    df = run_compare(run_dir, by, unit=unit, groups=groups.split(",") if groups else None,
                     min_count=min_count, alpha=alpha, paired=paired)
    n_sig = int(df["significant"].sum())
    out.say(f"{len(df):,} clusters compared by {by!r}; {n_sig:,} differ at FDR {alpha}")
    left_out(out, df, "not tested, not counted in the correction")
    for kind, only in (df.attrs.get("kinds_not_compared") or {}).items():
        out.say(f"{kind} clusters not compared: only {only} has {kind} pieces")
    if (mc := int((df["test"] == "chi2-exact-mc").sum())):
        out.say(f"{mc:,} cluster{'s' if mc != 1 else ''} tested with the Monte-Carlo exact chi-square test "
                "(an expected count under 5, where the chi-square approximation fails; column test)")
    if df.attrs.get("no_value"):
        out.say(f"{df.attrs['no_value']:,} {df.attrs.get('unit', 'piece')}s have no {by!r} and are left out")
    out.rows(df, ["kind", "cluster_id", "label", "group_high", "count_high", "n_high", "rate_high", "group_low",
                  "count_low", "n_low", "rate_low", "rate_ratio", "q_value", "paired_q"], "largest differences",
             out.limit(top, 20))
    wrote(out, df)


@with_output
def cooccur_cmd(
    run_dir: RunDirArg,
    min_support: Annotated[int, typer.Option("--min-support", min=1, help="Fewest pieces / transcripts a pair must share.")] = 5,
    level: Annotated[str, typer.Option("--level", help="piece, transcript or both.")] = "both",
    top: Top20Level = None,
    *,
    out: Output,
) -> None:
    """Cluster pairs that co-occur more than chance within pieces and within transcripts
    (lift, PMI, NPMI, hypergeometric p with Benjamini–Hochberg)."""
    from featdisco.analysis.cooccurrence import run_cooccurrence

    levels = ("piece", "transcript") if level == "both" else (level,)
    df = run_cooccurrence(run_dir, levels=levels, min_support=min_support)
    left_out(out, df, "their pairs not tested, not counted in the correction")
    n = out.limit(top, 20)
    if df.empty:
        out.say(f"no pair co-occurs {min_support}+ times")
    elif out.machine:
        out.rows(df.groupby("level", sort=False).head(n) if n is not None else df, [], top=None)
    for lv, g in df.groupby("level") if not df.empty and not out.machine else []:
        out.rows(g, ["cluster_a", "label_a", "cluster_b", "label_b", "together", "count_a", "count_b", "units",
                     "lift", "npmi", "q_value"], f"strongest pairs within {lv}s", n)
    wrote(out, df)


@with_output
def score_labels_cmd(
    run_dir: RunDirArg,
    clusters: Annotated[int, typer.Option("--clusters", min=1, help="Clusters to sample and score.")] = 50,
    members: Annotated[int, typer.Option("--members", min=1, help="Members shown per cluster.")] = 10,
    others: Annotated[int, typer.Option("--others", min=0, help="Non-members from nearby clusters shown per cluster.")] = 10,
    seed: SeedOpt = 0,
    llm: LlmOpt = None, model: ModelOpt = None, base_url: BaseUrlOpt = None, concurrency: ConcOpt = None,
    prices: PricesOpt = None,
    top: Top15 = None,
    *,
    out: Output,
) -> None:
    """How good the labels are: the LLM picks, from a mix of members and near non-members,
    those that fit each label; precision and recall per label (worst first)."""
    from featdisco.analysis.label_quality import score_labels

    df = score_labels(run_dir, n_clusters=clusters, n_members=members, n_others=others, seed=seed,
                      llm=llm, model=model, base_url=base_url, concurrency=concurrency,
                      prices=str(prices) if prices else None)
    ok = df[df["status"] == "ok"]
    out.say(f"{len(ok)} of {len(df)} labels scored; median precision {ok['precision'].median():.2f}, "
            f"recall {ok['recall'].median():.2f}")
    out.rows(df, ["kind", "cluster_id", "label", "precision", "recall", "f1", "true_positives", "chosen",
                  "members_shown", "others_shown", "status"], "labels, worst first", out.limit(top, 15))
    wrote(out, df)
    exit_if_failed(df.attrs.get("llm"), out.say, "score-labels")


@with_output
def hierarchy_cmd(
    run_dir: RunDirArg,
    levels: Annotated[int, typer.Option("--levels", min=2, max=3, help="2: clusters and parents; 3: and grandparents.")] = 2,
    branching: Annotated[float | None, typer.Option("--branching", min=1.5, help="Children per parent (default √n).")] = None,
    seed: SeedOpt = 0,
    llm: LlmOpt = None, model: ModelOpt = None, base_url: BaseUrlOpt = None, concurrency: ConcOpt = None,
    prices: PricesOpt = None,
    top: Top20 = None,
    *,
    out: Output,
) -> None:
    """Group clusters into parents (two or three levels), each parent named by the LLM
    from its children's labels; stored as a tree (node, parent, level)."""
    from featdisco.analysis.hierarchy import build_hierarchy

    df = build_hierarchy(run_dir, levels=levels, branching=branching, seed=seed, llm=llm, model=model,
                         base_url=base_url, concurrency=concurrency, prices=str(prices) if prices else None)
    parents = df[df["level"] > 0].sort_values(["level", "size"], ascending=[False, False])
    if out.machine:  # the whole tree, as stored
        out.rows(df, [], top=top)
    else:
        out.rows(parents, ["node_id", "level", "kind", "label", "children", "leaves", "size"], "parents",
                 out.limit(top, 20))
    wrote(out, df)
    exit_if_failed(df.attrs.get("llm"), out.say, "hierarchy (parents whose naming failed are called "
                   "\"Group of N clusters\")")


@with_output
def stability_cmd(
    run_dir: RunDirArg,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Reclusterings per kind.")] = 3,
    fraction: Annotated[float, typer.Option("--fraction", help="Share of distinct features kept in each.")] = 0.8,
    match: Annotated[float, typer.Option("--match", min=0.0, max=1.0, help="Jaccard overlap that counts as a close match.")] = 0.5,
    seed: SeedOpt = 1,
    top: Top10 = None,
    *,
    out: Output,
) -> None:
    """How much clusters change across seeds and subsamples: ARI, NMI and the share of
    clusters with a close match, per kind; least stable clusters listed."""
    from featdisco.analysis.stability import run_stability

    summary, detail = run_stability(run_dir, runs=runs, fraction=fraction, seed=seed, match_jaccard=match)
    out.rows(summary, ["kind", "rerun", "seed", "strings", "clusters", "ari", "nmi", "matched_share"],
             "reclusterings", 100, primary=False)
    out.rows(detail.sort_values("mean_best_jaccard"), ["cluster_id", "kind", "label", "mean_best_jaccard",
                                                       "matched_share"], "least stable clusters",
             out.limit(top, 10))
    wrote(out, summary)


_COMMANDS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("frequency", frequency_cmd),
    ("probe", probe_cmd),
    ("compare", compare_cmd),
    ("cooccur", cooccur_cmd),
    ("score-labels", score_labels_cmd),
    ("hierarchy", hierarchy_cmd),
    ("stability", stability_cmd),
)


def register(app: typer.Typer) -> None:
    """Add the analysis commands to the ``featdisco`` app, in the order of its help."""
    for name, command in _COMMANDS:
        app.command(name)(command)
