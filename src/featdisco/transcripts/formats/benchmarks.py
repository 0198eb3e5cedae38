"""Benchmark answer files: MT-bench / Arena-Hard (answers joined with their questions) and
AlpacaEval ``model_outputs.json``.

Answer files hold only the model's side; the prompts live in a separate question file,
found beside the answers (or in a parent folder) or named with ``--questions``.
"""

from __future__ import annotations

from collections.abc import Mapping

from featdisco.errors import BadRecord
from featdisco.transcripts.formats import common
from featdisco.transcripts.formats.openai import content_parts
from featdisco.transcripts.model import Message, Part, TextPart, make_message

QUESTION_FIELDS = ("category", "subcategory", "cluster")  # joined into the answers' metadata
QUESTION_FILE_NAMES = ("question.jsonl", "questions.jsonl", "arena-hard-v0.1.jsonl",
                       "arena-hard-v2.0.jsonl")


# ---------------------------------------------------------------- questions (auxiliary)


def sniff_questions(rec: Mapping[str, object]) -> bool:
    has_id = "question_id" in rec or "uid" in rec
    has_prompt = isinstance(rec.get("turns"), list) or isinstance(rec.get("prompt"), str)
    return has_id and has_prompt and "choices" not in rec and "messages" not in rec


def question_key(rec: Mapping[str, object]) -> str | None:
    value = rec.get("question_id", rec.get("uid"))
    return None if value is None else str(value)


def _question_turns(q: Mapping[str, object], where: str) -> list[str]:
    if "turns" in q:
        turns = common.get_list(q, "turns", f"{where}.turns")
        return [common.get_str(t.get("content") if isinstance(t, dict) else t, f"{where}.turns[{i}]")
                for i, t in enumerate(turns)]
    return [common.get_str(q.get("prompt"), f"{where}.prompt")]


def parse_questions(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    return []  # auxiliary: read by the reader into ParseContext.questions


# ---------------------------------------------------------------- MT-bench / Arena-Hard answers


def sniff_answers(rec: Mapping[str, object]) -> bool:
    choices = rec.get("choices")
    return ("question_id" in rec or "uid" in rec) and isinstance(choices, list) and bool(choices) \
        and isinstance(choices[0], dict) and "turns" in choices[0]


def _lookup_question(rec: Mapping[str, object], ctx: common.ParseContext) -> tuple[str, Mapping[str, object]]:
    key = question_key(rec)
    if key is None:
        raise BadRecord("missing-field", "answer has no question_id")
    if not ctx.questions:
        raise BadRecord("missing-question", "no question file found beside the answers "
                        "(expected question.jsonl here or in a parent folder; pass --questions)")
    q = ctx.questions.get(key)
    if q is None:
        raise BadRecord("missing-question",
                        f"question_id {key} is not in {ctx.questions_source or 'the question file'}")
    return key, q


def parse_answers(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    key, q = _lookup_question(rec, ctx)
    prompts = _question_turns(q, f"question {key}")
    choice = common.get_dict(common.get_list(rec, "choices")[0], "choices[0]")
    answers = common.get_list(choice, "turns", "choices[0].turns")
    messages: list[Message] = []
    for i, prompt in enumerate(prompts):
        messages.append(make_message("user", [TextPart(prompt)] if prompt else []))
        if i < len(answers):
            ans = answers[i]
            content = ans.get("content") if isinstance(ans, dict) else ans
            parts: list[Part] = content_parts(content, f"choices[0].turns[{i}]", "assistant")
            messages.append(make_message("assistant", parts))
    meta = common.scalar_metadata(rec, {"choices"})
    meta["question_id"] = key
    for field in QUESTION_FIELDS:
        if isinstance(value := q.get(field), str):
            meta[field] = value
    return [common.Conversation(messages, model=common.model_of(rec), id=common.id_of(rec), metadata=meta)]


# ---------------------------------------------------------------- AlpacaEval


def sniff_alpaca(rec: Mapping[str, object]) -> bool:
    return isinstance(rec.get("instruction"), str) and "output" in rec


def parse_alpaca(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    instruction = common.get_str(rec.get("instruction"), "instruction")
    extra = rec.get("input")
    if isinstance(extra, str) and extra.strip():
        instruction = f"{instruction}\n\n{extra}"
    output = common.get_str(rec.get("output"), "output")
    messages = [make_message("user", [TextPart(instruction)] if instruction else []),
                make_message("assistant", [TextPart(output)] if output else [])]
    meta = common.scalar_metadata(rec, {"instruction", "input", "output"})
    return [common.Conversation(messages, model=common.model_of(rec), id=common.id_of(rec), metadata=meta)]


QUESTIONS = common.FormatSpec("mt-bench-questions", "MT-bench / Arena-Hard question file (joined into "
                              "answers)", sniff_questions, parse_questions, auxiliary=True)
ANSWERS = common.FormatSpec("mt-bench", "MT-bench / Arena-Hard model answers joined with questions",
                            sniff_answers, parse_answers)
ALPACA = common.FormatSpec("alpaca-eval", "AlpacaEval model_outputs (instruction/output/generator)",
                           sniff_alpaca, parse_alpaca)
