"""A small real run for report tests, with hostile text planted where an LLM or a user
could put it: transcript text, cluster labels, descriptions and rating reasons.

The run goes through the real pipeline (split, featurize, embed, cluster, name, rate) over
HTTP against the fake OpenAI server; only the scripted answers carry the payloads.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from featdisco.pipeline import Pipeline, PipelineConfig
from tests.conftest import copy_mt_bench, reasoning_chats, write_jsonl
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply
from tests.pipeline_fakes import pipeline_handler

# Each payload sets window.__xss if it ever runs.
SCRIPT = "<script>window.__xss='script'</script>"
IMG = "<img src=x onerror=\"window.__xss='img'\">"
JS_LINK = "javascript:window.__xss='link'"
PAYLOADS = (SCRIPT, IMG, JS_LINK)


def hostile_handler(req: FakeRequest) -> Reply:
    """The pipeline's scripted rater, with payloads in every label and description, and the
    first cluster of each rating batch flagged private."""
    reply = pipeline_handler(req)
    user = next((m["content"] for m in reversed(req.body.get("messages", []))
                 if m.get("role") == "user"), "")
    if reply.content is None:
        return reply
    data = json.loads(reply.content)
    if "label" in data:
        data["label"] = f"{data['label']} {IMG}"
        data["description"] = f"{data['description']} {SCRIPT} [x]({JS_LINK})"
    elif "ratings" in data:
        for r in data["ratings"]:
            r["reason"] = f"{r['reason']} {SCRIPT}."
        if "For every cluster give" in user and re.search(r"^1\. label: .*sadness", user, re.M):
            data["ratings"][0]["private"] = True
            data["ratings"][0]["private_reason"] = f"a user's home address {SCRIPT}"
    return Reply(content=json.dumps(data))


def write_inputs(root: Path, shared_data: Path) -> Path:
    """Real MT-bench answers of two models to 6 questions, plus transcripts with thoughts,
    some carrying payloads in user, thought and response text."""
    copy_mt_bench(root, shared_data, 6)
    write_jsonl(root / "reasoning.jsonl", reasoning_chats(
        9, user=lambda i: f"Question {i} about topic {i * 7}. {PAYLOADS[i % 3]}",
        thought=lambda i: f"Let me think about topic {i * 7} {SCRIPT} step {i}.",
        answer=lambda i: f"Answer {i}. {IMG} see {JS_LINK}"))
    return root


def build_run(root: Path, shared_data: Path) -> Path:
    """Fit a run in ``root/run`` and return its directory."""
    inputs = write_inputs(root / "inputs", shared_data)
    os.environ.setdefault("OPENAI_API_KEY", "sk-test-not-a-real-key")
    run_dir = root / "run"
    with FakeOpenAIServer(hostile_handler) as server:
        cfg = PipelineConfig(llm="openai", model="fake-rater", base_url=server.base_url,
                             n_clusters=3, concurrency=8)
        result = Pipeline(run_dir, cfg).run([inputs])
    assert result.complete
    return run_dir
