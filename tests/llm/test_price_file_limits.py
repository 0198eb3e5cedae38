"""A price file with a NaN, negative, infinite or absurd price is refused, naming the file
and the entry: such a price made every cost NaN or inf, and ``--max-cost`` (a comparison
with the cost so far) then never stopped anything."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from featdisco.cli import main
from featdisco.errors import FeatdiscoError
from featdisco.llm.base import Usage
from featdisco.llm.prices import PriceTable


@pytest.mark.parametrize(("text", "suffix", "side", "why"), [
    ('{"my-model": {"input": NaN, "output": 1}}', ".json", "input", "is not a number"),
    ('{"my-model": {"input": 0.5, "output": -2}}', ".json", "output", "is negative"),
    ('{"my-model": [1e999, 1]}', ".json", "input", "is above"),  # JSON's 1e999 reads as inf
    ('{"my-model": {"input": 1, "output": 1e300}}', ".json", "output", "is above"),
    ('[prices]\n"my-model" = { input = nan, output = 1 }\n', ".toml", "input", "is not a number"),
    ('[prices]\n"my-model" = { input = 1, output = inf }\n', ".toml", "output", "is above"),
])
def test_bad_prices_are_refused_naming_file_and_entry(tmp_path: Path, text: str, suffix: str, side: str,
                                                      why: str) -> None:
    path = tmp_path / f"prices{suffix}"
    path.write_text(text)
    with pytest.raises(FeatdiscoError) as e:
        PriceTable.for_run(path)
    msg = str(e.value)
    assert msg.startswith(f"price file {path}: the {side} price of 'my-model'") and why in msg, msg


def test_good_prices_still_price_and_zero_is_free(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"my-model": {"input": 0, "output": 2.5}}))
    table = PriceTable.for_run(path)
    assert table.cost("openai", "my-model", Usage(1_000_000, 2_000_000)) == pytest.approx(5.0)


def test_run_with_a_nan_price_exits_2_before_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text('{"my-model": {"input": NaN, "output": 1}}')
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "hi"},
                                                         {"role": "assistant", "content": "hello"}]}) + "\n")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setattr(sys, "argv", ["featdisco", "run", str(chats), "--run-dir", str(tmp_path / "r"),
                                      "--llm", "openai", "--model", "my-model", "--base-url", "http://127.0.0.1:9/v1",
                                      "--prices", str(prices), "--max-cost", "1"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0
    assert f"price file {prices}: the input price of 'my-model' (nan) is not a number" in err
    assert not (tmp_path / "r").exists()


def test_a_price_pipe_is_refused_saying_why(tmp_path: Path) -> None:
    """`--prices <(…)` is a pipe the run could read once; the run keeps the path and later
    commands read it again, so it is refused with the reason (it said the file did not exist,
    under a /proc path the user never typed)."""
    import os

    fifo = tmp_path / "prices.fifo"
    os.mkfifo(fifo)
    with pytest.raises(FeatdiscoError) as e:
        PriceTable.for_run(fifo)
    assert str(e.value).startswith(f"price file {fifo} is not a regular file")
    assert "save the prices to a file" in str(e.value)
