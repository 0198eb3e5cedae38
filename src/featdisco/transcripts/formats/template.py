"""Raw chat-template text: one string holding the template's tokens, as dumps of
reasoning models often are. DeepSeek ``<｜User｜>…<｜Assistant｜>``, ChatML
``<|im_start|>role … <|im_end|>``, Llama 3 ``<|start_header_id|>role<|end_header_id|> …
<|eot_id|>`` and Gemma ``<start_of_turn>role … <end_of_turn>`` are split into turns.

Two places: the ``template`` format reads columns of raw text (``text``, or ``prompt`` +
``completion``), and :func:`expand_templates` finds the same text inside any other
format's messages. A prompt that ends by opening the assistant's turn (often with
``<think>``) continues into the generation that follows it, so a generation cut off inside
``<think>`` is a thought with no response.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from featdisco.errors import BadRecord
from featdisco.transcripts import model as tm
from featdisco.transcripts.formats import common

_BAR = "[|｜]"
_SEP = "[▁_ ]"
# A turn's start, with its role in one of the groups.
_START = re.compile(
    r"<\|im_start\|>(?P<chatml>[\w-]+)[ \t]*\n?"
    r"|<\|start_header_id\|>(?P<llama>[\w-]+)<\|end_header_id\|>\n*"
    r"|<start_of_turn>(?P<gemma>[\w-]+)[ \t]*\n?"
    rf"|<{_BAR}(?P<deepseek>User|Assistant){_BAR}>"
)
# Tokens that end a turn, and tokens that only mark the start or end of the whole text.
_END = re.compile(rf"<\|im_end\|>|<\|eot_id\|>|<\|eom_id\|>|<end_of_turn>|<{_BAR}end{_SEP}of{_SEP}sentence{_BAR}>")
_DOC = re.compile(rf"<\|begin_of_text\|>|<\|end_of_text\|>|<\|endoftext\|>|<bos>|<eos>"
                  rf"|<{_BAR}begin{_SEP}of{_SEP}sentence{_BAR}>")
_TAIL_TOKEN = re.compile(rf"(?:{_END.pattern}|{_DOC.pattern})$")
_DEEPSEEK = re.compile(rf"<｜(?:User|Assistant)｜>|<{_BAR}begin{_SEP}of{_SEP}sentence{_BAR}>")
_ANY_START = re.compile(rf"<\|im_start\|>|<\|start_header_id\|>|<start_of_turn>|<{_BAR}(?:User|Assistant){_BAR}>")
ROLES: dict[str, tm.Role] = {"system": "system", "developer": "system", "user": "user", "human": "user",
                             "assistant": "assistant", "model": "assistant", "gpt": "assistant",
                             "tool": "tool", "ipython": "tool", "function": "tool"}

Turn = tuple[tm.Role, str, bool]  # role, text, closed


def has_template(text: str) -> bool:
    """Whether a text is template text: it opens with a turn token (after document tokens
    and whitespace), or holds DeepSeek's full-width tokens, never typed in prose."""
    if "<" not in text or not _ANY_START.search(text):
        return False
    head = _DOC.sub("", text[:200]).lstrip()
    return bool(_START.match(head)) or bool(_DEEPSEEK.search(text))


def parse_template(text: str, where: str = "text") -> list[Turn]:
    """The turns of a template text; the last is open when no end token closes it."""
    matches = list(_START.finditer(text))
    turns: list[Turn] = []
    lead = _DOC.sub("", text[: matches[0].start()] if matches else text).strip()
    if lead:
        turns.append(("system", _END.sub("", lead).strip(), True))  # DeepSeek: system before <｜User｜>
    for i, m in enumerate(matches):
        raw_role = next(v for v in m.groupdict().values() if v)
        role = ROLES.get(raw_role.lower())
        if role is None:
            raise BadRecord("unknown-role", f"{where}: template role {raw_role!r} is not one of "
                            "system, user, assistant, model, tool, ipython")
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = _DOC.sub("", text[m.end():end])
        last = i + 1 == len(matches)
        body, ended = _cut_tail(body)
        closed = not last or ended
        body = _END.sub("", body)
        turns.append((role, body if last and not closed else body.strip(), closed))
    return turns


