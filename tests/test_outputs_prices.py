"""Issue 16 item 2: --prices FILE / FEATDISCO_PRICES price any model (a vLLM, Ollama or
OpenRouter name), so that cost is known and --max-cost works; the manifest records the price."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from featdisco.cli import app
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import fake_api_key, pipeline_server  # noqa: F401  (fixtures: api_key, server)
from tests.test_pipeline import K, inputs  # noqa: F401  (fixtures)

MODEL = "my-org/my-vllm-model"


def test_a_price_file_prices_any_model_and_the_manifest_records_it(
        server: FakeOpenAIServer, inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    prices = tmp_path / "prices.toml"
    prices.write_text(f'[prices]\n"{MODEL}" = {{ input = 0.5, output = 1.5 }}\n')
    run_dir = tmp_path / "run"
    args = ["run", str(inputs), "--run-dir", str(run_dir), "--llm", "openai", "--model", MODEL,
            "--base-url", server.base_url, "--clusters", str(K), "--max-cost", "5"]
    without = CliRunner().invoke(app, args)
    assert "no price is known for model" in str(without.exception)  # the cap cannot be enforced
    assert "--prices FILE" in str(without.exception)  # and it says how to give one
    done = CliRunner().invoke(app, [*args, "--prices", str(prices)])
    assert done.exit_code == 0, done.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["prices"] == {"model": MODEL, "input": 0.5, "output": 1.5, "source": str(prices.resolve())}
    total = manifest["llm_totals"]
    expected = (total["input_tokens"] * 0.5 + total["output_tokens"] * 1.5) / 1e6
    assert total["cost_usd"] is not None and abs(total["cost_usd"] - expected) < 1e-9

    # the environment variable does the same for the LLM analyses
    score = CliRunner().invoke(app, ["score-labels", str(run_dir), "--clusters", "2", "--json"],
                               env={"FEATDISCO_PRICES": str(prices)})
    assert score.exit_code in (0, 3), score.output
    after = json.loads((run_dir / "manifest.json").read_text())
    assert after["llm_by_analysis"]["label_quality"]["cost_usd"] is not None


def test_a_bad_price_file_stops_before_anything_is_sent(server: FakeOpenAIServer, inputs: Path,  # noqa: F811
                                                        tmp_path: Path) -> None:
    bad = tmp_path / "prices.json"
    bad.write_text('{"m": "cheap"}')
    before = server.total
    result = CliRunner().invoke(app, ["run", str(inputs), "--run-dir", str(tmp_path / "r"), "--llm", "openai",
                                      "--model", MODEL, "--base-url", server.base_url, "--prices", str(bad)])
    assert "price for 'm'" in str(result.exception) and server.total == before
    assert not (tmp_path / "r").exists()
