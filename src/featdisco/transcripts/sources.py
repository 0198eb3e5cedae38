"""Container formats: turn files (JSON, JSONL[.gz], Parquet, CSV, saved HF datasets,
Inspect ``.eval`` zips) into a stream of raw records, each with its location.

Record *formats* (OpenAI messages, ShareGPT, ...) are not known here; this layer only
knows how bytes become dicts, so it can stream and so every error can name file and line.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from featdisco.errors import BadRecord, FeatdiscoError

DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
JSON_SUFFIXES = (".json", ".json.gz", ".traj")  # .traj: SWE-agent trajectories
DATA_SUFFIXES = (*JSONL_SUFFIXES, *JSON_SUFFIXES, ".parquet", ".csv", ".csv.gz", ".eval")
_LIST_KEYS = ("data", "records", "rows", "examples", "items", "transcripts")


@dataclass(slots=True)
class RawRecord:
    """One record, or the reason it could not be read.

    ``fatal`` marks a problem that ends the file (a truncated gzip, an unreadable
    Parquet footer): what was read before it stands.
    """

    where: str
    data: dict[str, Any] | None
    error: BadRecord | None = None
    fatal: bool = False
    context: dict[str, Any] | None = None


def is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_dict.json").is_file()
        or ((path / "state.json").is_file() and (path / "dataset_info.json").is_file())
    )


def expand_inputs(paths: list[str | Path]) -> list[Path]:
    """Files (and saved HF datasets) named by ``paths``, directories walked in sorted order."""
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
        else:
            out.extend(_walk(p))
    if not out:
        raise FeatdiscoError(f"no transcript files found in {', '.join(map(str, paths))}")
    return out


def _walk(root: Path) -> Iterator[Path]:
    for child in sorted(root.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            if is_hf_dataset_dir(child):
                yield child
            else:
                yield from _walk(child)
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
        from featdisco.transcripts.formats.inspect import iter_eval_zip

        yield from iter_eval_zip(path, max_record_bytes)
    else:  # pragma: no cover - expand_inputs filters these
        raise FeatdiscoError(f"{path}: unsupported file type")


def _open_binary(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _empty(path: Path) -> RawRecord:
    return RawRecord("file", None, BadRecord("empty-file", "file is empty"), fatal=True)


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """Parse one JSON object from bytes, with errors a user can act on."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRecord("invalid-utf8", f"invalid UTF-8 at byte {e.start}") from None
    text = text.rstrip("\r\n")  # a cut-off record ends at its newline, not after it
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        where = f"line {e.lineno}, column {e.colno}" if e.lineno > 1 else f"column {e.colno}"
        raise BadRecord("malformed-json", f"malformed JSON ({e.msg} at {where})") from None
    if not isinstance(value, dict):
        raise BadRecord("wrong-type", f"expected a JSON object, got {type_name(value)}")
    return value


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(value), type(value).__name__)


def _iter_jsonl(path: Path, max_bytes: int) -> Iterator[RawRecord]:
    lineno = 0
    seen_any = False
    try:
        with _open_binary(path) as f:
            while True:
                line = f.readline(max_bytes + 1)
                if not line:
                    break
                lineno += 1
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
                    yield RawRecord(where, decode_json_object(line))
                except BadRecord as e:
                    yield RawRecord(where, None, e)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        where = f"line {lineno + 1}"
        msg = "gzip stream is truncated or corrupt" if path.name.endswith(".gz") else str(e)
        yield RawRecord(where, None, BadRecord("truncated-gzip" if path.name.endswith(".gz")
                                                else "unreadable-file", f"{msg} ({e})"), fatal=True)
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
    try:
        with _open_binary(path) as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        yield RawRecord("file", None, BadRecord("truncated-gzip", f"cannot read: {e}"), fatal=True)
        return
    if not raw.strip():
        yield _empty(path)
        return
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        yield RawRecord(f"line {line}", None, BadRecord("invalid-utf8", f"invalid UTF-8 at byte {e.start}"),
                        fatal=True)
        return
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        # Many ".json" files are really JSON Lines.
        first = text.lstrip()[:1]
        if first == "{" and "\n" in text.strip():
            yield from _iter_jsonl(path, max_bytes)
            return
        yield RawRecord(f"line {e.lineno}", None,
                        BadRecord("malformed-json", f"malformed JSON ({e.msg} at line {e.lineno}, "
                                  f"column {e.colno})"), fatal=True)
        return
    from featdisco.transcripts.formats.inspect import expand_inspect_log, is_inspect_log

    if isinstance(doc, dict) and is_inspect_log(doc):
        yield from expand_inspect_log(doc)
        return
    if isinstance(doc, dict):
        for key in _LIST_KEYS:
            value = doc.get(key)
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                doc = value
                break
    if isinstance(doc, dict):
        yield RawRecord("record 1", doc)
        return
    if not isinstance(doc, list):
        yield RawRecord("file", None, BadRecord("wrong-type", f"expected a JSON object or array, got "
                                                f"{type_name(doc)}"), fatal=True)
        return
    if not doc:
        yield _empty(path)
        return
    for i, item in enumerate(doc, start=1):
        where = f"record {i}"
        if isinstance(item, dict):
            yield RawRecord(where, item)
        else:
            yield RawRecord(where, None, BadRecord("wrong-type",
                                                   f"expected a JSON object, got {type_name(item)}"))


def _iter_parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

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
    import pyarrow as pa

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
    reader: Any = None
    try:
        raw = _open_binary(path)
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")
        reader = csv.DictReader(text)
        row = 0
        prev_line = 1
        for rec in reader:
            row += 1
            where = f"line {prev_line + 1}"
            prev_line = reader.line_num
            if None in rec:
                yield RawRecord(where, None, BadRecord("wrong-type", "row has more cells than the header"))
                continue
            yield RawRecord(where, {k: _cell(v) for k, v in rec.items()})
        if row == 0:
            yield _empty(path)
    except UnicodeDecodeError as e:
        yield RawRecord(f"line {_line_after(reader)}", None,
                        BadRecord("invalid-utf8", f"invalid UTF-8 ({e.reason})"), fatal=True)
    except (EOFError, gzip.BadGzipFile, zlib.error, csv.Error) as e:
        yield RawRecord(f"line {_line_after(reader)}", None, BadRecord("unreadable-file", str(e)),
                        fatal=True)


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
