"""kill -9 in the middle of a run, then rerun: nothing that completed is sent again, and the
result equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from featdisco.llm.cache import CallCache, request_key
from tests.fakes.openai_server import FakeOpenAIServer
from tests.llm.conftest import requests_for

REPO = Path(__file__).resolve().parents[2]
N = 300


def _driver(url: str, cache: Path, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.llm.engine_driver", url, str(cache),
                             str(N), str(out)], cwd=REPO)


def test_kill_9_then_resume(tmp_path: Path) -> None:
    with FakeOpenAIServer(latency=0.02) as fake:
        cache_path = tmp_path / "killed.sqlite"
        proc = _driver(fake.base_url, cache_path, tmp_path / "never.json")
        deadline = time.monotonic() + 60
        while fake.total < N // 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the driver finished before it was killed"
        assert not (tmp_path / "never.json").exists()
        time.sleep(0.1)  # let requests already on the wire land in the counter
        before = dict(fake.hits)

        with CallCache(cache_path) as c:
            texts = [f"piece {i}" for i in range(N)]
            keys = {request_key("openai", "gpt-4o-mini", r): t
                    for r, t in zip(requests_for(texts), texts, strict=True)}
            done = {keys[k] for k, v in c.get_many(keys).items() if v.status == "ok"}
        assert 0 < len(done) < N

        out = tmp_path / "resumed.json"
        assert _driver(fake.base_url, cache_path, out).wait(60) == 0
        after = dict(fake.hits)
        for text in done:  # completed before the kill: not sent again
            assert after[text] == before[text] == 1, text
        for i in range(N):
            assert after.get(f"piece {i}", 0) >= 1
        resent = sum(after.values()) - sum(before.values())
        assert resent == N - len(done)

        fresh_out = tmp_path / "fresh.json"
        assert _driver(fake.base_url, tmp_path / "fresh.sqlite", fresh_out).wait(60) == 0
    resumed = json.loads(out.read_text())
    fresh = json.loads(fresh_out.read_text())
    assert resumed == fresh
    assert all(status == "ok" for _, status, _ in resumed)

