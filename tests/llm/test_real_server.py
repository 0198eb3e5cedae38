"""The openai backend against a real OpenAI-compatible server, not our fake: llama-cpp-
python's own server (FastAPI on uvicorn) serving the embedded model on 127.0.0.1. It
checks that the backend's one send path (aiohttp, configured by the SDK) gets valid
features for a real piece from a server we did not write (``slow``; CI runs it)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from featdisco.llm.engine import CallEngine
from featdisco.llm.openai import OpenAILLM
from featdisco.prompts import load_prompt
from featdisco.stages.featurize import FeaturizeConfig, build_requests

pytestmark = pytest.mark.slow


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run `make test-slow`, which installs it)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if importlib.util.find_spec("llama_cpp") is None or \
            importlib.util.find_spec("uvicorn") is None or \
            importlib.util.find_spec("fastapi") is None:
        _skip_or_fail("llama-cpp-python's server is not installed "
                      "(pip install 'featdisco[local-server]')")
    from featdisco.errors import FeatdiscoError
    from featdisco.llm.local.install import ensure_model

    try:
        model = ensure_model()
    except FeatdiscoError as exc:
        _skip_or_fail(str(exc))
    port = _free_port()
    log = (tmp_path_factory.mktemp("llama-server") / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "4096", "--model_alias", "qwen-local"],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama-cpp-python's server did not start: "
                            f"{Path(log.name).read_text()[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_the_send_path_gets_valid_features_from_a_real_server(
        llama_server: str, shared_data: Path) -> None:
    answers = [json.loads(line)["choices"][0]["turns"][0] for line in
               (shared_data / "mt_bench" / "model_answer" / "gpt-4.jsonl").open(encoding="utf-8")]
    piece = min(answers, key=lambda a: abs(len(a) - 500))
    cfg = FeaturizeConfig(min_features=3, max_features=6, evidence=False)  # plain features: the v1 shape
    [req], _ = build_requests([piece], ["response"], load_prompt("featurize", version=1), cfg)
    assert req.schema is not None
    # llama-cpp-python's server takes response_format json_object (with the schema in the
    # prompt), not json_schema: the documented json_mode for such servers
    backend = OpenAILLM("qwen-local", base_url=llama_server, api_key="sk-local",
                        json_mode="object", timeout=300)
    engine = CallEngine(backend, None, concurrency=1, timeout=300, progress="none")
    [res] = engine.run_sync([req])
    assert res.status == "ok", (res.reason, res.message)
    jsonschema.validate(res.data, req.schema)
    assert all(f.strip() for f in res.data["features"])
    assert res.usage.input_tokens > 100 and res.usage.output_tokens > 5
