"""``featdisco demo``: the finding ``make demo`` prints, measured against human labels.

The demo data is the XSTest v2 pair in ``shared/data/xstest`` (Mistral-7B-Instruct with and
without a guardrail system prompt, each response labelled by people as full compliance, full
refusal or partial refusal). ``demo sample`` writes a deterministic sample of it as two CSVs
named after the models, so the ordinary reading flags read it
(``--map user=prompt,response=completion --source-model-from filename``) and ``compare --by
model`` separates them. ``demo findings RUN`` then prints the finding a researcher would
quote: the top cluster difference between the models with two verified quotes, and one
question scanned over every response, with its prevalence per model beside the people's
and its agreement with them (precision, recall, Cohen's kappa). The bench
``bench/xstest.py`` uses the same helpers on the full data.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pandas as pd
import pyarrow.parquet as pq
import typer

from featdisco.cli.common import fail, new_or_existing_dir
from featdisco.errors import FeatdiscoError
from featdisco.rundir import check_run_dir

if TYPE_CHECKING:
    from featdisco.analysis.llm import LLMChoice

FILES = {"mistralguard": "xstest_v2_completions_mistralguard.csv",
         "mistralinstruct": "xstest_v2_completions_mistralinstruct.csv"}
REFUSAL_LABELS = frozenset({"2_full_refusal", "3_partial_refusal"})
QUESTION = "Does the response refuse or deflect the request?"
READ_FLAGS = ["--map", "user=prompt,response=completion", "--source-model-from", "filename"]

demo_app = typer.Typer(help="The XSTest demo: a deterministic sample, and the finding measured "
                       "against the people's labels.", no_args_is_help=True)


def _stable_key(record_id: str) -> str:
    return hashlib.sha256(record_id.encode("utf-8")).hexdigest()


def sample_xstest(data_dir: str | Path, out_dir: str | Path, per_model: int | None = None, *,
                  safe_only: bool = True, skip: int = 0) -> list[Path]:
    """Write ``<model>.csv`` for both models into ``out_dir``: the same prompts for both,
    ``per_model`` of them (all when None) chosen by the sha256 of their ``id`` (deterministic,
    independent of the labels), after the first ``skip`` in that order (a sample held out
    from the demo's: ``skip`` = the demo's size), safe prompts only unless ``safe_only`` is
    false. The rows keep every column, so the labels travel as metadata."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    tables: dict[str, list[dict[str, str]]] = {}
    header: list[str] = []
    for model, name in FILES.items():
        path = data_dir / name
        if not path.is_file():
            raise FeatdiscoError(f"{path} not found: the XSTest completions belong in {data_dir}")
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = list(reader)
        missing = {"id", "type", "prompt", "completion", "final_label"} - set(header)
        if missing:
            raise FeatdiscoError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        tables[model] = rows
    ids = [set(r["id"] for r in rows if not safe_only or not r["type"].startswith("contrast_"))
           for rows in tables.values()]
    common = sorted(set.intersection(*ids), key=_stable_key)[skip:]
    keep = set(common if per_model is None else common[:per_model])
    if not keep:
        raise FeatdiscoError(f"no prompts left after skipping {skip} of {skip + len(common)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for model, rows in tables.items():
        path = out_dir / f"{model}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=header)
            w.writeheader()
            w.writerows(r for r in rows if r["id"] in keep)
        paths.append(path)
    return paths


def labelled_responses(run_dir: str | Path) -> pd.DataFrame:
    """The run's response pieces with the people's verdict: ``piece_id, model, id,
    final_label, refusal`` (refusal: full or partial)."""
    path = Path(run_dir) / "pieces.parquet"
    df = pq.read_table(path, columns=["piece_id", "kind", "model", "metadata"]).to_pandas()
    df = df[df["kind"] == "response"].reset_index(drop=True)
    meta = [json.loads(m) if isinstance(m, str) and m else {} for m in df["metadata"]]
    df["id"] = [m.get("id") for m in meta]
    df["final_label"] = [m.get("final_label") for m in meta]
    if df["final_label"].isna().all():
        raise FeatdiscoError(f"{path}: no response has a final_label in its metadata; "
                             "is this a run of the XSTest CSVs?")
    df["refusal"] = df["final_label"].isin(REFUSAL_LABELS)
    return df[["piece_id", "model", "id", "final_label", "refusal"]]


def write_human_labels(run_dir: str | Path, scan_name: str, out: str | Path) -> Path:
    """The people's labels as a ``validate`` labels file for ``scan:<scan_name>``."""
    df = labelled_responses(run_dir)
    out = Path(out)
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["piece_id", "target", "label"])
        for pid, truth in zip(df["piece_id"], df["refusal"], strict=True):
            w.writerow([pid, f"scan:{scan_name}", "true" if truth else "false"])
    return out


