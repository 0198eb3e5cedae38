"""Inspect AI eval logs, one transcript per sample and epoch. The logs themselves (``.json``
and ``.eval`` zip archives) are opened by :mod:`featdisco.transcripts.inspect_logs`, which
hands each sample over wrapped with its eval spec; Inspect's chat messages share the
OpenAI shape, so their parser is reused.
"""

from __future__ import annotations

from collections.abc import Mapping

from featdisco.transcripts.formats import common
from featdisco.transcripts.formats.openai import parse_messages

_ATTACHMENT = "attachment://"


def _resolve(value: object, attachments: Mapping[str, object]) -> object:
    """``value`` with every ``attachment://`` reference replaced by the text it names."""
    if isinstance(value, str):
        if value.startswith(_ATTACHMENT):
            return attachments.get(value[len(_ATTACHMENT):], value)
        return value
    if isinstance(value, list):
        return [_resolve(v, attachments) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, attachments) for k, v in value.items()}
    return value


def sniff(rec: Mapping[str, object]) -> bool:
    return isinstance(rec.get("eval"), dict) and isinstance(rec.get("sample"), dict)


def parse(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    eval_spec = common.get_dict(rec.get("eval"), "eval")
    sample = common.get_dict(rec.get("sample"), "sample")
    attachments = sample.get("attachments")
    if not isinstance(attachments, dict):
        attachments = {}
    items = common.get_list(sample, "messages", "sample.messages")
    messages = parse_messages([_resolve(item, attachments) for item in items], "messages")
    model = eval_spec.get("model")
    output = sample.get("output")
    if not isinstance(model, str) and isinstance(output, dict):
        model = output.get("model")
    sid, epoch = sample.get("id"), sample.get("epoch", 1)
    run = eval_spec.get("eval_id") or eval_spec.get("run_id") or eval_spec.get("task") or "eval"
    meta: dict[str, object] = {"task": eval_spec.get("task"), "sample_id": sid, "epoch": epoch}
    for key in ("eval_id", "run_id", "created"):
        if isinstance(eval_spec.get(key), str):
            meta[key] = eval_spec[key]
    if isinstance(target := sample.get("target"), str):
        meta["target"] = target[:500]
    scores = sample.get("scores")
    if isinstance(scores, dict):
        for name, score in scores.items():
            value = score.get("value") if isinstance(score, dict) else None
            if isinstance(value, str | int | float | bool):
                meta[f"score_{name}"] = value
    if isinstance(sample_meta := sample.get("metadata"), dict):
        meta.update(common.scalar_metadata(sample_meta, frozenset()))
    return [common.Conversation(messages, model=model if isinstance(model, str) else None,
                                id=f"{run}/{sid}/e{epoch}", metadata={k: v for k, v in meta.items()
                                                                  if v is not None})]


SPEC = common.FormatSpec("inspect", "Inspect AI eval log (.json or .eval), one transcript per sample",
                         sniff, parse)


