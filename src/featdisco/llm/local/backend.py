"""The embedded local backend: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) in-process via llama-cpp-python.

It exists so featdisco runs offline with no API key. It is demo quality (a 1.5B model at
about 5–12 s per piece on 2 cores), and callers should say so.

Design notes (why):

* One ``llama_cpp.Llama`` context is not thread-safe and CPU generation does not speed up
  by running two at once (they share the same cores), so every call runs on one dedicated
  worker thread, behind a lock. A private single-thread executor is used rather than
  ``asyncio.to_thread`` so that dozens of queued calls do not occupy the default
  executor's threads (which other parts of the program, e.g. the cache, also use).
  :attr:`LocalLLM.max_concurrency` (1) tells the engine there is no point in more.
* When ``request.schema`` is set, output is constrained by a GBNF grammar generated from
  the schema with llama-cpp-python's own converter, then patched: its ``char`` rule is
  ``[^"\\\\]`` which admits raw control characters (a literal newline or tab inside a
  string), making the reply invalid JSON. We exclude U+0000–U+001F and U+007F, as
  upstream llama.cpp's converter now does.
* Greedy decoding (temperature 0, what the stages use) under a grammar runs on
  :class:`_GreedyGrammarSampler`: llama-cpp-python's stock chain runs the grammar over all
  151k candidate tokens at every step (~30 ms a token, a third of decoding here), while
  greedy only needs to know whether the top token is allowed. It asks the grammar about
  that one token and runs the full pass only when it is refused — the same token, as
  llama.cpp's own sampler does it (a slow test checks the outputs are identical).
* A call whose awaiting task is cancelled (the engine's timeout) while still queued is
  dropped without generating; one already generating greedily under a grammar (every
  stage's call) stops at its next token: :class:`_GreedyGrammarSampler` checks the
  cancel flag. Before, it ran to ``max_tokens`` for nobody: on a loaded machine a long
  call (rating) timed out, and each retry queued behind the abandoned generation, so the
  retries spent the run's time. (``create_chat_completion`` takes no stopping criteria,
  and exceptions in llama-cpp-python's own sampling callbacks are swallowed, so other
  calls still run to the end.)
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import LLMError, LLMRequest, LLMResponse, Usage
from featdisco.llm.local.install import LOCAL_MODEL, ensure_model

INSTALL_HINT = (
    "the local LLM backend needs llama-cpp-python: pip install 'featdisco[local]' "
    "(it compiles llama.cpp from source, a few minutes; needs a C/C++ compiler and cmake), "
    "then `featdisco models install`")

DEMO_QUALITY_NOTE = (
    "using the embedded local model (Qwen2.5-Coder-1.5B, CPU): demo quality and slow "
    "(~5-12 s per piece); use --llm openai/anthropic for real runs")

# The string-character rule emitted by llama-cpp-python's json_schema_to_gbnf (and by older
# llama.cpp). Matching its exact text lets us fail loudly if the converter changes shape.
_CHAR_RULE_RE = re.compile(r"^char ::= (?P<body>.*)$", re.MULTILINE)
_SAFE_CHAR_BODY = (
    r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] '
    r"[0-9a-fA-F] [0-9a-fA-F])")
# ``dot`` is used for ``.`` in schema ``pattern``s; it too admitted every control
# character except CR and LF.
_DOT_RULE_RE = re.compile(r"^dot ::= .*$", re.MULTILINE)
_SAFE_DOT_RULE = r"dot ::= [^\x00-\x1F\x7F]"


def _import_llama_cpp() -> Any:
    """Import llama_cpp on first use: it loads a native library and is an optional extra."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise FeatdiscoError(f"{INSTALL_HINT} ({exc})") from exc
    return llama_cpp


