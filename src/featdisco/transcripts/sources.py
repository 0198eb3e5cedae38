"""Container formats: turn files (JSON, JSONL[.gz], Parquet, CSV, saved HF datasets,
Inspect ``.eval`` zips) into a stream of raw records, each with its location.

Record *formats* (OpenAI messages, ShareGPT, ...) are not known here; this layer only
knows how bytes become dicts, so it can stream and so every error can name file and line.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from featdisco.errors import BadRecord, FeatdiscoError
from featdisco.transcripts import json_stream as js
from featdisco.transcripts.inspect_logs import (
    expand_inspect_log,
    inspect_where,
    is_inspect_log,
    iter_eval_zip,
    wrap_sample,
)
from featdisco.transcripts.raw import RawRecord, decode_json_object, type_name

_READ_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, OSError)
DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
JSON_SUFFIXES = (".json", ".json.gz", ".traj")  # .traj: SWE-agent trajectories
DATA_SUFFIXES = (*JSONL_SUFFIXES, *JSON_SUFFIXES, ".parquet", ".csv", ".csv.gz", ".eval")
BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark: Excel's "CSV UTF-8", many Windows tools
_LIST_KEYS = ("data", "records", "rows", "examples", "items", "transcripts")


def is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_dict.json").is_file()
        or ((path / "state.json").is_file() and (path / "dataset_info.json").is_file())
    )


JUDGE_DIRS = ("reference_answer", "reference_answers", "model_judgment", "model_judgments")


def expand_inputs(paths: list[str | Path], judge_files: list[Path] | None = None,
                  run_dirs: list[Path] | None = None) -> list[Path]:
    """Files (and saved HF datasets) named by ``paths``, directories walked in sorted order.

    In a walked folder, files under a benchmark's judge folders (MT-bench's
    ``reference_answer/``, ``model_judgment/``) are not a model's transcripts: they are
    left out and listed in ``judge_files``; a file named directly is always read. A featdisco
    run folder met on the walk (``--run-dir`` inside the inputs, or an earlier run kept beside
    the data) is no transcripts either: its pieces read as transcripts would count every
    transcript again; it is left out and listed in ``run_dirs``.
    """
    judge_files = judge_files if judge_files is not None else []
    run_dirs = run_dirs if run_dirs is not None else []
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise FeatdiscoError(f"{p}: no such file or directory")
        if p.is_file():
            if not p.name.lower().endswith(DATA_SUFFIXES):
                raise FeatdiscoError(
                    f"{p}: unsupported file type; expected one of {', '.join(DATA_SUFFIXES)}"
                    " or a directory"
                )
            out.append(p)
        elif is_hf_dataset_dir(p):
            out.append(p)
        elif is_run_dir(p):
            raise FeatdiscoError(f"{p} is a featdisco run folder, not transcripts: name its pieces "
                                 f"({p / 'pieces.parquet'}) to read them again")
        else:
            for found in _walk(p, run_dirs):
                if any(part.lower() in JUDGE_DIRS for part in found.relative_to(p).parts[:-1]):
                    judge_files.append(found)
                else:
                    out.append(found)
    if not out:
        raise FeatdiscoError(f"no transcript files found in {', '.join(map(str, paths))}"
                             + (f" (featdisco run folders left out: {', '.join(map(str, run_dirs))})"
                                if run_dirs else ""))
    return out


def is_run_dir(path: Path) -> bool:
    """A folder featdisco made a run in: its ``manifest.json`` is an object whose ``stages``
    maps each stage to its record (as a run reads it), not just any manifest that holds the
    word (another tool's ``{"stages": ["generate", "judge"]}`` beside its transcripts)."""
    manifest = path / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        raw = manifest.read_bytes()  # a run's manifest is small; its keys are sorted, so "stages"
        if b'"stages"' not in raw:  # comes after analyses and artefacts, however many there are
            return False
        data = orjson.loads(raw)
    except (OSError, orjson.JSONDecodeError):
        return False
    stages = data.get("stages") if isinstance(data, dict) else None
    return isinstance(stages, dict) and all(isinstance(v, dict) for v in stages.values())


def _walk(root: Path, run_dirs: list[Path]) -> Iterator[Path]:
    for child in sorted(root.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            if is_hf_dataset_dir(child):
                yield child
            elif is_run_dir(child):
                run_dirs.append(child)
            else:
                yield from _walk(child, run_dirs)
        elif child.name.lower().endswith(DATA_SUFFIXES):
            yield child


def iter_raw(path: Path, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[RawRecord]:
    """Stream the records of one input; never raises for bad content, yields it instead."""
    name = path.name.lower()
    if path.is_dir():
        yield from _iter_hf_dataset(path)
    elif name.endswith(JSONL_SUFFIXES):
        yield from _iter_jsonl(path, max_record_bytes)
    elif name.endswith(JSON_SUFFIXES):
        yield from _iter_json(path, max_record_bytes)
    elif name.endswith(".parquet"):
        yield from _iter_parquet(path)
    elif name.endswith((".csv", ".csv.gz")):
        yield from _iter_csv(path)
    elif name.endswith(".eval"):
        yield from iter_eval_zip(path, max_record_bytes)
    else:  # pragma: no cover - expand_inputs filters these
        raise FeatdiscoError(f"{path}: unsupported file type")


def _open_binary(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _empty(path: Path) -> RawRecord:
    return RawRecord("file", None, BadRecord("empty-file", "file is empty"), fatal=True)


def _iter_jsonl(path: Path, max_bytes: int) -> Iterator[RawRecord]:
    lineno = good = 0
    seen_any = False
    f: IO[bytes] | None = None
    try:
        with _open_binary(path) as f:
            while True:
                line = f.readline(max_bytes + 1)
                if not line:
                    break
                lineno += 1
                if lineno == 1 and line.startswith(BOM):
                    line = line[len(BOM):]
                where = f"line {lineno}"
                if len(line) > max_bytes and not line.endswith(b"\n"):
                    size = len(line) + _skip_rest_of_line(f)
                    yield RawRecord(where, None, _too_large(size, max_bytes))
                    seen_any = True
                    continue
                if not line.strip():
                    continue
                seen_any = True
                try:
                    record = decode_json_object(line)
                except BadRecord as e:
                    yield RawRecord(where, None, e)
                else:
                    good += 1
                    yield RawRecord(where, record)
    except _READ_ERRORS as e:
        lost = js.lost_estimate(js.file_size(path), js.position(f), good) if f is not None else None
        where = f"line {lineno + 1}" if lineno else "file"
        yield RawRecord(where, None, read_error(path, e), fatal=True, lost=lost)
        return
    if not seen_any:
        yield _empty(path)


def _skip_rest_of_line(f: IO[bytes]) -> int:
    skipped = 0
    while True:
        chunk = f.readline(1 << 20)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def _too_large(size: int, max_bytes: int) -> BadRecord:
    return BadRecord(
        "too-large",
        f"record is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB limit "
        "(raise it with --max-record-mb)",
    )


def _iter_json(path: Path, max_bytes: int) -> Iterator[RawRecord]:
    """A JSON document, streamed: an array or a wrapper's list a record at a time."""
    size = js.file_size(path)
    head, eof, err = _peek(path)
    if not head and err is not None:
        yield RawRecord("file", None, read_error(path, err), fatal=True)
        return
    skip = len(BOM) if head.startswith(BOM) else 0
    body = head[skip:].lstrip()
    lead = body[:1]
    if not lead and eof:
        yield _empty(path)
        return

    def open_() -> IO[bytes]:
        return _open_binary(path)

    doc: Mapping[str, object] | None = None
    if lead == b"{":
        first, newline, rest = body.partition(b"\n")
        if newline or eof:
            doc = js.first_line_object(first)
        if doc is not None and rest.strip():  # one object per line: JSON Lines named .json
            yield from _iter_jsonl(path, max_bytes)
            return
        if doc is not None and not eof:
            doc = None  # more may follow: let the stream say what it is
    if lead not in (b"{", b"["):
        yield RawRecord("file", None, BadRecord("wrong-type", "expected a JSON object or array"), fatal=True)
        return
    key: str | None = "item" if lead == b"[" else None
    fields: dict[str, object] = {}
    if lead == b"{" and doc is None:
        try:
            list_key, fields = js.find_list_key(open_, skip)
        except js.MoreValues:
            yield from _iter_jsonl(path, max_bytes)
            return
        except js.ijson.JSONError as e:
            yield RawRecord("record 1", None, js.json_error(e), fatal=True)
            return
        except _READ_ERRORS as e:
            yield RawRecord("record 1", None, read_error(path, e), fatal=True)
            return
        if list_key is None:
            doc = fields
        else:
            key = f"{list_key}.item"
    if doc is not None:
        yield from _records_of_document(doc)
        return
    assert key is not None
    eval_spec = fields.get("eval") if key == "samples.item" and is_inspect_log({**fields, "samples": []}) else None
    seen = [0]

    def on_item(i: int, item: Any) -> RawRecord:
        seen[0] = i
        if isinstance(eval_spec, dict):
            return RawRecord(inspect_where(item, i), wrap_sample(eval_spec, item) if isinstance(item, dict) else None,
                             None if isinstance(item, dict) else BadRecord("wrong-type", "sample is not an object"))
        if isinstance(item, dict):
            return RawRecord(f"record {i}", item)
        return RawRecord(f"record {i}", None, BadRecord("wrong-type", f"expected a JSON object, got "
                                                        f"{type_name(item)}"))

    def on_error(i: int, err: BadRecord, lost: int | None) -> RawRecord:
        return RawRecord(f"record {i}", None, err, fatal=True, lost=lost)

    yield from js.stream_items(open_, skip, key, size, on_item, on_error)
    if seen[0] == 0 and key == "item":
        yield _empty(path)


def _peek(path: Path, limit: int = 1 << 16) -> tuple[bytes, bool, BaseException | None]:
    """The file's first bytes (enough to see its shape), whether that is all of it, and a
    read error met on the way (a cut-off gzip: the stream then salvages what it can)."""
    head = b""
    try:
        with _open_binary(path) as f:
            while len(head) < limit:
                chunk = f.read(4096)
                if not chunk:
                    return head, True, None
                head += chunk
                text = head.removeprefix(BOM).lstrip()
                if text[:1] == b"[" or (b"\n" in text and text.partition(b"\n")[2].strip()):
                    break
    except _READ_ERRORS as e:
        return head, False, e
    return head, False, None


def _records_of_document(doc: Mapping[str, object]) -> Iterator[RawRecord]:
    """A JSON object read whole (small: one line, or no list of records inside)."""
    if is_inspect_log(doc):
        yield from expand_inspect_log(doc)
        return
    for key in _LIST_KEYS:
        value = doc.get(key)
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value, start=1):
                yield RawRecord(f"record {i}", item)
            return
    yield RawRecord("record 1", doc)


def read_error(path: Path, e: BaseException) -> BadRecord:
    """A file that cannot be read at all, with the likely fix."""
    if isinstance(e, gzip.BadGzipFile) and "Not a gzipped file" in str(e):
        return BadRecord("unreadable-file", "not a gzip file, though its name ends in .gz "
                         "(rename it without .gz)")
    if path.name.lower().endswith(".gz"):
        return BadRecord("truncated-gzip", f"gzip stream is truncated or corrupt ({e})")
    return BadRecord("unreadable-file", f"cannot read the file ({e})")


def _iter_parquet(path: Path) -> Iterator[RawRecord]:
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a bad footer
        yield RawRecord("file", None, BadRecord("unreadable-file", f"not a readable Parquet file ({e})"),
                        fatal=True)
        return
    if pf.metadata.num_rows == 0:
        yield _empty(path)
        return
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=2048):
            for rec in batch.to_pylist():
                row += 1
                yield RawRecord(f"row {row}", rec)
    except Exception as e:
        yield RawRecord(f"row {row + 1}", None, BadRecord("unreadable-file", f"cannot read Parquet ({e})"),
                        fatal=True)


def _iter_hf_dataset(path: Path) -> Iterator[RawRecord]:
    """A ``Dataset.save_to_disk`` folder: Arrow IPC stream files listed in ``state.json``."""
    if (path / "dataset_dict.json").is_file():
        try:
            splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        except (ValueError, KeyError) as e:
            yield RawRecord("dataset_dict.json", None, BadRecord("unreadable-file", f"bad dataset_dict.json ({e})"),
                            fatal=True)
            return
        for split in splits:
            yield from _iter_hf_split(path / split, split)
    else:
        yield from _iter_hf_split(path, None)


def _iter_hf_split(path: Path, split: str | None) -> Iterator[RawRecord]:
    try:
        state = json.loads((path / "state.json").read_text())
        files = [path / f["filename"] for f in state["_data_files"]]
    except (OSError, ValueError, KeyError) as e:
        yield RawRecord(f"{path.name}/state.json", None,
                        BadRecord("unreadable-file", f"not a saved Hugging Face dataset ({e})"), fatal=True)
        return
    context = {"split": split} if split else None
    prefix = f"split {split}, " if split else ""
    row = 0
    for file in files:
        try:
            with pa.memory_map(str(file), "r") as source:
                try:
                    reader: Any = pa.ipc.open_stream(source)
                except pa.ArrowInvalid:
                    reader = pa.ipc.open_file(source)
                    batches: Any = (reader.get_batch(i) for i in range(reader.num_record_batches))
                else:
                    batches = reader
                for batch in batches:
                    for rec in batch.to_pylist():
                        row += 1
                        yield RawRecord(f"{prefix}row {row}", rec, context=context)
        except (OSError, pa.ArrowInvalid) as e:
            yield RawRecord(f"{prefix}row {row + 1}", None,
                            BadRecord("unreadable-file", f"cannot read {file.name} ({e})"), fatal=True)
            return


def _iter_csv(path: Path) -> Iterator[RawRecord]:
    """CSV rows, each placed at the line it starts on. Lines are decoded one at a time so a
    bad byte is placed on its own line and skips only the row holding it."""
    bad_lines: dict[int, int] = {}  # line number -> offset of the first bad byte in it
    reader: Any = None
    prev_line = 0  # the last line of the last row read

    def lines(f: IO[bytes]) -> Iterator[str]:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad_lines[lineno] = e.start
                yield raw.decode("utf-8", errors="replace")

    try:
        with _open_binary(path) as f:
            # strict: a quote never closed is an error, not a cell that swallows every row after it
            reader = csv.DictReader(lines(f), strict=True)
            if reader.fieldnames is None:
                yield _empty(path)
                return
            if 1 in bad_lines:
                yield RawRecord("line 1", None, _bad_utf8(bad_lines[1]), fatal=True)
                return
            row = 0
            prev_line = reader.line_num
            for rec in reader:
                row += 1
                first, last = prev_line + 1, reader.line_num
                prev_line = last
                bad = [n for n in range(first, last + 1) if n in bad_lines]
                if bad:
                    yield RawRecord(f"line {bad[0]}", None, _bad_utf8(bad_lines[bad[0]]))
                elif None in rec:
                    yield RawRecord(f"line {first}", None,
                                    BadRecord("wrong-type", "row has more cells than the header"))
                else:
                    yield RawRecord(f"line {first}", {k: _cell(v) for k, v in rec.items()})
            if row == 0:
                yield _empty(path)
    except _READ_ERRORS as e:
        yield RawRecord(f"line {_line_after(reader)}", None, read_error(path, e), fatal=True)
    except csv.Error as e:
        first = prev_line + 1  # where the row that could not be read starts
        hint = (f"a quote opened on line {first} or after is never closed" if "end of data" in str(e)
                else "check the quote marks in this row")
        yield RawRecord(f"line {first}", None, BadRecord("unreadable-file", f"{e} ({hint})"), fatal=True)


def _bad_utf8(offset: int) -> BadRecord:
    return BadRecord("invalid-utf8", f"invalid UTF-8 at byte {offset + 1} of the line (Latin-1 or "
                     "Windows-1252 text? re-save it as UTF-8)")


def _line_after(reader: Any) -> int:
    return (reader.line_num if reader is not None else 0) + 1


def _cell(value: str | None) -> Any:
    """CSV cells holding JSON arrays or objects (a ``messages`` column) are decoded."""
    if value and value[:1] in "[{":
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value if value != "" else None
