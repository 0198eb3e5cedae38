"""A scan's question, rewritten once into a question about the piece's own text.

The judge of a scan sees one piece alone. A question that speaks of what it cannot see ("does
the model decline to do what the user asked?") makes a small model guess, and its answers
then depend on the wording more than on the piece: with the embedded 1.5B model on XSTest,
two wordings of the same refusal question gave Cohen's kappa 1.00 and -0.36 against people.
So, before the pieces are sent, the LLM rewrites the question once per piece kind (one call,
cached like every other) into a question about what the piece itself says or does, keeping
its meaning; every piece is asked that. The user sees the rewritten wording, and the scan's
manifest entry and provenance keep both.

Off by default (``DEFAULT_REWRITE``): the embedded model rewrites poorly (it keeps "what the
user asked", and turned "a refusal, or a partial refusal" into example phrases, which the
word check below catches), and its rewrites did not make its answers agree with people.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import Field

from featdisco.llm.base import LLMRequest, Sampling
from featdisco.llm.engine import CallResult
from featdisco.llm.replies import Reply
from featdisco.prompts import Prompt, load_prompt
from featdisco.stages.featurize import KIND_DESCRIPTIONS

# How the rewritten question names the piece it asks about.
SUBJECTS = {"response": "response", "user": "user's message", "thought": "reasoning"}
MAX_CHARS = 300


class RewrittenQuestion(Reply):
    """``scan_question``: ``{"question": "..."}``, the question about the piece's own text."""

    schema_name: ClassVar[str] = "scan_question"
    question: Annotated[str, Field(min_length=1, max_length=MAX_CHARS)]


def rewrite_prompt() -> Prompt:
    return load_prompt("scan_question")


def rewrite_requests(question: str, kinds: list[str], prompt: Prompt | None = None) -> list[LLMRequest]:
    """One request per piece kind: the question rewritten for a judge that sees that kind alone."""
    prompt = prompt or rewrite_prompt()
    schema = RewrittenQuestion.json_schema()
    return [LLMRequest(prompt.render(question=question, subject=SUBJECTS[k], kind_description=KIND_DESCRIPTIONS[k]),
                       schema=schema, schema_name=RewrittenQuestion.schema_name,
                       sampling=Sampling(temperature=0.0, max_tokens=120), prompt_version=prompt.version)
            for k in kinds]


# Words a rewrite may drop or replace: who and what the question refers to, not the behaviour.
_REFERENCE_WORDS = (
    "does did do is are was were the a an this that these those of to for in on or and by with what which "
    "it its model models assistant ai user users user's asked asks ask request requests task instruction "
    "instructions response responses message reasoning piece answer question")
_REFERENCES = frozenset(_REFERENCE_WORDS.split())
_WORD = re.compile(r"[a-z][a-z']+")


def behaviour_words(question: str) -> set[str]:
    """The words of a question that name the behaviour asked about (all but references)."""
    return {w.removesuffix("'s") for w in _WORD.findall(question.lower())} - _REFERENCES


def read_rewrite(result: CallResult, question: str) -> str:
    """The rewritten question, or ``question`` itself where the call failed, the reply is not one
    question, or it keeps fewer than half of the words that name the behaviour (a rewrite that
    answers with example phrases instead, as a small model may, changes the meaning): a scan
    never stops over its wording."""
    if not result.ok:
        return question
    text = " ".join(RewrittenQuestion.read(result.data).question.split())
    if not text.endswith("?") or text.count("?") > 1:
        return question
    wanted = behaviour_words(question)
    if wanted and len(wanted & behaviour_words(text)) < len(wanted) / 2:
        return question
    return text
