"""The Ray executor: featurize and embed as Ray Data maps over shards; the driver keeps the
caches.

Workers build their own LLM backend / embedder from the run's config (a live client or an
ONNX session cannot travel), answer a shard, and *return* results; the driver writes them
into the run's SQLite caches as each shard's output streams back. Why the driver writes:

* the caches are local SQLite files in the run directory; on a multi-node cluster a worker
  has no access to them, and SQLite over a network file system is not safe to share;
* one writer means no lock contention, and the caches stay exactly what a local run writes
  (same keys, same rows), so local and Ray runs resume each other;
* results stream back shard by shard (``iter_rows``/``iter_batches``), so a killed run loses
  only the shards in flight, as a killed local run loses only the calls in flight.

Results equal a local run's: LLM shards run the same :class:`CallEngine` (retries, repair,
validation) with no cache of their own, and embedding shards are the very batches, in the
same order and of the same size, that :func:`embed_into` would embed locally, so even
padding is identical. Clustering stays on the driver (it needs every vector at once).
"""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, Unpack

import numpy as np
import orjson

from featdisco.embedders.base import check_output
from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMBackend, LLMRequest, Usage
from featdisco.llm.batch.fill import FillingEngine
from featdisco.llm.cache import CallCache
from featdisco.llm.engine import CallEngine, CallResult, EngineOptions, Status
from featdisco.stages.embed import RowSink, fill_from_cache, length_order
from featdisco.storage.embed_cache import EmbeddingCache, text_key

# Backend choice the workers need, passed through Ray's runtime_env. API keys are NOT:
# Ray writes runtime_env to its session logs, and a key must never reach a file. Workers
# of a local Ray inherit the driver's environment; on a cluster, set the key on the nodes.
FORWARDED_ENV = ("FEATDISCO_LLM", "FEATDISCO_MODEL", "FEATDISCO_BASE_URL")
SHARD_REQUESTS = 512  # requests per featurize shard: big enough to keep a worker's pool busy
EMBED_BATCH = 256  # as embed_into's default, so batches match a local run's


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise FeatdiscoError("--executor ray needs Ray: pip install 'featdisco[ray]'") from e
    return ray


class _Outcome(TypedDict):
    """One call's result as a worker sends it back to the driver (JSON)."""

    status: Status
    text: str | None
    reason: str | None
    message: str | None
    attempts: int
    data: Any  # the reply's JSON, checked against its schema
    usage: list[int]  # [input tokens, output tokens]


class _ShardOut(TypedDict):
    key: list[str]
    result: list[bytes]  # one JSON _Outcome per key


class _EmbedRow(TypedDict):
    idx: list[int]  # rows of the output matrix
    texts: list[str]


class _EmbedOut(TypedDict):
    idx: list[int]
    vectors: bytes  # float32, len(idx) x dim


def _remote_args() -> dict[str, dict[str, dict[str, str]]]:
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    return {"runtime_env": {"env_vars": env}} if env else {}


class _Featurizer:
    """A Ray actor: one backend and one cache-less engine, answering shards of requests."""

    def __init__(self, make_backend: Callable[[], LLMBackend], options: EngineOptions) -> None:
        quiet: EngineOptions = {**options, "progress": "none"}  # the driver shows progress
        self.engine = CallEngine(make_backend(), None, **quiet)

    def __call__(self, batch: dict[str, np.ndarray]) -> _ShardOut:
        requests = [pickle.loads(b) for b in batch["request"]]
        results = self.engine.run_sync(requests)
        return {"key": [r.key for r in results],
                "result": [orjson.dumps(_Outcome(
                    status=r.status, text=r.text, reason=r.reason,
                    message=r.message, attempts=r.attempts, data=r.data,
                    usage=[r.usage.input_tokens, r.usage.output_tokens])) for r in results]}


