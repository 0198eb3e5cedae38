"""Inspect AI eval logs as containers: a ``.json`` log's samples and a ``.eval`` zip's sample
files become raw records, each sample wrapped with its eval spec (``{eval, sample}``) for the
``inspect`` format to parse.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypedDict

from featdisco.errors import BadRecord
from featdisco.transcripts.raw import RawRecord, decode_json_object


def is_inspect_log(doc: Mapping[str, object]) -> bool:
    return isinstance(doc.get("eval"), dict) and ("samples" in doc or "status" in doc)


class InspectRecord(TypedDict):
    """One sample as handed to the ``inspect`` format, with the eval spec it ran under."""

    eval: Mapping[str, object]
    sample: Mapping[str, object]


def wrap_sample(eval_spec: Mapping[str, object], sample: Mapping[str, object]) -> InspectRecord:
    return {"eval": eval_spec, "sample": sample}


def inspect_where(sample: object, fallback: int) -> str:
    if isinstance(sample, dict) and "id" in sample:
        return f"sample {sample['id']} epoch {sample.get('epoch', 1)}"
    return f"sample #{fallback}"


def expand_inspect_log(doc: Mapping[str, object]) -> Iterator[RawRecord]:
    samples, spec = doc.get("samples"), doc.get("eval")
    eval_spec: Mapping[str, object] = spec if isinstance(spec, dict) else {}  # a dict: is_inspect_log
    if not isinstance(samples, list) or not samples:
        yield RawRecord("samples", None, BadRecord("empty-file", "eval log has no samples"),
                        fatal=True)
        return
    for i, sample in enumerate(samples, start=1):
        where = inspect_where(sample, i)
        if isinstance(sample, dict):
            yield RawRecord(where, wrap_sample(eval_spec, sample))
        else:
            yield RawRecord(where, None, BadRecord("wrong-type", "sample is not an object"))


def iter_eval_zip(path: Path, max_bytes: int) -> Iterator[RawRecord]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        yield RawRecord("file", None, BadRecord("unreadable-file", f"not a readable .eval archive ({e})"),
                        fatal=True)
        return
    with zf:
        names = zf.namelist()
        try:
            header_name = "header.json" if "header.json" in names else "_journal/start.json"
            header = decode_json_object(zf.read(header_name))
        except KeyError:
            yield RawRecord("file", None, BadRecord("unreadable-file",
                                                    "archive has neither header.json nor _journal/start.json"),
                            fatal=True)
            return
        except (BadRecord, NotImplementedError, zipfile.BadZipFile) as e:
            yield RawRecord("header.json", None, BadRecord("unreadable-file", f"cannot read header ({e})"),
                            fatal=True)
            return
        spec = header.get("eval")
        eval_spec: Mapping[str, object] = spec if isinstance(spec, dict) else {}
        sample_names = sorted(n for n in names if n.startswith("samples/") and n.endswith(".json"))
        if not sample_names:
            yield RawRecord("samples/", None, BadRecord("empty-file", "eval archive has no samples"),
                            fatal=True)
            return
        for name in sample_names:
            info = zf.getinfo(name)
            if info.file_size > max_bytes:
                yield RawRecord(name, None, BadRecord(
                    "too-large", f"sample is {info.file_size / 1e6:.1f} MB, over the "
                    f"{max_bytes / 1e6:.1f} MB limit (raise it with --max-record-mb)"))
                continue
            try:
                sample = decode_json_object(zf.read(name))
            except BadRecord as e:
                yield RawRecord(name, None, e)
                continue
            except NotImplementedError as e:  # zstd-compressed entries before Python 3.14
                yield RawRecord(name, None, BadRecord(
                    "unreadable-file", f"unsupported compression ({e}); re-save the log with "
                    "`inspect log convert --to json`"), fatal=True)
                return
            yield RawRecord(name, wrap_sample(eval_spec, sample))