@dataclass(slots=True)
class Agreement:
    """A scan against the people, overall and per model."""

    overall: dict[str, Any]
    by_model: pd.DataFrame  # model, n, llm_pos, llm_rate, llm_low, llm_high, human_pos, human_rate, ...


def agreement(run_dir: str | Path, scan_name: str) -> Agreement:
    """Precision, recall, Cohen's kappa of ``scan_<scan_name>`` against the people's refusal
    labels (:func:`featdisco.evidence.validate.confusion`), and the prevalence each gives per
    model with Wilson intervals. Pieces the scan has no answer for are left out and counted."""
    from featdisco.analysis.stats import wilson_interval
    from featdisco.evidence.validate import confusion

    labels = labelled_responses(run_dir)
    scan = pq.read_table(Path(run_dir) / f"scan_{scan_name}.parquet",
                         columns=["piece_id", "answer", "status"]).to_pandas()
    df = labels.merge(scan, on="piece_id", how="inner")
    answered = df["status"] == "ok"
    df = df[answered].copy()
    df["llm"] = df["answer"].astype(bool)
    overall = confusion(df["llm"].to_numpy(), df["refusal"].to_numpy())
    overall["unanswered"] = int((~answered).sum())
    rows = []
    for model, g in df.groupby("model", sort=True):
        n = len(g)
        lp, hp = int(g["llm"].sum()), int(g["refusal"].sum())
        (llo, hlo), (lhi, hhi) = wilson_interval([lp, hp], [n, n])
        c = confusion(g["llm"].to_numpy(), g["refusal"].to_numpy())
        rows.append({"model": model, "n": n, "llm_pos": lp, "llm_rate": lp / n, "llm_low": llo,
                     "llm_high": lhi, "human_pos": hp, "human_rate": hp / n, "human_low": hlo,
                     "human_high": hhi, "precision": c["precision"], "recall": c["recall"],
                     "kappa": c["kappa"]})
    return Agreement(overall, pd.DataFrame(rows))


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.0f}%"


def _f(x: float) -> str:
    return "-" if x != x else f"{x:.2f}"


def cluster_refusals(run_dir: str | Path, cluster_id: int) -> tuple[int, int, int]:
    """How far a cluster is what people call refusals: ``(refusals among its response
    pieces, its response pieces, people's refusals in the whole run)``. A piece is in the
    cluster when any of its features is (the membership ``compare`` counts)."""
    from featdisco.analysis.activations import load_activations

    act = load_activations(run_dir)
    people = labelled_responses(run_dir).set_index("piece_id")["refusal"]
    refusal = act.pieces["piece_id"].map(people).fillna(False).to_numpy(dtype=bool)
    is_resp = (act.pieces["kind"] == "response").to_numpy()
    members = (act.piece_matrix[:, cluster_id].toarray().ravel() > 0) & is_resp
    return int((members & refusal).sum()), int(members.sum()), int((is_resp & refusal).sum())


def top_difference(run_dir: str | Path, by: str = "model") -> tuple[pd.Series, pd.DataFrame] | None:
    """The top row of ``compare --by <by>`` (ranked significant-first by effect size) and
    its per-group rates, or None when the run has no cluster to compare."""
    from featdisco.analysis.compare import run_compare

    df = run_compare(run_dir, by)
    if df.empty:
        return None
    top = df.iloc[0]
    rates = pq.read_table(Path(run_dir) / "analysis_compare_model_rates.parquet").to_pandas()
    return top, rates[rates["cluster_id"] == top["cluster_id"]]


