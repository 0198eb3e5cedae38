"""``featdisco ask``: a question answered by a plan of scans, comparisons and searches."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from featdisco.cli.common import INCOMPLETE_EXIT, PricesOpt, exit_if_failed
from featdisco.cli.tables import JsonOpt, Output
from featdisco.rundir import check_run_dir


def register(app: typer.Typer) -> None:
    @app.command("ask")
    def ask_cmd(
        run_dir: Annotated[Path, typer.Argument(help="A finished run directory.", show_default=False)],
        question: Annotated[str, typer.Argument(help="The question, e.g. \"Which model apologises more?\"",
                                                show_default=False)],
        name: Annotated[str | None, typer.Option(
            "--name", help="Name of the outputs, ask_NAME.json (default: from the question).")] = None,
        max_sample: Annotated[int, typer.Option(
            "--max-sample", min=1, help="Most pieces a scan step may ask (the plan's sample is capped).")] = 200,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the scan steps' samples.")] = 0,
        show_private: Annotated[bool, typer.Option(
            "--show-private", help="Show the LLM and the tables clusters flagged private or drawn from too "
            "few transcripts (hidden by default, as in every table).")] = False,
        max_cost: Annotated[float | None, typer.Option(
            "--max-cost", min=0.0, help="Stop sending once this many USD are spent, over the plan, every step "
            "and the answer; a rerun continues (answered calls are cached).")] = None,
        llm: Annotated[str | None, typer.Option("--llm", help="LLM backend (default: the run's).")] = None,
        model: Annotated[str | None, typer.Option("--model", help="LLM model (default: the run's).")] = None,
        base_url: Annotated[str | None, typer.Option(
            "--base-url", help="OpenAI-compatible server URL (default: the run's).")] = None,
        concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, help="Parallel LLM calls.")] = None,
        prices: PricesOpt = None,
        json_: JsonOpt = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and results.")] = False,
    ) -> None:
        """Answer a question from the run: the LLM plans up to 5 steps (find, scan, compare,
        cooccur), featdisco runs them, and the answer cites their numbers and quotes by piece
        id. Quotes not found in their piece are dropped and counted; numbers not in any step's
        output are flagged."""
        from featdisco.cli.run import log_line
        from featdisco.evidence.ask import run_ask, step_text

        check_run_dir(run_dir)  # a file, a typo or a folder of other files: one line, nothing created
        out = Output.of(json_)
        res = run_ask(run_dir, question, name=name, max_cost=max_cost, max_sample=max_sample, seed=seed,
                      show_private=show_private,
                      llm=llm, model=model, base_url=base_url, concurrency=concurrency,
                      prices=str(prices) if prices else None, log=log_line(quiet))
        out.say(f"question: {res.question}")
        if res.plan_problems:
            out.say("the first plan was re-asked: " + "; ".join(res.plan_problems))
        for r in res.steps:
            out.say("")
            out.say(step_text(r).split("\n", 1)[0])
            if r.error:
                out.say(f"  failed: {r.error}")
            elif not r.table.empty:
                out.rows(r.table, list(r.table.columns), None, primary=False)
            else:
                out.say("  (no rows)")
            for n in r.notes:
                out.say(f"  note: {n}")
        out.say("")
        out.say(f"answer: {res.answer or '(none)'}")
        if res.citations:
            out.rows(res.citations, ["piece_id", "quote"], "verified citations")
        out.say(f"citations: {len(res.citations)} verified, {len(res.dropped)} dropped (quote not found in "
                "the cited piece, or no such piece; not shown as evidence)")
        out.say(f"numbers: {len(res.numbers_matched)} match the steps' outputs"
                + (f"; {len(res.numbers_unmatched)} do not ({', '.join(res.numbers_unmatched)})"
                   if res.numbers_unmatched else ""))
        if res.unsupported:
            out.say(f"warning: unsupported answer: {res.unsupported}; do not take it as a finding")
        out.say("written: " + ", ".join(str(p) for p in res.paths))
        exit_if_failed(res.llm, out.say, "ask")
        if res.incomplete:
            unusable = [r for r in res.incomplete if r.startswith("the plan was still unusable")]
            # the plans are cached: the same question replays the same unusable plans
            advice = ("Rerunning the same question replays the same (cached) plans: ask it in other words, "
                      "e.g. naming the column or kind of piece to use." if len(unusable) == len(res.incomplete)
                      else "Rerun to continue (answered calls are cached).")
            out.say("ask: incomplete: " + "; ".join(res.incomplete) + ". " + advice)
            raise typer.Exit(INCOMPLETE_EXIT)
