"""Discovery quality on planted behaviours (issue 15): real hh-rlhf chats with behaviours
planted into their text, the scripted rater of ``tests/quality/harness.py`` over the fake
OpenAI server, the real embedder (the default, minilm-q8, unless --embedder). Prints, per
planted behaviour, the share of its features in its largest cluster, NMI over planted features, the planted link's probe F1 and
the share of duplicate labels per kind.

    python bench/quality.py [--transcripts 800] [--clusters N] [--keep DIR] [--embedder static]

A static recipe other than the default: ``--embedder 'static(pca_dims=null)'`` (options as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402
from tests.quality.harness import handler, measure, planted_runner, write_transcripts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--transcripts", type=int, default=800)
    ap.add_argument("--clusters", type=int, default=None, help="k per kind (default: the automatic rule)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run in this folder")
    ap.add_argument("--embedder", default=None, help="minilm-q8 (the default), minilm, static, st:PATH, api:MODEL")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                    help="a PipelineConfig field, e.g. --set merge=false")
    args = ap.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    tmp = Path(tempfile.mkdtemp(prefix="featdisco-quality-"))
    run_dir = args.keep or tmp / "run"
    data = write_transcripts(tmp / "chats.jsonl", args.transcripts)
    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.embedder:
        from bench.embed import parse_spec, use_static_recipe

        kind, opts = parse_spec(args.embedder)
        if opts and kind != "static":
            raise SystemExit("options are supported for the static embedder only")
        if opts:
            use_static_recipe(opts)
        extra["embedder"] = kind
    with FakeOpenAIServer(handler) as srv:
        t0 = time.perf_counter()
        result = planted_runner(srv.base_url, run_dir, data, n_clusters=args.clusters, **extra)
        counts = {s.name: s.counts for s in result.stages if s.name in ("cluster", "merge")}
        manifest = json.loads((run_dir / "manifest.json").read_text())
        stage_s = {k: round(v["seconds"], 2) for k, v in manifest["stages"].items()}
        print(json.dumps({"seconds": round(time.perf_counter() - t0, 1), "embedder": manifest["config"].get("embedder"),
                          "stage_seconds": stage_s, "stages": counts}, default=str))
        print(json.dumps(measure(run_dir), indent=1))


if __name__ == "__main__":
    main()