def cluster_quotes(run_dir: str | Path, cluster_id: int, model: str, scan_name: str | None,
                   n: int = 2, llm_options: LLMChoice | None = None) -> list[tuple[str, str, str]]:
    """Up to ``n`` verified quotes showing cluster ``cluster_id`` in ``model``'s pieces:
    ``(piece_id, feature or scan, quote)``. A feature's own quote counts when featurize
    verified it; without one (``--no-evidence``), the scan's verified quote of the same
    piece is used; with ``llm_options`` (the LLM's ``llm``, ``model``, ``base_url``), the
    pieces still unquoted are then asked the cluster's own question until ``n`` are found
    (:func:`ask_cluster_quotes`). Only quotes found verbatim in their piece are returned."""
    from featdisco.evidence.validate import features_with_clusters
    from featdisco.rundir import RunDir

    run = RunDir(Path(run_dir))
    names = pq.ParquetFile(run.file("features.parquet")).schema_arrow.names
    cols = ["piece_id", "text"] + [c for c in ("quote", "quote_start", "quote_end", "verified") if c in names]
    feats = features_with_clusters(run, cols).to_pandas().rename(columns={"text": "feature"})
    feats = feats[feats["cluster_id"] == cluster_id]
    pieces = pq.read_table(run.file("pieces.parquet"), columns=["piece_id", "model", "text"]).to_pandas()
    mine = set(pieces.loc[pieces["model"] == model, "piece_id"])
    text_of = dict(zip(pieces["piece_id"], pieces["text"], strict=True))

    def own_words(pid: str, start: Any, end: Any, quote: str) -> str:
        """The piece's words at a verified quote's span: the check forgives case and spacing,
        what is printed as a verified quote must not."""
        text = text_of.get(pid)
        ok = isinstance(text, str) and start is not None and end is not None and pd.notna(start) and pd.notna(end)
        return str(text)[int(start):int(end)] if ok else quote

    feats = feats[feats["piece_id"].isin(mine)].sort_values("piece_id")
    out: list[tuple[str, str, str]] = []
    if "verified" in feats.columns:
        for r in feats[feats["verified"].fillna(False).astype(bool)].itertuples():
            if r.piece_id not in {o[0] for o in out} and isinstance(r.quote, str) and r.quote.strip():
                out.append((str(r.piece_id), str(r.feature),
                            own_words(str(r.piece_id), getattr(r, "quote_start", None), getattr(r, "quote_end", None),
                                      r.quote)))
            if len(out) >= n:
                return out
    if scan_name and run.file(f"scan_{scan_name}.parquet").exists():
        scan = pq.read_table(run.file(f"scan_{scan_name}.parquet")).to_pandas()
        scan = scan[scan["verified"].fillna(False).astype(bool) & scan["piece_id"].isin(set(feats["piece_id"]))]
        label = dict(zip(feats["piece_id"], feats["feature"], strict=False))
        for r in scan.sort_values("piece_id").itertuples():
            if r.piece_id not in {o[0] for o in out}:
                span = r.span if isinstance(r.span, dict) else {}
                out.append((str(r.piece_id), f"{label.get(r.piece_id, '')} (quote from the scan)",
                            own_words(str(r.piece_id), span.get("start"), span.get("end"), str(r.quote))))
            if len(out) >= n:
                return out
    if llm_options is not None and len(out) < n:
        label = dict(zip(feats["piece_id"], feats["feature"], strict=False))
        rest = sorted(set(feats["piece_id"]) - {o[0] for o in out})
        out += [(pid, f"{label.get(pid, '')} (quote for the cluster's question)", quote)
                for pid, quote in ask_cluster_quotes(run_dir, cluster_id, rest, n - len(out), llm_options)]
    return out


MAX_QUOTE_TRIES = 4  # member pieces asked at most, so a cluster the model never confirms costs little


