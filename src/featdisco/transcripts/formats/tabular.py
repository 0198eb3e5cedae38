"""Flat tables of prompt / response columns, auto-detected or mapped with ``--map``.

``--map user=prompt,response=output,thought=reasoning,model=generator,id=uid,system=sys``
names which column plays which part; unmapped columns become metadata.
"""

from __future__ import annotations

from collections.abc import Mapping

from featdisco.errors import BadRecord, FeatdiscoError
from featdisco.transcripts.formats import common
from featdisco.transcripts.model import Message, Part, ReasoningPart, TextPart, make_message

TARGETS = ("user", "response", "thought", "system", "model", "id")
_AUTO_PAIRS = (("prompt", "response"), ("prompt", "completion"), ("question", "answer"),
               ("input", "output"), ("query", "response"), ("user", "assistant"))
_AUTO_THOUGHT = ("reasoning", "thinking", "thought", "reasoning_content")


def parse_mapping(spec: str | None) -> dict[str, str]:
    """``"user=prompt,response=output"`` → ``{"user": "prompt", "response": "output"}``."""
    if not spec:
        return {}
    out: dict[str, str] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        target, sep, column = item.partition("=")
        target, column = target.strip(), column.strip()
        if not sep or not column:
            raise FeatdiscoError(f"--map: {item!r} is not TARGET=COLUMN")
        if target not in TARGETS:
            raise FeatdiscoError(f"--map: unknown target {target!r}; use {', '.join(TARGETS)}")
        out[target] = column
    if "user" not in out and "response" not in out:
        raise FeatdiscoError("--map needs at least user=COLUMN or response=COLUMN")
    return out


def auto_mapping(rec: Mapping[str, object], empty_ok: bool = False) -> dict[str, str] | None:
    """The columns of the first known prompt/response pair the record holds as text; with
    ``empty_ok``, a pair whose cell is empty or null (a failed generation: read as an empty
    piece, dropped and counted, as under ``--map``) counts too, after every full pair."""
    for lenient in (False, True) if empty_ok else (False,):
        for user, response in _AUTO_PAIRS:
            cells = (rec.get(user), rec.get(response))
            if (all(isinstance(c, str) for c in cells) if not lenient else
                    user in rec and response in rec and any(isinstance(c, str) for c in cells)
                    and all(c is None or isinstance(c, str) for c in cells)):
                mapping = {"user": user, "response": response}
                for t in _AUTO_THOUGHT:
                    if t in rec:
                        mapping["thought"] = t
                        break
                return mapping
    return None


def sniff(rec: Mapping[str, object]) -> bool:
    return auto_mapping(rec) is not None


def parse(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    mapping = ctx.mapping or auto_mapping(rec, empty_ok=True)
    if not mapping:
        raise BadRecord("missing-field", "no prompt/response columns recognised (columns are "
                        f"{', '.join(map(str, rec))}); name them with --map user=COLUMN,response=COLUMN")
    values: dict[str, object] = {}  # target -> the raw value of its column
    for target, column in mapping.items():
        if column in rec:
            values[target] = rec[column]
        elif "." in column and (found := common.dotted(rec, column)) is not None:  # --map user=request.prompt
            values[target] = found
        else:
            raise BadRecord("missing-field", f"column {column!r} (mapped to {target}) is missing; "
                            f"columns are {', '.join(map(str, rec))}")
    messages: list[Message] = []
    if "system" in mapping:
        system = common.get_str(values["system"], mapping["system"])
        if system:
            messages.append(make_message("system", [TextPart(system)]))
    if "user" in mapping:
        user = common.get_str(values["user"], mapping["user"])
        messages.append(make_message("user", [TextPart(user)] if user else []))
    parts: list[Part] = []
    # One column mapped as both: its text holds the reasoning in think tags, split once by
    # the reader (as a reasoning model's); never the whole text again as a thought.
    if "thought" in mapping and mapping.get("response") != mapping["thought"]:
        thought = common.get_str(values["thought"], mapping["thought"])
        if thought:
            parts.append(ReasoningPart(thought))
    if "response" in mapping:
        response = common.get_str(values["response"], mapping["response"])
        if response:
            parts.append(TextPart(response))
    if "response" in mapping or "thought" in mapping:
        messages.append(make_message("assistant", parts))
    model = values.get("model") if "model" in mapping else common.model_of(rec)  # a model column is never lost
    rid = values.get("id")
    meta = common.scalar_metadata(rec, set(mapping.values()) | {c.split(".")[0] for c in mapping.values()})
    return [common.Conversation(messages, model=str(model) if model else None,
                                id=str(rid) if rid not in (None, "") else None, metadata=meta)]


SPEC = common.FormatSpec("tabular", "prompt/response columns (auto, or mapped with --map)", sniff, parse)