class RayEngine(FillingEngine):
    """Answers uncached requests on Ray actors; the driver stores every result."""

    def __init__(self, backend: LLMBackend, cache: CallCache, *,
                 make_backend: Callable[[], LLMBackend], workers: int | None = None,
                 shard_requests: int | None = None, **options: Unpack[EngineOptions]) -> None:
        super().__init__(backend, cache, **options)
        self._make_backend = make_backend
        self._workers = workers
        self._shard = shard_requests or SHARD_REQUESTS
        # Each actor gets an even share of the run's concurrency (and of its limits).
        self._worker_options = EngineOptions()
        for k in ("timeout", "seed", "max_retries"):
            if k in options:
                self._worker_options[k] = options[k]
        self._concurrency = options.get("concurrency", 64)

    async def _fill(self, todo: Mapping[str, LLMRequest]) -> dict[str, CallResult]:
        ray = _ray()
        assert self.cache is not None
        if (self.max_cost is not None or self.budget is not None or self._rpm is not None
                or self._tpm is not None):
            raise FeatdiscoError("--max-cost, a run's --budget, --rpm and --tpm are enforced by one "
                                 "process; use them with --executor local")
        workers = self._workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        per = max(1, -(-self._concurrency // workers))
        items = [{"request": pickle.dumps(r)} for r in todo.values()]
        ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // self._shard)))
        worker_options: EngineOptions = {**self._worker_options, "concurrency": per}
        out = ds.map_batches(
            _Featurizer, batch_size=self._shard, compute=ray.data.ActorPoolStrategy(size=workers),
            fn_constructor_kwargs={"make_backend": self._make_backend, "options": worker_options},
            num_cpus=0.25, **_remote_args())
        fresh: dict[str, CallResult] = {}
        name, model = self.backend.name, self.backend.model
        try:
            for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
                for key, blob in zip(batch["key"], batch["result"], strict=True):
                    r: _Outcome = orjson.loads(blob)
                    usage = Usage(*r["usage"])
                    k = str(key)
                    request = todo[k]
                    cost = self.prices.cost(name, model, usage)
                    if r["status"] == "ok":
                        self.cache.put_ok(k, name, model, request.prompt_version, r["text"] or "",
                                          r["data"], usage, r["attempts"], cost=cost)
                    else:
                        self.cache.put_failed(k, name, model, request.prompt_version,
                                              r["reason"] or "unknown", r["message"] or "",
                                              r["attempts"], usage, r["text"], cost=cost)
                    res = CallResult(k, r["status"], data=r["data"], text=r["text"],
                                     reason=r["reason"], message=r["message"], usage=usage,
                                     cost=cost, attempts=r["attempts"])
                    fresh[k] = res
                    self.progress.advance(failed=not res.ok, tokens=usage.input_tokens
                                          + usage.output_tokens, cost=cost)
                self.cache.flush()
        except Exception as e:
            if "FeatdiscoError" in type(e).__name__ or "FeatdiscoError" in str(e):
                raise FeatdiscoError(f"a Ray worker stopped the run: {str(e)[-500:]}") from e
            raise
        return fresh


class _EmbedShard:
    """A Ray actor holding one embedder; embeds whole local-sized batches."""

    def __init__(self, spec: str | None, expect: str) -> None:
        from featdisco.embedders import make_embedder

        self.embedder = make_embedder(spec)
        if self.embedder.name != expect:
            raise FeatdiscoError(f"the Ray worker built embedder {self.embedder.name!r}, the "
                                 f"driver uses {expect!r}")

    def __call__(self, row: _EmbedRow) -> _EmbedOut:
        texts = list(row["texts"])
        x = check_output(np.asarray(self.embedder.embed(texts)), len(texts),
                         int(self.embedder.dim), self.embedder.name)
        return {"idx": row["idx"], "vectors": np.ascontiguousarray(x, np.float32).tobytes()}


class RayExecutor:
    """Featurize and embed on a Ray cluster: ``RAY_ADDRESS`` (or an earlier ``ray.init``)
    picks it; with neither, Ray starts one on this machine."""

    name = "ray"

    def __init__(self, workers: int | None = None) -> None:
        ray = _ray()
        if not ray.is_initialized():
            ray.init(logging_level="WARNING", log_to_driver=False)
        self.workers = workers

    def make_engine(self, backend: LLMBackend, cache: CallCache, cfg: Any,
                    options: EngineOptions) -> CallEngine:
        from featdisco.llm.registry import make_llm

        factory = functools.partial(make_llm, cfg.llm, cfg.model, cfg.base_url,
                                    concurrency=cfg.concurrency, timeout=cfg.timeout)
        return RayEngine(backend, cache, make_backend=factory, workers=self.workers, **options)

    def _n(self) -> int:
        return self.workers or max(1, int(_ray().cluster_resources().get("CPU", 1)))

    def _embed_resources(self, spec: str | None) -> dict[str, object]:
        """One embedding actor per CPU; for a sentence-transformers model on a cluster with
        GPUs, one per GPU instead (torch picks the device Ray assigns). The default ONNX
        MiniLM runs on CPU only, so it never holds a GPU."""
        ray = _ray()
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus and (spec or "").startswith("st:"):
            n = min(self.workers or gpus, gpus)
            return {"compute": ray.data.ActorPoolStrategy(size=n), "num_gpus": 1}
        return {"compute": ray.data.ActorPoolStrategy(size=self._n()), "num_cpus": 1}

    def embed(self, strings: Sequence[str], embedder: Any, cache: EmbeddingCache | None,
              cfg: Any, out: RowSink) -> None:
        """Like :func:`embed_into` on distinct ``strings``: cached rows from the cache, the
        rest embedded on Ray in the batches a local run would use."""
        ray = _ray()
        dim, name = int(embedder.dim), embedder.name
        if len(set(strings)) != len(strings):
            raise ValueError("RayExecutor.embed expects distinct strings")
        keys = [text_key(t) for t in strings]
        missing = fill_from_cache(cache, name, dim, keys, out)
        if len(missing) == 0:
            return
        order = length_order(embedder, strings, missing)
        rows_in = [_EmbedRow(idx=order[s:s + EMBED_BATCH].tolist(),
                             texts=[strings[int(i)] for i in order[s:s + EMBED_BATCH]])
                   for s in range(0, len(order), EMBED_BATCH)]
        ds = ray.data.from_items(rows_in, override_num_blocks=min(len(rows_in), 4 * self._n()))
        result = ds.map(_EmbedShard, fn_constructor_kwargs={"spec": cfg.embedder, "expect": name},
                        **self._embed_resources(cfg.embedder))
        for row in result.iter_rows():
            idx = np.asarray(row["idx"], dtype=np.int64)
            x = np.frombuffer(row["vectors"], dtype=np.float32).reshape(len(idx), dim)
            out.write(idx, x)
            if cache is not None:
                cache.put(name, [keys[i] for i in idx], x)
