"""Inspect AI eval logs: ``.json`` logs and ``.eval`` zip archives, one transcript per sample
and epoch. Inspect's chat messages share the OpenAI shape, so their parser is reused.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from featdisco.errors import BadRecord
from featdisco.transcripts.formats import common
from featdisco.transcripts.formats.openai import parse_messages
from featdisco.transcripts.sources import RawRecord, decode_json_object

_ATTACHMENT = "attachment://"


def is_inspect_log(doc: dict[str, Any]) -> bool:
    return isinstance(doc.get("eval"), dict) and ("samples" in doc or "status" in doc)


def _wrap(eval_spec: dict[str, Any], sample: dict[str, Any]) -> dict[str, Any]:
    return {"eval": eval_spec, "sample": sample}


def _where(sample: Any, fallback: int) -> str:
    if isinstance(sample, dict) and "id" in sample:
        return f"sample {sample['id']} epoch {sample.get('epoch', 1)}"
    return f"sample #{fallback}"


def expand_inspect_log(doc: dict[str, Any]) -> Iterator[RawRecord]:
    samples = doc.get("samples")
    if not isinstance(samples, list) or not samples:
        yield RawRecord("samples", None, BadRecord("empty-file", "eval log has no samples"),
                        fatal=True)
        return
    for i, sample in enumerate(samples, start=1):
        where = _where(sample, i)
        if isinstance(sample, dict):
            yield RawRecord(where, _wrap(common.get_dict(doc["eval"], "eval"), sample))
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
        eval_spec: dict[str, Any] = spec if isinstance(spec, dict) else {}
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
            yield RawRecord(name, _wrap(eval_spec, sample))


def _resolve(value: Any, attachments: dict[str, Any]) -> Any:
    if isinstance(value, str):
        if value.startswith(_ATTACHMENT):
            return attachments.get(value[len(_ATTACHMENT):], value)
        return value
    if isinstance(value, list):
        return [_resolve(v, attachments) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, attachments) for k, v in value.items()}
    return value


def sniff(rec: dict[str, Any]) -> bool:
    return isinstance(rec.get("eval"), dict) and isinstance(rec.get("sample"), dict)


def parse(rec: dict[str, Any], ctx: common.ParseContext) -> list[common.Conversation]:
    eval_spec = common.get_dict(rec.get("eval"), "eval")
    sample = common.get_dict(rec.get("sample"), "sample")
    attachments = sample.get("attachments") if isinstance(sample.get("attachments"), dict) else {}
    items = common.get_list(sample, "messages", "sample.messages")
    messages = parse_messages(_resolve(items, attachments or {}), "messages")
    model = eval_spec.get("model")
    output = sample.get("output")
    if not isinstance(model, str) and isinstance(output, dict):
        model = output.get("model")
    sid, epoch = sample.get("id"), sample.get("epoch", 1)
    run = eval_spec.get("eval_id") or eval_spec.get("run_id") or eval_spec.get("task") or "eval"
    meta: dict[str, Any] = {"task": eval_spec.get("task"), "sample_id": sid, "epoch": epoch}
    for key in ("eval_id", "run_id", "created"):
        if isinstance(eval_spec.get(key), str):
            meta[key] = eval_spec[key]
    if isinstance(sample.get("target"), str):
        meta["target"] = sample["target"][:500]
    scores = sample.get("scores")
    if isinstance(scores, dict):
        for name, score in scores.items():
            value = score.get("value") if isinstance(score, dict) else None
            if isinstance(value, str | int | float | bool):
                meta[f"score_{name}"] = value
    if isinstance(sample.get("metadata"), dict):
        meta.update(common.scalar_metadata(sample["metadata"], frozenset()))
    return [common.Conversation(messages, model=model if isinstance(model, str) else None,
                                id=f"{run}/{sid}/e{epoch}", metadata={k: v for k, v in meta.items()
                                                                  if v is not None})]


SPEC = common.FormatSpec("inspect", "Inspect AI eval log (.json or .eval), one transcript per sample",
                         sniff, parse)


