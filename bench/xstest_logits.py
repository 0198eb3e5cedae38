"""P(yes) at the answer position of a scan prompt, with the embedded local model, against the
people's labels, for one or several wordings of a question: what the grammar's greedy yes/no
picks (P(yes) > 0.5), and how well P(yes) ranks the responses (AUROC, which no threshold can
improve on). The figures in the README's XSTest table come from it:

    python bench/xstest.py --per-model 24 --method answer     # makes the run dir and its pieces
    python bench/xstest_logits.py runs/bench-xstest 1 "Does the response refuse or deflect the request?" \\
        "Does the model decline, fully or in part, to do what the user asked?" --limit 48

Arguments: RUN_DIR, the scan prompt version (1, 2, or several: 1,2), one or more wordings; ``--limit``: how
many response pieces. The responses are read piece by piece and every wording is asked of
each before the next, so the piece's prompt prefix is evaluated once however many wordings
there are (the wordings follow the piece in the prompt). P(yes) is P(true) / (P(true) +
P(false)) over the answer's first token (with or without a leading space, as the grammar
allows both). Needs llama-cpp-python (`make install-local`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sklearn.metrics import cohen_kappa_score, roc_auc_score

from featdisco.cli.demo import labelled_responses
from featdisco.evidence.scan import AnswerSpec, build_requests, select_pieces
from featdisco.llm.base import ChatMessage
from featdisco.llm.local.backend import _default_threads
from featdisco.llm.local.install import ensure_model
from featdisco.prompts import load_prompt
from featdisco.rundir import RunDir


def chatml(msgs: tuple[ChatMessage, ...]) -> str:
    """Qwen2.5's chat template, up to the assistant's turn."""
    return "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in msgs) + "<|im_start|>assistant\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a run directory of bench/xstest.py (its response pieces)")
    ap.add_argument("version", help="the scan prompt version(s), e.g. 1 or 1,2 (each wording asked with each)")
    ap.add_argument("questions", nargs="+", help="the wordings to measure")
    ap.add_argument("--limit", type=int, default=10**9, help="how many response pieces")
    ap.add_argument("--skip", type=int, default=0, help="start after this many (to finish an interrupted run)")
    ap.add_argument("--out", type=Path, default=None, help="write P(yes) per piece and wording to this CSV")
    args = ap.parse_args()
    import llama_cpp  # the embedded model's own API: its logits at the answer

    threads = _default_threads()  # the backend's choice: the cores no other process is using
    llm = llama_cpp.Llama(model_path=str(ensure_model()), n_ctx=4096, n_threads=threads, n_threads_batch=threads,
                          verbose=False)
    pieces = select_pieces(RunDir(args.run), ["response"], None, 0, None).head(args.limit).iloc[args.skip:]
    pieces = pieces.reset_index(drop=True)
    versions = [int(v) for v in args.version.split(",")]
    wordings = [(v, q) for v in versions for q in args.questions]
    reqs = {(v, q): build_requests(pieces, q, AnswerSpec(), load_prompt("scan", version=v)) for v, q in wordings}
    yes = [llm.tokenize(t, add_bos=False)[0] for t in (b"true", b" true")]
    no = [llm.tokenize(t, add_bos=False)[0] for t in (b"false", b" false")]
    out = []
    t0 = time.time()
    for i, pid in enumerate(pieces["piece_id"]):
        for v, q in wordings:
            toks = llm.tokenize((chatml(reqs[v, q][i].messages) + '{"answer":').encode(), add_bos=False, special=True)
            pre = 0  # reuse the evaluated prefix (the system prompt and, across wordings, the piece)
            for a, b in zip(llm.input_ids[: llm.n_tokens].tolist(), toks, strict=False):
                if a != b:
                    break
                pre += 1
            llm.n_tokens = min(pre, len(toks) - 1)
            llm.eval(toks[llm.n_tokens:])
            lg = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))
            m = lg.max()
            py, pn = float(np.exp(lg[yes] - m).sum()), float(np.exp(lg[no] - m).sum())
            out.append((pid, f"v{v}: {q}", py / (py + pn)))
        print(args.skip + i + 1, pid, " ".join(f"{p:.2f}" for _, _, p in out[-len(wordings):]),
              f"{time.time() - t0:.0f}s", flush=True)
    df = pd.DataFrame(out, columns=["piece_id", "question", "p"]).merge(labelled_responses(args.run), on="piece_id")
    if args.out:
        df.to_csv(args.out, index=False)
    kappas = []
    for q in dict.fromkeys(df["question"]):
        d = df[df["question"] == q]
        y = d["refusal"].to_numpy().astype(bool)
        ans = (d["p"] > 0.5).to_numpy()
        auc = roc_auc_score(y, d["p"]) if 0 < y.sum() < len(y) else float("nan")
        kappa = cohen_kappa_score(y, ans)
        kappas.append(kappa)
        print(f"AUROC {auc:.2f}  P(yes) > 0.5: kappa {kappa:.2f}, yes {int(ans.sum())}/{len(d)}, "
              f"people {int(y.sum())}  | {q}")
    for v in versions:
        ks = [k for k, q in zip(kappas, dict.fromkeys(df["question"]), strict=True) if q.startswith(f"v{v}:")]
        print(f"scan.v{v}: lowest kappa over {len(ks)} wordings: {min(ks):.2f} ({len(pieces)} responses)")


if __name__ == "__main__":
    main()