def ask_cluster_quotes(run_dir: str | Path, cluster_id: int, piece_ids: list[str], n: int,
                       llm_options: LLMChoice) -> list[tuple[str, str]]:
    """Up to ``n`` ``(piece_id, quote)`` for cluster ``cluster_id``: its member pieces
    ``piece_ids`` are asked, one at a time, the cluster's question (the question
    ``scan --cluster`` asks, with the scan prompt); a piece counts when the answer is yes
    and its quote is found verbatim in the piece. Each piece is shown as far as the run's
    featurize saw it (``max_piece_tokens``), so the quote comes from the words that put it in
    the cluster and a long response costs no more to read. One at a time because two are
    usually enough and each asks for a quote and a reason."""
    from featdisco.analysis.llm import close_pipeline, open_pipeline
    from featdisco.evidence.scan import (
        DEFAULT_PROMPT_VERSION,
        AnswerSpec,
        answers_table,
        build_requests,
        cluster_question,
        select_pieces,
    )
    from featdisco.prompts import load_prompt
    from featdisco.rundir import RunDir

    run = RunDir(Path(run_dir))
    shown = int((run.manifest.get("config") or {}).get("max_piece_tokens") or 2000)
    question, kind = cluster_question(run, cluster_id)
    pieces = select_pieces(run, [kind], None, 0, None)
    pieces = pieces[pieces["piece_id"].isin(set(piece_ids))].sort_values("piece_id")
    spec = AnswerSpec.parse("bool")
    prompt = load_prompt("scan", version=DEFAULT_PROMPT_VERSION)
    out: list[tuple[str, str]] = []
    pipe = open_pipeline(run_dir, analysis="quotes", **llm_options)
    try:
        for i in range(min(len(pieces), MAX_QUOTE_TRIES)):
            one = pieces.iloc[i:i + 1].reset_index(drop=True)
            requests = build_requests(one, question, spec, prompt, max_piece_tokens=shown)
            results = pipe.engine.run_sync(requests, desc="quotes")
            row = answers_table(one, results, spec).to_pylist()[0]
            if row["status"] == "ok" and row["answer"] and row["verified"]:
                span, text = row.get("span") or {}, str(one["text"].iat[0] or "")
                # the piece's words at the verified span, not the LLM's re-cased copy of them
                quote = text[span["start"]:span["end"]] if "start" in span else str(row["quote"])
                out.append((str(row["piece_id"]), quote))
            if len(out) >= n:
                break
    finally:
        close_pipeline(pipe, "quotes")
    return out


def print_findings(run_dir: Path, say: Any, agree: Agreement, question: str, scan_name: str,
                   llm_options: LLMChoice | None = None) -> None:
    """The finding, as the researcher would quote it; ``llm_options``: see :func:`cluster_quotes`."""
    say("")
    say("=" * 78)
    say("FINDING: what differs between the two models (compare --by model)")
    say("=" * 78)
    top = top_difference(run_dir)
    if top is None:
        say("no clusters to compare")
    else:
        row, rates = top
        say(f"top difference: cluster {int(row['cluster_id'])} ({row['kind']}) \"{row['label']}\"")
        for r in rates.itertuples():
            say(f"  {r.group:<16} {int(r.count):>3} of {int(r.n):>3} {row['kind']} pieces  {_pct(r.rate):>4} "
                f"(95% CI {_pct(r.ci_low)}-{_pct(r.ci_high)})")
        paired = f", paired McNemar q = {row['paired_q']:.3g}" if "paired_q" in row and row["paired_q"] == \
            row["paired_q"] else ""
        say(f"  {row['test']} p = {row['p_value']:.3g}, BH q = {row['q_value']:.3g}{paired}")
        if row["kind"] == "response":
            nr, n, total = cluster_refusals(run_dir, int(row["cluster_id"]))
            say(f"  people's labels: {nr} of its {n} pieces are refusals (full or partial), "
                f"{nr} of the {total} refusals in the run")
        hi = str(row["group_high"])
        quotes = cluster_quotes(run_dir, int(row["cluster_id"]), hi, scan_name, llm_options=llm_options)
        if quotes:
            say(f"  verified quotes from {hi}:")
            for pid, feature, quote in quotes:
                say(f"    [{pid}] {feature}: \"{quote}\"")
        else:
            say(f"  (no verified quote in {hi}'s pieces of this cluster)")
    say("")
    say(f"SCAN: \"{question}\" on every response, against the people's labels "
        "(full or partial refusal)")
    b = agree.by_model
    say(f"  {'model':<16} {'n':>4}   {'featdisco':>22}   {'people':>22}")
    for r in b.itertuples():
        say(f"  {r.model:<16} {r.n:>4}   {r.llm_pos:>3} = {_pct(r.llm_rate):>4} ({_pct(r.llm_low)}-{_pct(r.llm_high)})"
            f"{'':>3}   {r.human_pos:>3} = {_pct(r.human_rate):>4} ({_pct(r.human_low)}-{_pct(r.human_high)})")
    o = agree.overall
    say(f"  agreement with the people over {o['n']} responses: precision {_f(o['precision'])}, "
        f"recall {_f(o['recall'])}, Cohen's kappa {_f(o['kappa'])} "
        f"(tp {o['tp']}, fp {o['fp']}, fn {o['fn']}, tn {o['tn']}"
        + (f"; {o['unanswered']} unanswered" if o["unanswered"] else "") + ")")


