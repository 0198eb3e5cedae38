"""A process that drives the engine, for the kill -9 test: ``python -m
tests.llm.engine_driver BASE_URL CACHE N OUT`` runs N requests and writes the results."""

from __future__ import annotations

import json
import sys

from featdisco.llm.cache import CallCache
from featdisco.llm.engine import CallEngine
from featdisco.llm.openai import OpenAILLM
from tests.llm.conftest import requests_for


def main() -> None:
    base_url, cache_path, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    backend = OpenAILLM("gpt-4o-mini", base_url=base_url, api_key="sk-test", concurrency=8)
    engine = CallEngine(backend, CallCache(cache_path), concurrency=8, progress="none",
                        backoff_base=0.01, seed=0)
    results = engine.run_sync(requests_for([f"piece {i}" for i in range(n)]))
    with open(out, "w") as f:
        json.dump([[r.key, r.status, r.data] for r in results], f)


if __name__ == "__main__":
    main()
