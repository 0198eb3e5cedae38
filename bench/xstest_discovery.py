"""Does discovery find the known difference? ``compare --by model`` on a run of XSTest CSVs,
each response cluster beside the people's refusal labels of its pieces.

The issue's check: a cluster that differs between the two models at FDR 0.05 whose pieces
are mostly ones people labelled refusals (full or partial). The run is any ``featdisco run``
of ``featdisco demo sample`` output (the labels travel as piece metadata), e.g. the next 240
safe prompts after the demo's:

    featdisco demo sample ../shared/data/xstest -o runs/heldout-data --per-model 240 --skip 10
    featdisco run runs/heldout-data --map user=prompt,response=completion \\
        --source-model-from filename --llm local --min-features 3 --max-features 5 \\
        --max-piece-tokens 200 --no-evidence --rate-batch 0 --run-dir runs/heldout
    python bench/xstest_discovery.py runs/heldout

Prints every response cluster with q < --show (default 0.5): its per-model counts, p and BH
q, and how many of its pieces people call refusals; then the verdict line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from featdisco.analysis.compare import run_compare  # noqa: E402
from featdisco.cli.demo import cluster_refusals, labelled_responses  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--show", type=float, default=0.5, help="list clusters with q below this")
    args = ap.parse_args()

    df = run_compare(args.run_dir, "model", alpha=args.alpha)
    people = labelled_responses(args.run_dir)
    n_by, ref_by = people.groupby("model").size(), people[people["refusal"]].groupby("model").size()
    print(f"{args.run_dir}: {len(people)} responses; people's refusals: "
          + ", ".join(f"{m} {int(ref_by.get(m, 0))} of {int(n)}" for m, n in n_by.items()))
    print(f"{len(df)} clusters compared ({int((df['kind'] == 'response').sum())} of responses); "
          "BH over all of them")
    print(f"{'id':>4} {'q':>7} {'p':>9}  {'high':>22} {'low':>22}  {'refusals':>10}  label")
    found = []
    total = int(people["refusal"].sum())
    for r in df.itertuples():
        if r.kind != "response" or r.q_value >= args.show:
            continue
        nr, n, total = cluster_refusals(args.run_dir, int(r.cluster_id))
        print(f"{int(r.cluster_id):>4} {r.q_value:7.3g} {r.p_value:9.3g}  "
              f"{r.group_high + ' ' + str(r.count_high) + '/' + str(r.n_high):>22} "
              f"{r.group_low + ' ' + str(r.count_low) + '/' + str(r.n_low):>22}  "
              f"{nr:>3} of {n:<4}  {r.label}")
        if r.q_value < args.alpha and n and nr / n > 0.5:
            found.append((int(r.cluster_id), r.label, nr, n))
    if found:
        for cid, label, nr, n in found:
            print(f"FOUND: cluster {cid} \"{label}\" differs at FDR {args.alpha} and {nr} of its {n} "
                  f"pieces are people's refusals ({nr}/{total} of all refusals)")
    else:
        print(f"NOT FOUND: no response cluster differs at FDR {args.alpha} with most of its pieces "
              "people's refusals")


if __name__ == "__main__":
    main()
