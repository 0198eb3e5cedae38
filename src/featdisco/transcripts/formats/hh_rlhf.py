"""Anthropic HH-RLHF: whole dialogues as ``\\n\\nHuman:`` / ``\\n\\nAssistant:`` strings.

A record holds two dialogues (``chosen`` and ``rejected``) that share their prefix; each
becomes a transcript, told apart by the ``variant`` metadata and an id suffix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from featdisco.errors import BadRecord
from featdisco.transcripts.formats import common
from featdisco.transcripts.model import Message, Role, TextPart, make_message
from featdisco.transcripts.raw import type_name

VARIANTS = ("chosen", "rejected")
_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def sniff(rec: Mapping[str, object]) -> bool:
    return any(isinstance(text := rec.get(v), str) and "\n\nHuman:" in text for v in VARIANTS)


def parse_dialogue(text: str, where: str) -> list[Message]:
    if not text.startswith("\n\n"):
        text = "\n\n" + text.lstrip("\n")
    pieces = _TURN.split(text)
    if pieces[0].strip():
        raise BadRecord("wrong-type", f"{where}: text before the first Human:/Assistant: marker")
    messages: list[Message] = []
    for speaker, body in zip(pieces[1::2], pieces[2::2], strict=True):
        role: Role = "user" if speaker == "Human" else "assistant"
        body = body.strip()
        messages.append(make_message(role, [TextPart(body)] if body else []))
    if not messages:
        raise BadRecord("wrong-type", f"{where}: no Human:/Assistant: turns found")
    return messages


def parse(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    out: list[common.Conversation] = []
    base_id = common.id_of(rec)
    for variant in VARIANTS:
        if variant not in rec:
            continue
        text = rec[variant]
        if not isinstance(text, str):
            raise BadRecord("wrong-type", f"{variant}: expected a string, got {type_name(text)}")
        meta = common.scalar_metadata(rec, set(VARIANTS))
        meta["variant"] = variant
        out.append(common.Conversation(parse_dialogue(text, variant), model=common.model_of(rec), id=base_id,
                                       suffix=variant, metadata=meta))
    return out


SPEC = common.FormatSpec("hh-rlhf", "Anthropic HH-RLHF chosen/rejected dialogue strings", sniff, parse)