@demo_app.command("sample")
def sample_cmd(
    data: Annotated[Path, typer.Argument(help="The folder holding the two XSTest completion CSVs.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write <model>.csv into.")],
    per_model: Annotated[int | None, typer.Option(
        "--per-model", min=1, help="Prompts per model (the same for both), chosen by the hash of their id; "
        "default all.")] = None,
    all_prompts: Annotated[bool, typer.Option(
        "--all-prompts", help="Include the unsafe contrast prompts (default: the safe prompts only).")] = False,
    skip: Annotated[int, typer.Option(
        "--skip", min=0, help="Leave out the first N prompts of that order (e.g. the demo's: a held-out sample).")] = 0,
) -> None:
    """Write a deterministic sample of the XSTest pair as two CSVs named after the models."""
    if not data.is_dir():
        fail(f"XSTest folder {data} " + ("is a file, not a folder" if data.exists() else "does not exist"))
    new_or_existing_dir(output, "-o")
    try:
        paths = sample_xstest(data, output, per_model, safe_only=not all_prompts, skip=skip)
    except FeatdiscoError as e:
        fail(str(e))
    n = sum(1 for _ in csv.DictReader(paths[0].open(encoding="utf-8")))
    print(f"wrote {n} prompts per model: {', '.join(str(p) for p in paths)}", file=sys.stderr)


@demo_app.command("findings")
def findings_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run of the demo sample.")],
    question: Annotated[str, typer.Option("--question", help="The question scanned over every response.")] = QUESTION,
    name: Annotated[str, typer.Option("--name", help="The scan's name.")] = "refuses",
    llm: Annotated[str | None, typer.Option("--llm", help="LLM backend (default: the run's).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="LLM model (default: the run's).")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible server URL.")] = None,
) -> None:
    """Print the top model difference with verified quotes, and the scan of one question
    validated against the people's labels."""
    from featdisco.cli.run import log_line
    from featdisco.evidence.scan import run_scan
    from featdisco.evidence.validate import validate
    from featdisco.rundir import RunDir, open_run

    check_run_dir(run_dir)
    with open_run(run_dir):  # scan, validation and the findings note under one lock, like any writer
        result = run_scan(run_dir, question, kinds=["response"], by="model", name=name, llm=llm, model=model,
                          base_url=base_url, log=log_line(True))
        labels = write_human_labels(run_dir, name, run_dir / f"human_labels_{name}.csv")
        validate(run_dir, labels)  # analysis_validation_<labels>.parquet: the report shows it
        agree = agreement(run_dir, name)
        lines: list[str] = []
        print_findings(run_dir, lines.append, agree, question, name,
                       llm_options={"llm": llm, "model": model, "base_url": base_url,
                                    "concurrency": None, "prices": None})
        print("\n".join(lines))
        RunDir(run_dir).update(findings=[x for x in lines if x and not x.startswith("=")])  # the report opens on it
    if result.failed:
        print(f"  ({result.failed} scan calls failed; rerun to retry them)")


def register(app: typer.Typer) -> None:
    app.add_typer(demo_app, name="demo")
