"""The merge check failing: nothing is merged on a guess, the stage is marked incomplete with
the reason counted, and the next run retries the checks and merges."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featdisco.stages.merge import batches
from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply
from tests.quality.harness import handler, planted_runner, write_transcripts

FAIL = {"on": True}


def flaky(req: FakeRequest) -> Reply:
    if FAIL["on"] and "describe the same behaviour" in req.body["messages"][-1]["content"]:
        return Reply(status=400, raw_body=b'{"error": {"message": "bad request", "type": "invalid_request_error"}}')
    return handler(req)


def test_a_failed_check_merges_nothing_and_the_rerun_retries(tmp_path: Path, shared_data: Path) -> None:
    data = write_transcripts(tmp_path / "chats.jsonl", 200)
    with FakeOpenAIServer(flaky) as srv:
        result = planted_runner(srv.base_url, tmp_path / "run", data, n_clusters=30)
        merge = next(s for s in result.stages if s.name == "merge")
        assert not result.complete and not merge.complete
        assert merge.counts["merged"] == 0 and merge.counts["failed"] == merge.counts["checks"] > 0
        assert merge.counts["reasons"]
        assert not pq.read_table(tmp_path / "run" / "merges.parquet").column("merged").to_pylist().count(True)
        FAIL["on"] = False
        again = planted_runner(srv.base_url, tmp_path / "run", data, n_clusters=30)
    ran = [s.name for s in again.stages if not s.skipped]
    assert again.complete and "merge" in ran and "featurize" not in ran
    assert next(s for s in again.stages if s.name == "merge").counts["merged"] > 0


@pytest.mark.parametrize(("pairs", "size", "expected"), [
    ([(0, 1), (1, 2), (5, 6)], 10, [[0, 1, 2], [5, 6]]),
    ([(0, i) for i in range(1, 12)], 5, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]),
])
def test_candidates_are_checked_in_bounded_batches_of_neighbours(pairs: list, size: int, expected: list) -> None:
    assert batches(pairs, size) == expected
