"""What strict structured outputs get: the schema's shape, not bounds some models refuse."""

from __future__ import annotations

from featdisco.llm.openai import strict_schema


def test_bounds_are_stripped_but_properties_named_like_keywords_stay() -> None:
    schema = {
        "type": "object",
        "properties": {
            "features": {"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 120},
                         "minItems": 10, "maxItems": 20},
            "format": {"type": "string", "pattern": "^[a-z]+$"},
            "minimum": {"type": "integer", "minimum": 1, "maximum": 100},
        },
        "required": ["features", "format", "minimum"],
        "additionalProperties": False,
    }
    assert strict_schema(schema) == {
        "type": "object",
        "properties": {
            "features": {"type": "array", "items": {"type": "string"}},
            "format": {"type": "string"},
            "minimum": {"type": "integer"},
        },
        "required": ["features", "format", "minimum"],
        "additionalProperties": False,
    }
    assert schema["properties"]["features"]["minItems"] == 10  # the caller's schema is untouched