def _cut_tail(text: str) -> tuple[str, bool]:
    """``text`` without the end and document tokens it ends with, and whether it had any.
    Looks only at the tail: a scan of the whole text for each generation was slow."""
    end, found = len(text), False
    while True:
        stripped = text[:end].rstrip()
        tail = stripped[-40:]
        m = _TAIL_TOKEN.search(tail) if tail.endswith(">") else None
        if m is None:
            return (text[:len(stripped)] if found else text), found
        end, found = len(stripped) - len(tail) + m.start(), True


def strip_trailing(text: str) -> str:
    """A generation's text without the end-of-turn token the model emitted."""
    return _cut_tail(text)[0]


def expand_templates(messages: list[tm.Message], where: str = "messages") -> list[tm.Message]:
    """Split any message whose text is template text into its turns; an assistant turn the
    prompt left open continues into the assistant message that follows."""
    if not any(isinstance(p, tm.TextPart) and "<" in p.text for m in messages for p in m.content):
        return messages
    out: list[tm.Message] = []
    carry: str | None = None  # the open assistant turn's start (e.g. "<think>\n")
    for i, msg in enumerate(messages):
        texts = [p for p in msg.content if isinstance(p, tm.TextPart)]
        if (isinstance(msg, tm.UserMessage | tm.SystemMessage | tm.AssistantMessage) and len(msg.content) == 1
                and texts and has_template(texts[0].text)):
            turns = parse_template(texts[0].text, f"{where}[{i}]")
            if turns and turns[-1][0] == "assistant" and not turns[-1][2]:
                carry = (carry or "") + turns.pop()[1]
            out.extend(tm.make_message(role, [tm.TextPart(body)] if body else []) for role, body, _ in turns)
            continue
        if isinstance(msg, tm.AssistantMessage) and carry is None and not any(
                isinstance(p, tm.TextPart) and p.text.rstrip().endswith(">") for p in msg.content):
            out.append(msg)  # nothing to strip or join: the common case, kept cheap
            continue
        if isinstance(msg, tm.AssistantMessage):
            parts: list[tm.Part] = []
            for p in msg.content:
                if isinstance(p, tm.TextPart):
                    text = strip_trailing(p.text)
                    if carry is not None:
                        text, carry = carry + text, None
                    parts.append(tm.TextPart(text))
                else:
                    parts.append(p)
            if carry is not None:
                parts.insert(0, tm.TextPart(carry))
                carry = None
            out.append(tm.AssistantMessage(tuple(parts)))
            continue
        if carry is not None:  # the open turn got no generation before the next message
            out.append(tm.make_message("assistant", [tm.TextPart(carry)] if carry.strip() else []))
            carry = None
        out.append(msg)
    if carry is not None:
        out.append(tm.make_message("assistant", [tm.TextPart(carry)] if carry.strip() else []))
    return out


# ---------------------------------------------------------------- the `template` format

PROMPT_KEYS = ("text", "prompt", "input", "raw", "full_text", "conversation", "formatted")
COMPLETION_KEYS = ("completion", "response", "output", "generation", "generated_text", "answer")


def _columns(rec: Mapping[str, object]) -> tuple[str | None, str | None]:
    prompt = next((k for k in PROMPT_KEYS if isinstance(text := rec.get(k), str) and has_template(text)), None)
    completion = next((k for k in COMPLETION_KEYS if isinstance(rec.get(k), str) and k != prompt), None)
    return prompt, completion


def sniff(rec: Mapping[str, object]) -> bool:
    return _columns(rec)[0] is not None


def parse(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    prompt, completion = _columns(rec)
    if prompt is None:
        raise BadRecord("missing-field", f"no column holds chat-template text (looked in "
                        f"{', '.join(PROMPT_KEYS)})")
    prompt_text = common.get_str(rec[prompt], prompt)  # a string: _columns chose it for that
    messages: list[tm.Message] = [tm.make_message("user", [tm.TextPart(prompt_text)])]
    if completion is not None:
        answer = common.get_str(rec[completion], completion)
        messages.append(tm.make_message("assistant", [tm.TextPart(answer)] if answer else []))
    messages = expand_templates(messages, prompt)
    meta = common.scalar_metadata(rec, {prompt, *([completion] if completion else [])})
    return [common.Conversation(messages, model=common.model_of(rec), id=common.id_of(rec), metadata=meta)]


SPEC = common.FormatSpec("template", "raw chat-template text (DeepSeek, ChatML, Llama 3, Gemma) in a text "
                         "or prompt + completion column", sniff, parse)
