"""Shared test helpers: where the real data lives, and writers for fixture files."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FEATDISCO_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data missing at {SHARED_DATA}")
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def write_jsonl(path: Path, records: Iterable[Any], *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def reasoning_chats(n: int, *, user: Callable[[int], str], thought: Callable[[int], str],
                    answer: Callable[[int], str], prefix: str = "r",
                    model: str = "thinker") -> list[dict[str, Any]]:
    """``n`` chat transcripts whose assistant turn is ``<think>thought</think>answer``, so that
    user, thought and response pieces all occur; the callables give record ``i``'s text."""
    return [{"id": f"{prefix}{i}", "model": model, "messages": [
        {"role": "user", "content": user(i)},
        {"role": "assistant", "content": f"<think>{thought(i)}</think>{answer(i)}"}]}
        for i in range(n)]


def copy_mt_bench(root: Path, shared_data: Path, n_questions: int) -> Path:
    """The first ``n_questions`` real MT-bench questions and the gpt-4 and llama-13b answers
    to them, laid out as in the dataset (``root/mt_bench``)."""
    bench = root / "mt_bench"
    (bench / "model_answer").mkdir(parents=True, exist_ok=True)
    questions = (shared_data / "mt_bench" / "question.jsonl").read_text().splitlines()[:n_questions]
    (bench / "question.jsonl").write_text("\n".join(questions) + "\n")
    for model in ("gpt-4", "llama-13b"):
        answers = (shared_data / "mt_bench" / "model_answer" / f"{model}.jsonl").read_text().splitlines()
        (bench / "model_answer" / f"{model}.jsonl").write_text("\n".join(answers[:n_questions]) + "\n")
    return bench


def write_json(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")
    return path



def interactive_sigint() -> None:
    """``preexec_fn`` for a CLI run a test stops with Ctrl-C: SIGINT as a terminal gives it.
    A test process started in the background by a non-interactive shell (``pytest &``)
    has SIGINT ignored, and a child inherits that, so its Ctrl-C would do nothing."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
