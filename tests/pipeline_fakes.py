"""A scripted autorater for pipeline tests, served by the fake OpenAI server.

Each piece is put in one of three known groups (by a hash of its text) and gets features
drawn from that group's vocabulary, so a test knows the true grouping of every feature and
can measure how well clustering recovers it. Naming and rating requests get answers derived
from what they were shown.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator

import pytest

from tests.fakes.openai_server import FakeOpenAIServer, FakeRequest, Reply

GROUPS: dict[str, list[str]] = {
    "markdown": [
        "Relies on markdown headers", "Markdown headings structure the answer", "Formats text with markdown sections",
        "Heavy markdown formatting", "Uses bold markdown headings", "Organises content under markdown titles",
        "Markdown formatted layout", "Structured with markdown headers", "Adds markdown section headings",
        "Uses many markdown headings", "Markdown used for structure", "Section headers in markdown",
    ],
    "cooking": [
        "Talks about cooking recipes", "Discusses food preparation", "Mentions kitchen ingredients",
        "Describes how to cook a meal", "Recipe instructions", "Cooking techniques explained",
        "Food and cuisine topic", "Lists ingredients for a dish", "Baking advice",
        "Talks about preparing dinner", "Culinary tips", "Discusses flavours of food",
    ],
    "sadness": [
        "Expresses sadness", "Melancholy tone", "Sounds depressed", "Mentions feeling lonely",
        "Gloomy emotional mood", "Expresses grief", "Sad and downcast wording",
        "Talks about feeling hopeless", "Emotional distress", "Sorrowful language", "Mentions crying",
        "Low mood and despair",
    ],
}
GROUP_NAMES = list(GROUPS)
GROUP_OF_FEATURE = {f: g for g, feats in GROUPS.items() for f in feats}
HALLUCINATED = "words the piece never said"  # the quote of every fifth feature: flagged unverified
REWORD = "Word every feature anew."  # a featurize prompt with this line gets reworded features
REWORDED = "in new words"
_PIECE = re.compile(r"<piece>\n(.*)\n</piece>", re.DOTALL)


def group_of_text(text: str) -> str:
    return GROUP_NAMES[int(hashlib.sha256(text.encode()).hexdigest(), 16) % len(GROUP_NAMES)]


def features_for(text: str, n: int = 10) -> list[str]:
    rng = random.Random(text)
    return rng.sample(GROUPS[group_of_text(text)], n)


def quote_for(text: str, i: int) -> str:
    """The scripted quote of feature ``i`` of a piece: empty for the first (a whole-piece
    property), invented for every fifth, else a few of the piece's words re-cased and
    re-spaced as models do (still verifiable)."""
    if i == 0:
        return ""
    if i % 5 == 4:
        return HALLUCINATED
    words = text.split()
    start = (i * 7) % max(1, len(words) - 2)
    quote = "  ".join(words[start:start + 3])
    return quote.upper() if i % 2 else quote


def expected_quotes(n_features: int = 10) -> dict[str, int]:
    """What :func:`quote_for` gives over ``n_features`` features of a piece."""
    hallucinated = sum(1 for i in range(1, n_features) if i % 5 == 4)
    return {"empty": 1, "unverified": hallucinated, "verified": n_features - 1 - hallucinated}


def wants_quotes(req: FakeRequest) -> bool:
    return "verbatim quote" in json.dumps(req.body.get("messages", []))


def features_reply(req: FakeRequest, piece: str, feats: list[str]) -> Reply:
    """``feats`` in the shape the request asks for: with quotes (featurize.v2) or plain."""
    if wants_quotes(req):
        return Reply(content=json.dumps({"features": [
            {"feature": f, "quote": quote_for(piece, i)} for i, f in enumerate(feats)]}))
    return Reply(content=json.dumps({"features": feats}))


def _user_text(req: FakeRequest) -> str:
    msgs = req.body.get("messages", [])
    return next((m["content"] for m in reversed(msgs) if m.get("role") == "user"), "")


PLANTED = "remaining token budget"  # scan's scripted answer: yes exactly when the piece says this
INVENTED_QUOTE = "a sentence the piece does not contain"
BROKEN = "BROKEN-REPLY"  # a piece with this gets a reply that is not JSON, even when re-asked


def scan_reply(req: FakeRequest, piece: str) -> Reply:
    """A scan answer in the shape asked (boolean, scale or label): positive when the piece
    contains :data:`PLANTED`, with that phrase as quote in the piece's own case (an invented
    quote when the piece says "invent")."""
    if BROKEN in piece:
        return Reply(content="not json at all")
    schema = req.body.get("response_format", {}).get("json_schema", {}).get("schema", {})
    spec = schema.get("properties", {}).get("answer", {})
    found = re.search(r"\s+".join(PLANTED.split()), piece, re.IGNORECASE)
    yes = found is not None
    answer: object = yes
    if spec.get("type") == "integer":
        answer = spec.get("maximum", 10) - 1 if yes else spec.get("minimum", 1)
    elif "enum" in spec:
        answer = spec["enum"][0] if yes else spec["enum"][-1]
    quote = PLANTED if yes else ""  # re-cased and re-spaced, as models quote
    if "invent" in piece:
        quote = INVENTED_QUOTE
    reply = {"answer": answer, "quote": quote, "reason": "Scripted: " + ("says it." if yes else "does not say it.")}
    keys = schema.get("properties") or reply  # the fields asked for: the answer alone, or all three
    return Reply(content=json.dumps({k: v for k, v in reply.items() if k in keys}))


def pipeline_handler(req: FakeRequest) -> Reply:
    """Featurize, scan, name and rate requests, told apart by their prompts."""
    user = _user_text(req)
    m = _PIECE.search(user)
    first = next((str(x.get("content")) for x in req.body.get("messages", []) if x.get("role") == "user"), "")
    if req.body.get("response_format", {}).get("json_schema", {}).get("name") == "scan_question":
        # a scan's question rewritten for the judge: the fake keeps it as written
        return Reply(content=json.dumps({"question": re.search(r"\nQuestion: (.*)\n", first).group(1)}))  # type: ignore[union-attr]
    if "\nQuestion: " in first and (piece := _PIECE.search(first)):  # a scan, or its re-ask
        return scan_reply(req, piece.group(1))
    if m:
        # A featurize prompt that asks for it words every feature differently, keeping its group.
        reword = any(REWORD in str(msg.get("content")) for msg in req.body.get("messages", []))
        feats = [f"{f} {REWORDED}" if reword else f for f in features_for(m.group(1))]
        return features_reply(req, m.group(1), feats)
    if "sampled at random from one cluster" in user:
        members = [line[2:] for line in user.splitlines() if line.startswith("- ")]
        votes = [GROUP_OF_FEATURE.get(x.removesuffix(f" {REWORDED}")) for x in members]
        top = max(GROUP_NAMES, key=lambda g: votes.count(g))
        prefix = "Short cluster" if "short, concise label" in user else "Cluster"
        if sum(x.endswith(REWORDED) for x in members) > len(members) / 2:
            prefix = "Reworded cluster"
        return Reply(content=json.dumps({"label": f"{prefix} about {top}",
                                         "description": f"Features about {top}."}))
    if "describe the same behaviour" in user:  # the merge check: same majority group, same behaviour
        blocks = re.findall(r"^Cluster (\d+): .*\n((?:- .*\n?)+)", user, re.MULTILINE)
        by_group: dict[str, list[int]] = {}
        for cid, body in blocks:
            votes = [GROUP_OF_FEATURE.get(x[2:].removesuffix(f" {REWORDED}")) for x in body.strip().splitlines()]
            by_group.setdefault(max(GROUP_NAMES, key=votes.count), []).append(int(cid))
        return Reply(content=json.dumps({"groups": [
            {"ids": ids, "label": f"Cluster about {g}", "description": f"Features about {g}."}
            for g, ids in by_group.items() if len(ids) > 1]}))
    if "For every cluster give" in user:
        n = int(re.search(r"Below are (\d+) clusters", user).group(1))  # type: ignore[union-attr]
        labels = re.findall(r"^\d+\. label: (.*)$", user, re.MULTILINE)
        ratings = [{"id": i, "interest": 90 if "sadness" in labels[i - 1] else 20 + i,
                    "reason": f"Scripted rating of {labels[i - 1]}.", "private": False, "private_reason": ""}
                   for i in range(1, n + 1)]
        return Reply(content=json.dumps({"ratings": ratings}))
    return Reply(status=400, raw_body=b'{"error": {"message": "unexpected request", "type": "bad"}}')


# ---------------------------------------------------------------- a realistic, repetitive rater

_VERBS = ("Uses", "Avoids", "Explains", "Questions", "Repeats", "Summarises", "Lists", "Compares", "Refuses",
          "Hedges about", "Apologises for", "Jokes about", "Warns about", "Speculates about", "Asks about",
          "Corrects", "Praises", "Doubts", "Defines", "Plans around")
_OBJECTS = ("markdown headers", "bullet points", "code examples", "legal risk", "medical advice", "token budget",
            "the user's intent", "its own mistakes", "roleplay framing", "evaluation setting", "safety policy",
            "a recipe", "travel plans", "tax rules", "poetry", "a math proof", "unit tests", "an email draft",
            "historical dates", "the weather", "emotional support", "a product review", "chess moves",
            "physics formulas", "a job interview", "privacy concerns", "a bug report", "translation choices",
            "a movie plot", "workout routines")
_MODS = ("", " in detail", " step by step", " briefly", " repeatedly", " politely", " with examples",
         " in Spanish", " in a formal tone", " with humour")
VOCAB = [f"{v} {o}{m}" for v in _VERBS for o in _OBJECTS for m in _MODS]  # 6,000 phrases


_CUM: list[float] = []


def zipf_handler(req: FakeRequest) -> Reply:
    """Like :func:`pipeline_handler`, for benchmarks: 12 features per piece drawn with
    Zipf-like repetition (a few very common, a long tail, as real autorater output is) from
    a 6,000-phrase vocabulary; deterministic per piece."""
    import bisect
    import itertools

    user = _user_text(req)
    m = _PIECE.search(user)
    if m:
        if not _CUM:
            _CUM.extend(itertools.accumulate(1.0 / (r + 1) ** 1.1 for r in range(len(VOCAB))))
        rng = random.Random(m.group(1))
        picks: list[str] = []
        while len(picks) < 12:
            phrase = VOCAB[min(bisect.bisect(_CUM, rng.random() * _CUM[-1]), len(VOCAB) - 1)]
            if phrase not in picks:
                picks.append(phrase)
        return features_reply(req, m.group(1), picks)
    if "sampled at random from one cluster" in user:
        members = [line[2:] for line in user.splitlines() if line.startswith("- ")]
        first = members[0].split()[:3] if members else ["Misc"]
        return Reply(content=json.dumps({"label": " ".join(first), "description": "A scripted label."}))
    return pipeline_handler(req)


# A synthetic lexicon of 5,000 two-syllable words ("bako", "tuvi", ...): the benchmark's
# transcripts use only 29 real words, so features built from piece words alone repeat more
# and more as a run grows (510k distinct of 4.3M at 100k transcripts); one lexicon word per
# feature keeps them unique at any scale.
_SYLLABLES = [c + v for c in "bdfgklmnprstvzhjcwxy" for v in "aeiou"]
_LEXICON = [a + b for a in _SYLLABLES for b in _SYLLABLES][::2]


def unique_handler(req: FakeRequest) -> Reply:
    """Like :func:`zipf_handler`, but most features are unique, as a frontier rater's are
    (a public replication found 33.9k distinct of 42.5k): 3 common features per piece from
    the Zipf vocabulary, 4 built from the piece's own words (these repeat across a big
    run), and 5 that also carry a word of a 5,000-word synthetic lexicon (unique). At 100k
    transcripts that gives about half the features distinct."""
    user = _user_text(req)
    m = _PIECE.search(user)
    if not m:
        return zipf_handler(req)
    common = [f if isinstance(f, str) else f["feature"]
              for f in json.loads(zipf_handler(req).content or "{}")["features"][:3]]
    rng = random.Random(m.group(1))
    words = [w for w in re.findall(r"[a-z]+", m.group(1).lower()) if len(w) > 2] or ["text"]
    own = [f"{rng.choice(_VERBS)} {rng.choice(words)} {rng.choice(words)} {rng.choice(_OBJECTS)}"
           for _ in range(4)]
    rare = [f"{rng.choice(_VERBS)} {rng.choice(words)} {rng.choice(_LEXICON)} {rng.choice(_OBJECTS)}"
            for _ in range(5)]
    return features_reply(req, m.group(1), common + own + rare)


# Fixtures for a module that runs pipelines against this fake: import both there (they are
# registered as ``server`` and ``api_key``).
@pytest.fixture(scope="session", name="server")
def pipeline_server() -> Iterator[FakeOpenAIServer]:
    """The fake OpenAI-compatible server on 127.0.0.1, answering as :func:`pipeline_handler`."""
    with FakeOpenAIServer(pipeline_handler) as srv:
        yield srv


@pytest.fixture(autouse=True, name="api_key")
def fake_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key the fake accepts; never a real one."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
