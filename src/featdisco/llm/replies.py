"""What the LLM fills: one pydantic model per reply shape.

Each model is the single statement of a reply's shape. :meth:`Reply.json_schema` generates the
JSON Schema that is sent (as structured-output format, GBNF grammar or prompt text), and the
engine validates every reply with the same model (:func:`featdisco.llm.validate.check_reply`),
so the schema sent and the check applied cannot drift apart. Stages read a reply with
:meth:`Reply.read`, which gives typed fields instead of dict lookups.

These are not the stored records: a stored row (``features.parquet``, ``labels.parquet``, ...)
has ids, provenance and cleaned text, and is declared as an Arrow schema beside its stage.

Shapes whose bounds come from the run's settings (features per piece, clusters per rating
batch, items per label score) are built per bound by a cached factory, so a stage sends one
schema object many times (validators and wire forms are memoised by identity).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, create_model

from featdisco.errors import FeatdiscoError

FEATURE_CHARS = (2, 120)
QUOTE_CHARS = 300  # a short verbatim quote, not a paragraph
REASON_CHARS = 400


class Reply(BaseModel):
    """A reply shape. ``schema_name`` names it to providers (OpenAI's ``json_schema.name``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_name: ClassVar[str] = "reply"

    @classmethod
    def json_schema(cls) -> Mapping[str, object]:
        """The JSON Schema sent for this shape: inlined (no ``$ref``), without titles, one
        object per class, not to be changed in place (it is shared, and known by identity)."""
        return _schema_of(cls)

    @classmethod
    def read(cls, data: Any) -> Self:
        """The typed reply from already-parsed JSON (a cached reply, or one the engine checked)."""
        return cls.model_validate(data, strict=True)


# ----------------------------------------------------------------------------- featurize

FeatureText = Annotated[str, Field(min_length=FEATURE_CHARS[0], max_length=FEATURE_CHARS[1])]


class Features(Reply):
    """Featurize, plain (``featurize.v1``): ``{"features": ["...", ...]}``."""

    schema_name: ClassVar[str] = "features"
    features: list[FeatureText]

    @staticmethod
    def bounded(min_items: int, max_items: int) -> type[Features]:
        return _bounded_features(min_items, max_items)


class QuotedFeature(BaseModel):
    """One feature with the verbatim quote that shows it (empty for whole-piece properties)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    feature: FeatureText
    quote: Annotated[str, Field(max_length=QUOTE_CHARS)]


class EvidencedFeatures(Reply):
    """Featurize with evidence (``featurize.v2``): ``{"features": [{"feature", "quote"}]}``."""

    schema_name: ClassVar[str] = "features"
    features: list[QuotedFeature]

    @staticmethod
    def bounded(min_items: int, max_items: int) -> type[EvidencedFeatures]:
        return _bounded_evidenced(min_items, max_items)


@cache
def _bounded_features(lo: int, hi: int) -> type[Features]:
    return create_model("Features", __base__=Features,
                        features=(list[FeatureText], Field(min_length=lo, max_length=hi)))


@cache
def _bounded_evidenced(lo: int, hi: int) -> type[EvidencedFeatures]:
    return create_model("EvidencedFeatures", __base__=EvidencedFeatures,
                        features=(list[QuotedFeature], Field(min_length=lo, max_length=hi)))


# ----------------------------------------------------------------------------- naming, rating

class ClusterLabel(Reply):
    """A cluster's name; parents in the hierarchy are named with the same shape."""

    schema_name: ClassVar[str] = "cluster_label"
    label: Annotated[str, Field(min_length=2, max_length=80)]
    description: Annotated[str, Field(min_length=2, max_length=REASON_CHARS)]


class Rating(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Annotated[int, Field(ge=1)]
    interest: Annotated[int, Field(ge=1, le=100)]
    reason: Annotated[str, Field(min_length=2, max_length=REASON_CHARS)]
    private: bool
    private_reason: Annotated[str, Field(max_length=300)]  # what is private; checked in stages/rate.py


class Ratings(Reply):
    """A batch of cluster ratings; ``for_batch(n)`` bounds ids and count to the batch."""

    schema_name: ClassVar[str] = "cluster_ratings"
    ratings: list[Rating]

    @staticmethod
    def for_batch(n: int) -> type[Ratings]:
        return _ratings(n)


@cache
def _ratings(n: int) -> type[Ratings]:
    item = create_model("Rating", __base__=Rating, id=(Annotated[int, Field(ge=1, le=n)], ...))
    return create_model("Ratings", __base__=Ratings,
                        ratings=(list[item], Field(min_length=n, max_length=n)))  # type: ignore[valid-type]


class LabelFit(Reply):
    """Label scoring: the numbers of the shown items that fit the label."""

    schema_name: ClassVar[str] = "label_fit"
    fits: list[Annotated[int, Field(ge=1)]]

    @staticmethod
    def for_items(n: int) -> type[LabelFit]:
        return _label_fit(n)


@cache
def _label_fit(n: int) -> type[LabelFit]:
    return create_model("LabelFit", __base__=LabelFit,
                        fits=(list[Annotated[int, Field(ge=1, le=n)]], Field(max_length=n)))


# ----------------------------------------------------------------------------- merge

class MergeGroup(BaseModel):
    """Shown clusters (numbered from 1) that describe one behaviour, and its name."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ids: Annotated[list[int], Field(min_length=2)]
    label: Annotated[str, Field(min_length=2, max_length=80)]
    description: Annotated[str, Field(min_length=2, max_length=REASON_CHARS)]


class MergeGroups(Reply):
    """The merge check (``merge`` prompt): the groups of near-duplicate clusters in a batch,
    none when every cluster is distinct."""

    schema_name: ClassVar[str] = "merge_groups"
    groups: list[MergeGroup]


# ----------------------------------------------------------------------------- scan

class ScanAnswer(Reply):
    """``featdisco scan``: an answer to one question about one piece, the verbatim quote it
    rests on (empty when the answer is no or about the whole piece) and a one-sentence reason.
    ``answer``'s type depends on ``--answer``: see :func:`scan_answer`."""

    schema_name: ClassVar[str] = "scan_answer"
    answer: Any
    quote: Annotated[str, Field(max_length=QUOTE_CHARS)]
    reason: Annotated[str, Field(min_length=2, max_length=REASON_CHARS)]


@cache
def scan_answer(kind: str, low: int = 1, high: int = 10, labels: tuple[str, ...] = ()) -> type[ScanAnswer]:
    """The answer shape for ``--answer bool`` (a JSON boolean), ``scale`` (an integer in
    ``low..high``) or ``labels`` (one of ``labels``)."""
    answer: Any
    if kind == "bool":
        answer = bool
    elif kind == "scale":
        answer = Annotated[int, Field(ge=low, le=high)]
    elif kind == "labels":
        if not labels:
            raise FeatdiscoError("--answer labels: needs at least one label, e.g. labels:yes,no,unclear")
        answer = Literal[labels]
    else:
        raise FeatdiscoError(f"unknown answer kind {kind!r}: use bool, scale:LOW-HIGH or labels:A,B,...")
    return create_model("ScanAnswer", __base__=ScanAnswer, answer=(answer, ...))


# ----------------------------------------------------------------------------- ask

ASK_TOOLS = ("find", "scan", "compare", "cooccur")
ASK_MAX_STEPS = 5


class AskStep(BaseModel):
    """One step of an ``ask`` plan: a tool and its arguments, one flat record for every tool
    (strict structured output has no optional fields); arguments a tool does not use are
    empty, and :mod:`featdisco.evidence.ask` checks each tool's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: Literal["find", "scan", "compare", "cooccur"]
    purpose: Annotated[str, Field(min_length=2, max_length=REASON_CHARS)]
    query: Annotated[str, Field(max_length=REASON_CHARS)]  # find: what to look for; scan: the question
    by: Annotated[str, Field(max_length=64)]  # compare / scan: the grouping column ("" for none)
    kind: Literal["", "user", "thought", "response"]  # find / scan: piece kind ("" for all)
    level: Literal["", "piece", "transcript"]  # cooccur
    sample: Annotated[int, Field(ge=0)]  # scan: pieces to ask (0: the cap)
    top: Annotated[int, Field(ge=0, le=20)]  # find / compare / cooccur: rows to keep (0: 10)


class AskPlan(Reply):
    """``featdisco ask``: the plan, at most :data:`ASK_MAX_STEPS` steps."""

    schema_name: ClassVar[str] = "ask_plan"
    steps: Annotated[list[AskStep], Field(min_length=1, max_length=ASK_MAX_STEPS)]


class Citation(BaseModel):
    """A quote the answer rests on, attributed to the piece it is copied from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    piece_id: Annotated[str, Field(min_length=1, max_length=200)]
    quote: Annotated[str, Field(min_length=1, max_length=QUOTE_CHARS)]


class AskAnswer(Reply):
    """``featdisco ask``: the answer, citing the steps' numbers in its text and quotes by piece."""

    schema_name: ClassVar[str] = "ask_answer"
    # no maxLength: llama.cpp rejects the grammar of a string bounded above ~1,000 characters
    # (its repetition limit); the answer's length is bounded by the call's max_tokens instead
    answer: Annotated[str, Field(min_length=2)]
    citations: Annotated[list[Citation], Field(max_length=12)]


# ----------------------------------------------------------------------------- schemas

_SCHEMAS: dict[type[Reply], Mapping[str, object]] = {}
_MODELS: dict[str, type[Reply]] = {}  # canonical schema JSON -> its model
_BY_ID: dict[int, tuple[Mapping[str, object], type[Reply]]] = {}  # the one object each model sends


def _schema_of(cls: type[Reply]) -> Mapping[str, object]:
    hit = _SCHEMAS.get(cls)
    if hit is None:
        raw = cls.model_json_schema()
        hit = _clean_object(raw, raw.get("$defs", {}))
        _SCHEMAS[cls] = hit
        _MODELS[canonical(hit)] = cls
        _BY_ID[id(hit)] = (hit, cls)
    return hit


def model_for(schema: Mapping[str, object] | None) -> type[Reply] | None:
    """The reply model that generated ``schema`` (also for a copy read back from disk, as the
    batch store does), or None for a schema written by hand."""
    if schema is None:
        return None
    hit = _BY_ID.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    return _MODELS.get(canonical(schema))


def canonical(schema: Mapping[str, object]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def _clean_object(node: Mapping[str, object], defs: Mapping[str, object]) -> dict[str, object]:
    """Inline ``$ref``s and drop ``title``s: the schema a grammar compiler, a strict
    structured-output server and a prompt reader all take without surprises."""
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = defs[ref.rsplit("/", 1)[-1]]
        assert isinstance(target, Mapping)
        return _clean_object(target, defs)
    # ``description`` strings are the classes' docstrings; a property *named*
    # description (ClusterLabel's) is a mapping and stays
    return {k: _clean(v, defs) for k, v in node.items()
            if k not in ("title", "$defs") and not (k == "description" and isinstance(v, str))}


def _clean(node: object, defs: Mapping[str, object]) -> object:
    if isinstance(node, Mapping):
        return _clean_object(node, defs)
    if isinstance(node, list):
        return [_clean(v, defs) for v in node]
    return node