def patch_grammar(gbnf: str) -> str:
    """Make a json-schema GBNF grammar reject raw control characters inside JSON strings.

    Raises ``ValueError`` when a ``char`` rule is present but is not the shape we know how to
    patch, rather than silently using an unsafe grammar.
    """
    m = _CHAR_RULE_RE.search(gbnf)
    if m is not None and m.group("body") != _SAFE_CHAR_BODY:
        body = m.group("body")
        if not body.startswith('[^"\\\\] '):
            raise ValueError(f"unexpected char rule in generated grammar: {body!r}")
        gbnf = gbnf[:m.start("body")] + _SAFE_CHAR_BODY + gbnf[m.end("body"):]
    return _DOT_RULE_RE.sub(lambda _: _SAFE_DOT_RULE, gbnf)


def schema_to_grammar(schema: Mapping[str, object]) -> str:
    """GBNF for ``schema`` (llama-cpp-python's converter), with control characters banned."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    _import_llama_cpp()
    return patch_grammar(json_schema_to_gbnf(json.dumps(schema)))


class _GreedyGrammarSampler:
    """The greedy token under a grammar, with the grammar asked about one token per step
    unless it refuses that one. Stands in for llama-cpp-python's ``LlamaSampler`` (its
    ``sample(ctx, idx)`` and ``close()``); the grammar sampler's state advances with every
    accepted token exactly as in the stock chain."""

    def __init__(self, llama_cpp: Any, vocab: Any, grammar: Any, n_vocab: int,
                 cancel: threading.Event | None = None) -> None:
        import numpy as np

        self._c = llama_cpp
        self._np = np
        self._n = n_vocab
        self._grammar = llama_cpp.llama_sampler_init_grammar(
            vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))
        if not self._grammar:
            raise LLMError("bad-schema", "llama.cpp rejected the grammar", retryable=False)
        self._one = (llama_cpp.llama_token_data * 1)()
        self._all: Any = None  # the full candidate array, made on the first refusal
        self._view: Any = None
        self._ids: Any = None
        self.refusals = 0  # steps where the full pass ran
        self._cancel = cancel  # set: the caller stopped waiting, so stop generating

    def _apply(self, data: Any, size: int) -> None:
        arr = self._c.llama_token_data_array(data=data, size=size, selected=-1, sorted=False)
        self._c.llama_sampler_apply(self._grammar, self._c.ctypes.byref(arr))

    def sample(self, ctx: Any, idx: int = -1) -> int:
        if self._cancel is not None and self._cancel.is_set():
            raise _Cancelled
        np = self._np
        logits = np.ctypeslib.as_array(self._c.llama_get_logits_ith(ctx.ctx, idx),
                                       shape=(self._n,))
        token = int(np.argmax(logits))  # the first maximum, as llama.cpp's greedy picks
        one = self._one[0]
        one.id, one.logit, one.p = token, float(logits[token]), 0.0
        self._apply(self._one, 1)
        if one.logit == float("-inf"):  # refused: mask every candidate, take the best left
            self.refusals += 1
            if self._all is None:
                self._all = (self._c.llama_token_data * self._n)()
                self._view = np.frombuffer(self._all, dtype=np.dtype(
                    [("id", np.int32), ("logit", np.float32), ("p", np.float32)]))
                self._ids = np.arange(self._n, dtype=np.int32)
            self._view["id"] = self._ids
            self._view["logit"] = logits
            self._view["p"] = 0.0
            self._apply(self._all, self._n)
            token = int(np.argmax(self._view["logit"]))
            if self._view["logit"][token] == float("-inf"):
                raise LLMError("local-error", "the grammar allows no next token",
                               retryable=False)
        self._c.llama_sampler_accept(self._grammar, token)
        return token

    def close(self) -> None:
        if self._grammar:
            self._c.llama_sampler_free(self._grammar)
            self._grammar = None


def _llama_class(llama_cpp: Any) -> Any:
    """``llama_cpp.Llama`` whose greedy decoding under a grammar uses
    :class:`_GreedyGrammarSampler`; every other sampling set-up is the stock chain."""

    class _Llama(llama_cpp.Llama):
        cancel: threading.Event | None = None  # the current call's; its sampler watches it

        def _init_sampler(self, **kw: Any) -> Any:
            grammar = kw.get("grammar")
            if (grammar is not None and kw.get("temp") == 0.0
                    and not kw.get("logits_processor")
                    and kw.get("repeat_penalty", 1.0) == 1.0
                    and not kw.get("frequency_penalty") and not kw.get("presence_penalty")
                    and hasattr(grammar, "_grammar") and hasattr(grammar, "_root")):
                return _GreedyGrammarSampler(llama_cpp, self._model.vocab, grammar,
                                             self._n_vocab, self.cancel)
            return super()._init_sampler(**kw)

    return _Llama


def _default_threads() -> int:
    """A thread per core that no other process is using right now (at least 1, at most 8).

    Why not simply all of them: ggml's threads meet at a barrier after every graph node, so
    when other work takes a core, a thread that waits for a descheduled peer stalls the
    whole token. Measured on a 2-core machine with a neighbour busy on one core: 71 s per
    piece with 1 thread against 480 s with 2. On the same machine quiet, 2 threads take
    19 s against 31 s with 1. So the cores other processes kept busy over a short sample
    are left to them. Decoding is bound by memory bandwidth, so more than about 8 threads
    gains nothing. ``FEATDISCO_LLM_THREADS`` overrides.
    """
    env = _threads_from_env()
    if env is not None:
        return env
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores - round(_others_busy_cores()), 8))


def _threads_from_env() -> int | None:
    env = os.environ.get("FEATDISCO_LLM_THREADS", "").strip()
    if not env:
        return None
    if not env.isdigit() or int(env) < 1:
        raise FeatdiscoError(f"FEATDISCO_LLM_THREADS must be a positive integer, got {env!r}")
    return int(env)


def _others_busy_cores(window: float = 0.3) -> float:
    """How many cores processes other than this one kept busy over ``window`` seconds
    (Linux ``/proc/stat``; 0 where it cannot tell)."""
    def sample() -> tuple[float, float]:
        with open("/proc/stat", encoding="ascii") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        t = os.times()
        # user nice system idle iowait irq softirq steal: all but idle and iowait is busy
        return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK"), \
            t.user + t.system

    try:
        busy0, own0 = sample()
        time.sleep(window)
        busy1, own1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / window


class _Cancelled(Exception):
    """A queued call whose caller stopped waiting: it is skipped, not generated."""


class LocalLLM:
    """:class:`~featdisco.llm.base.LLMBackend` running the GGUF model in this process.

    ``model_path`` defaults to the installed model (:func:`featdisco.llm.local.install.ensure_model`),
    also when it is the model's id (so ``--llm local --model <id>`` works);
    a missing model or a missing llama-cpp-python is reported at construction, as a
    :class:`FeatdiscoError` naming the command to run. The weights are loaded on the first
    call (or :meth:`load`), so building the backend for a dry run costs nothing.
    """

    name = "local"
    model = LOCAL_MODEL.model_id
    max_concurrency = 1

    def __init__(self, model_path: str | None = None, n_ctx: int = 4096,
                 n_threads: int | None = None) -> None:
        if n_threads is None:
            _threads_from_env()  # a bad FEATDISCO_LLM_THREADS is reported now, not mid-run
        if importlib.util.find_spec("llama_cpp") is None:
            raise FeatdiscoError(INSTALL_HINT)
        if model_path is None or model_path == LOCAL_MODEL.model_id:  # `--model` may name it
            self.model_path = ensure_model()
        else:
            self.model_path = Path(model_path).expanduser()
            if not self.model_path.is_file():
                raise FeatdiscoError(f"local model file not found: {self.model_path}")
        self.n_ctx = n_ctx
        self.n_threads = n_threads  # None: chosen when the weights load (_default_threads)
        self._llm: Any = None
        self._lock = threading.Lock()
        self._grammars: dict[str, object] = {}  # schema JSON -> llama_cpp.LlamaGrammar
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="featdisco-llama")

    # --- sync core (runs on the worker thread) ---------------------------------------------

    def load(self) -> None:
        """Load the weights now (about a second; memory-mapped) instead of on the first call."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> Any:
        if self._llm is None:
            llama_cpp = _import_llama_cpp()
            if self.n_threads is None:
                self.n_threads = _default_threads()
            try:
                self._llm = _llama_class(llama_cpp)(
                    model_path=str(self.model_path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                    n_threads_batch=self.n_threads, verbose=False)
            except (ValueError, RuntimeError, OSError) as exc:
                raise FeatdiscoError(
                    f"could not load the local model {self.model_path}: {exc}; if the file is "
                    "damaged, run `featdisco models install --force`") from exc
        return self._llm

    def _grammar_locked(self, schema: Mapping[str, object]) -> Any:
        """The compiled grammar for ``schema``, built once and checked by llama's own parser.

        llama-cpp-python hands the grammar text to llama.cpp without checking it, and an
        unparsable grammar there means a null sampler; so we parse it once ourselves and
        turn a failure into a clear, non-retryable error.
        """
        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            llama_cpp = _import_llama_cpp()
            try:
                text = schema_to_grammar(schema)
            except Exception as exc:  # the converter raises bare Exceptions/AssertionErrors
                raise LLMError("bad-schema", f"cannot turn the JSON schema into a grammar: {exc}",
                               retryable=False) from exc
            sampler = llama_cpp.llama_sampler_init_grammar(
                self._llm._model.vocab,
                text.encode("utf-8"), b"root")
            if not sampler:
                raise LLMError("bad-schema", "llama.cpp rejected the grammar built from the "
                               "JSON schema", retryable=False)
            llama_cpp.llama_sampler_free(sampler)
            grammar = llama_cpp.LlamaGrammar.from_string(text, verbose=False)
            self._grammars[key] = grammar
        return grammar

    def complete_sync(self, request: LLMRequest, cancel: threading.Event | None = None) -> LLMResponse:
        """Run one request on the calling thread (blocking); :meth:`complete` wraps this."""
        with self._lock:
            if cancel is not None and cancel.is_set():
                raise _Cancelled
            llm = self._load_locked()
            grammar = self._grammar_locked(request.schema) if request.schema is not None else None
            s = request.sampling
            llm.cancel = cancel
            try:
                out = llm.create_chat_completion(
                    messages=[{"role": m.role, "content": m.content} for m in request.messages],
                    temperature=s.temperature,
                    top_p=0.95 if s.top_p is None else s.top_p,
                    max_tokens=s.max_tokens,
                    seed=s.seed,
                    grammar=grammar,
                )
            except _Cancelled:
                raise
            except ValueError as exc:  # e.g. "Requested tokens (N) exceed context window of M"
                raise LLMError("context-length" if "context" in str(exc) else "local-error",
                               f"local model: {exc}", retryable=False) from exc
            except Exception as exc:
                raise LLMError("local-error", f"local model failed: {exc!r}", retryable=False) from exc
            finally:
                llm.cancel = None
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return LLMResponse(
            text=choice["message"].get("content") or "",
            usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
            finish_reason=choice.get("finish_reason"),
        )

    # --- the protocol --------------------------------------------------------------------

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Generate on the worker thread; a call cancelled while queued is never generated."""
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            fut = loop.run_in_executor(self._executor, self.complete_sync, request, cancel)
        except RuntimeError as exc:  # the executor was shut down by close()
            raise LLMError("closed", "the local backend was closed", retryable=False) from exc
        try:
            return await fut
        except asyncio.CancelledError:
            cancel.set()
            raise

    async def aclose(self) -> None:
        """Finish the call in progress, then free the model's memory."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        """Synchronous :meth:`aclose`, for scripts and tests that do not run an event loop."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None
            self._grammars.clear()
