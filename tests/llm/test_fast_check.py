"""The fast schema check never accepts what jsonschema rejects, and does accept the usual
valid replies (else it would only add cost)."""

from __future__ import annotations

import random
from typing import Any

import jsonschema
import pytest

from featdisco.llm.validate import fast_check
from featdisco.stages.featurize import FeaturizeConfig, feature_schema
from featdisco.stages.name import NAME_SCHEMA
from featdisco.stages.rate import rating_schema
from tests.llm.conftest import SCHEMA

MIXED: dict[str, Any] = {
    "type": "object", "title": "mixed", "required": ["n", "kind"],
    "properties": {"n": {"type": "number", "minimum": 0.5, "maximum": 3},
                   "kind": {"enum": ["a", "b", 1, None]},
                   "maybe": {"type": ["string", "null"], "maxLength": 3}},
    "additionalProperties": {"type": "integer"},
}
SCHEMAS = [SCHEMA, feature_schema(FeaturizeConfig()), NAME_SCHEMA, rating_schema(3), MIXED]

ATOMS: list[Any] = [None, True, False, 0, 1, 2, 3, 7, 101, -1, 0.5, 1.0, 2.0, 2.5, 1e9, "",
                    "a", "ab", "abcd", "x" * 130, "b", [], {}]


def _value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 2 or r < 0.5:
        return rng.choice(ATOMS)
    if r < 0.75:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 16))]
    keys = ["echo", "features", "label", "description", "ratings", "id", "interest", "reason",
            "private", "n", "kind", "maybe", "zzz"]
    return {k: _value(rng, depth + 1) for k in rng.sample(keys, rng.randint(0, 5))}


def _valid(schema: dict[str, Any], rng: random.Random) -> Any:
    """A valid instance, then possibly one small change that may break it."""
    if schema is SCHEMAS[0]:
        x: Any = {"echo": "e", "features": ["f"] * rng.randint(1, 4)}
    elif schema is SCHEMAS[1]:
        x = {"features": ["a feature"] * rng.randint(10, 20)}
    elif schema is NAME_SCHEMA:
        x = {"label": "Label", "description": "A sentence."}
    elif schema is MIXED:
        x = {"n": rng.choice([1, 2.5]), "kind": rng.choice(["a", 1, None]), "extra": 4}
    else:
        x = {"ratings": [{"id": i, "interest": 50, "reason": "why", "private": False, "private_reason": ""}
                         for i in (1, 2, 3)]}
    if rng.random() < 0.7:  # mutate one spot
        target = x
        path = []
        while isinstance(target, dict | list) and target and rng.random() < 0.7:
            k = rng.choice(list(target)) if isinstance(target, dict) else rng.randrange(len(target))
            path.append((target, k))
            target = target[k]
        if path:
            parent, k = path[-1]
            if rng.random() < 0.2 and isinstance(parent, dict):
                del parent[k]
            else:
                parent[k] = _value(rng)
        elif isinstance(x, dict):
            x[rng.choice(["zzz", "echo", "extra"])] = _value(rng)
    return x


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_fast_check_never_accepts_what_jsonschema_rejects(index: int) -> None:
    schema = SCHEMAS[index]
    check = fast_check(schema)
    assert check is not None
    validator = jsonschema.validators.validator_for(schema)(schema)
    rng = random.Random(index)
    accepted = 0
    for i in range(4000):
        x = _valid(schema, rng) if i % 2 else _value(rng)
        if check(x):
            accepted += 1
            assert validator.is_valid(x), (schema, x)
    assert accepted > 200  # the fast path does engage


def test_fast_check_accepts_valid_replies_and_declines_unknown_keywords() -> None:
    rng = random.Random(1)
    for schema in SCHEMAS:
        check = fast_check(schema)
        assert check is not None
        for _ in range(50):
            x = _valid(schema, random.Random(rng.random()))
            if jsonschema.validators.validator_for(schema)(schema).is_valid(x) and schema is not MIXED:
                assert check(x), (schema, x)
    for unknown in ({"type": "string", "pattern": "^a"}, {"anyOf": [{"type": "string"}]},
                    {"type": "array", "items": [{"type": "string"}]}, {"$ref": "#/x"},
                    {"type": "object", "properties": {"a": {"format": "email"}}}):
        assert fast_check(unknown) is None
