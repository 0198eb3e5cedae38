"""Typed replies: one model per shape generates the schema sent and checks what comes back;
a schema failure says which constraint broke where, before any (shortened) data."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from featdisco.llm.base import LLMResponse
from featdisco.llm.replies import (
    ClusterLabel,
    EvidencedFeatures,
    Features,
    LabelFit,
    MergeGroups,
    Ratings,
    model_for,
    scan_answer,
)
from featdisco.llm.validate import ReplyProblem, check_reply, schema_problem

MODELS = [Features.bounded(2, 3), EvidencedFeatures.bounded(1, 2), ClusterLabel, Ratings.for_batch(2),
          LabelFit.for_items(3), scan_answer("bool"), scan_answer("scale", 1, 10),
          scan_answer("labels", labels=("yes", "no")), MergeGroups]
REPLIES: list[Any] = [
    {"features": ["Asks for help", "Polite tone"]}, {"features": ["A"]}, {"features": ["ab", "cd", "ef", "gh"]},
    {"features": [{"feature": "Apologises", "quote": "sorry"}]}, {"features": [{"feature": "Apologises"}]},
    {"features": [{"feature": "Apologises", "quote": "x" * 301}]},
    {"label": "Token budget tracking", "description": "Counts tokens."}, {"label": "T", "description": "x"},
    {"label": "ok", "description": "ok", "extra": 1},
    {"ratings": [{"id": 1, "interest": 50, "reason": "ok", "private": False, "private_reason": ""},
                 {"id": 2, "interest": 5, "reason": "ok", "private": True, "private_reason": ""}]},
    {"ratings": [{"id": 3, "interest": 50, "reason": "ok", "private": False},
                 {"id": 2, "interest": 101, "reason": "ok", "private": "no"}]},
    {"fits": [1, 3]}, {"fits": [0]}, {"fits": [1, 2, 3, 3]}, {"fits": [True]},
    {"answer": True, "quote": "", "reason": "Because."}, {"answer": 7, "quote": "q", "reason": "Because."},
    {"answer": "yes", "quote": "q", "reason": "Because."}, {"answer": "maybe", "quote": "q", "reason": "Because."},
    {"groups": [{"ids": [1, 3], "label": "Same thing", "description": "Both say it."}]}, {"groups": []},
    {"groups": [{"ids": [2], "label": "ok", "description": "ok"}]}, {"groups": [{"ids": ["1", 2]}]},
    {"answer": 11, "quote": "q", "reason": "Because."}, {"answer": 1.5, "quote": "q", "reason": "Because."},
    {"answer": "true", "quote": "", "reason": "Because."}, [], {}, "text", None,
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_the_model_checks_exactly_what_its_schema_says(model: Any) -> None:
    """What is sent (the generated schema, as a provider or grammar enforces it) and what is
    accepted (the model) cannot disagree: both come from one definition."""
    schema = model.json_schema()
    assert "$ref" not in json.dumps(schema) and "title" not in schema
    assert model_for(json.loads(json.dumps(schema))) is model  # a copy read back from disk
    validator = jsonschema.Draft202012Validator(schema)
    for reply in REPLIES:
        assert (schema_problem(reply, schema) is None) == validator.is_valid(reply), reply


def test_a_schema_failure_names_the_constraint_and_path_first_and_shortens_the_data() -> None:
    schema = Features.bounded(10, 20).json_schema()
    long_features = [f"Feature number {'x' * 60} {i}" for i in range(3)]
    with pytest.raises(ReplyProblem) as info:
        check_reply(LLMResponse(json.dumps({"features": long_features})), schema)
    msg = info.value.message
    assert info.value.reason == "schema"
    assert msg.startswith("the reply breaks the schema at features: List should have at least 10 items")
    assert "min_length=10" in msg[:150] and "(3 items)" in msg
    assert len(msg) < 300  # the data is shortened, never the reason
    with pytest.raises(ReplyProblem) as info:
        check_reply(LLMResponse(json.dumps({"features": ["ok feature"] * 9 + ["°"]})), schema)
    assert info.value.message.startswith("the reply breaks the schema at features/9: String should have "
                                         "at least 2 characters")


def test_a_hand_written_schema_gets_the_same_kind_of_message() -> None:
    schema = {"type": "object", "properties": {"xs": {"type": "array", "minItems": 5}}, "required": ["xs"]}
    with pytest.raises(ReplyProblem) as info:
        check_reply(LLMResponse(json.dumps({"xs": ["y" * 500, "z"]})), schema)
    msg = info.value.message
    assert msg.startswith("the reply breaks the schema at xs: minItems 5 violated; got [")
    assert "(2 items)" in msg and len(msg) < 300


def test_stages_read_typed_replies() -> None:
    reply = Ratings.for_batch(1).read({"ratings": [{"id": 1, "interest": 9, "reason": "ok", "private": False, "private_reason": ""}]})
    assert reply.ratings[0].interest == 9 and reply.ratings[0].private is False
    with pytest.raises(ValueError):
        ClusterLabel.read({"label": "x" * 81, "description": "ok"})
