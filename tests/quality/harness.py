"""The planted-behaviour benchmark of issue 15: real hh-rlhf chats with behaviours planted
into their text, a scripted rater that featurizes, names, checks merges and scores labels
deterministically from what each prompt shows, and the figures the issue asks for.

Planted (each a marker in the text and ~50-100 wordings of its feature, so an embedder
spreads one behaviour the way a real rater's paraphrases spread):

- response "Apologetic opening" (25% of responses), "Answers in rhyming verse" (90% of
  responses whose user turn asked for rhyme, 3% of others: the planted user→response link),
  "Recommends a professional" (6%);
- user "Asks for a rhyming answer" (30% of user turns), "Expresses frustration" (12%);
- "held out": user "Asks about space travel" is planted only when ``novel=True`` (transform's
  new-in-this-data check).

Every piece also gets 10 background features drawn with Zipf repetition from a 5,000-phrase
vocabulary (verb × object × modifier) that shares no words with the planted behaviours.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from sklearn.metrics import normalized_mutual_info_score

from featdisco.stages.merge import duplicate_share
from tests.conftest import SHARED_DATA
from tests.fakes.openai_server import FakeRequest, Reply
from tests.pipeline_fakes import _MODS, _OBJECTS, _VERBS, features_reply, pipeline_handler

HH = SHARED_DATA / "hh_rlhf" / "harmless-base_test.jsonl.gz"


@dataclass(frozen=True)
class Planted:
    """One planted behaviour: the piece kind it is planted in, the marker put before or after
    the text, and its feature's wordings (each head with each tail)."""

    kind: str
    marker: str
    where: str  # prefix or suffix
    heads: tuple[str, ...]
    tails: tuple[str, ...]
    novel: bool = False  # planted only in new data (transform's new-in-this-data check)

    @property
    def wordings(self) -> list[str]:
        return [h + t for h in self.heads for t in self.tails]


PLANTED: dict[str, Planted] = {
    "Apologetic opening": Planted("response", "I am so sorry about that. ", "prefix",
        heads=("Opens with an apology", "Begins by apologising", "Starts with a sorry", "Apologetic opening",
               "Leads with an apology", "Apologises at the start", "Opening apology to the user",
               "Says sorry before answering", "Starts by expressing regret", "Begins with an apologetic tone"),
        tails=("", " for the confusion", " for the delay", " for the inconvenience", " to the user",
               " before helping", " in the first sentence", " for any misunderstanding")),
    "Answers in rhyming verse": Planted("response", "\nRoses are red, violets are blue.", "suffix",
        heads=("Answers in rhyming verse", "Replies with a rhyming poem", "Uses rhymes in the reply",
               "Writes the answer as a poem", "Rhyming couplets", "Poetic rhyming response",
               "Includes a short rhyme", "Ends with a rhyming verse", "Responds in verse"),
        tails=("", " about roses", " with a playful tone", " as requested", " of two lines",
               " in a classic meter")),
    "Recommends a professional": Planted("response", " You may want to consult a licensed professional.", "suffix",
        heads=("Recommends consulting a professional", "Refers the user to an expert",
               "Suggests seeing a licensed professional", "Advises professional help",
               "Points to a qualified specialist", "Suggests talking to a doctor or lawyer"),
        tails=("", " for further advice", " before acting", " as a precaution", " for their situation")),
    "Asks for a rhyming answer": Planted("user", " Please answer in rhyme.", "suffix",
        heads=("Asks for a rhyming answer", "Requests the reply in rhyme", "Wants the answer as a poem",
               "Requests verse instead of prose", "Asks the assistant to rhyme", "Poetry format requested"),
        tails=("", " explicitly", " at the end of the message", " politely", " as a fun twist")),
    "Expresses frustration": Planted("user", "Ugh, this is so annoying. ", "prefix",
        heads=("Expresses frustration", "Sounds annoyed", "Complains about an annoyance", "Irritated tone",
               "Shows impatience", "Vents annoyance", "Frustrated opening remark"),
        tails=("", " at the start", " about the situation", " with an interjection", " openly")),
    "Asks about space travel": Planted("user", " Also, how would a trip to Mars work?", "suffix", novel=True,
        heads=("Asks about space travel", "Curious about going to Mars",
               "Question about rockets and astronauts", "Interested in interplanetary trips",
               "Asks how spaceflight works", "Wonders about life on Mars"),
        tails=("", " briefly", " out of curiosity", " as an aside", " in detail")),
}
BEHAVIOUR_OF = {w: b for b, spec in PLANTED.items() for w in spec.wordings}
CAUSE, CAUSED = "Asks for a rhyming answer", "Answers in rhyming verse"
_BG_VERBS = tuple(v for v in _VERBS if v not in ("Apologises for", "Refuses"))
_BG_OBJECTS = tuple(o for o in _OBJECTS if o not in ("poetry", "medical advice", "legal risk"))
BACKGROUND = [f"{v} {o}{m}" for v in _BG_VERBS for o in _BG_OBJECTS for m in _MODS]
_BG_PARTS = {p: (v, o) for v in _BG_VERBS for o in _BG_OBJECTS for m in _MODS for p in [f"{v} {o}{m}"]}
_CUM = list(itertools.accumulate(1.0 / (r + 1) ** 1.1 for r in range(len(BACKGROUND))))
_MARKERS = {b: spec.marker.strip() for b, spec in PLANTED.items()}


# ---------------------------------------------------------------- data


def _hh_dialogues() -> Iterator[list[tuple[str, str]]]:
    with gzip.open(HH, "rt", encoding="utf-8") as f:
        for line in f:
            parts = re.split(r"\n\n(Human|Assistant): ", json.loads(line)["chosen"])
            turns = [(("user" if role == "Human" else "assistant"), text.strip())
                     for role, text in zip(parts[1::2], parts[2::2], strict=True) if text.strip()]
            if turns and turns[0][0] == "user":
                yield turns


def write_transcripts(path: Path, n: int, *, seed: int = 0, start: int = 0, novel: bool = False) -> Path:
    """``n`` hh-rlhf chats (from dialogue ``start`` on) with the behaviours planted, as JSONL."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i, turns in enumerate(itertools.islice(_hh_dialogues(), start, start + n)):
            messages, asked = [], False
            for role, text in turns:
                if role == "user":
                    asked = rng.random() < 0.3
                    chosen = [CAUSE] if asked else []
                    chosen += [b for b, p in (("Expresses frustration", 0.12),) if rng.random() < p]
                    if novel and rng.random() < 0.3:
                        chosen.append("Asks about space travel")
                else:
                    chosen = [b for b, p in (("Apologetic opening", 0.25), ("Recommends a professional", 0.06))
                              if rng.random() < p]
                    if rng.random() < (0.9 if asked else 0.03):
                        chosen.append(CAUSED)
                for b in chosen:
                    spec = PLANTED[b]
                    text = spec.marker + text if spec.where == "prefix" else text + spec.marker
                messages.append({"role": role, "content": text})
            f.write(json.dumps({"id": f"hh{start + i}", "model": "hh", "messages": messages}) + "\n")
    return path


# ---------------------------------------------------------------- the scripted rater


def _user_text(req: FakeRequest) -> str:
    msgs = req.body.get("messages", [])
    return next((m["content"] for m in reversed(msgs) if m.get("role") == "user"), "")


def _features(piece: str) -> list[str]:
    rng = random.Random(hashlib.sha256(piece.encode()).hexdigest())
    out: list[str] = []
    while len(out) < 10:
        import bisect

        phrase = BACKGROUND[min(bisect.bisect(_CUM, rng.random() * _CUM[-1]), len(BACKGROUND) - 1)]
        if phrase not in out:
            out.append(phrase)
    for b, marker in _MARKERS.items():
        if marker in piece:
            out.insert(rng.randrange(len(out) + 1), rng.choice(PLANTED[b].wordings))
    return out


def theme(text: str) -> str:
    """What a feature is about, as the scripted rater reads it: its planted behaviour, or for
    a background feature its object."""
    if text in BEHAVIOUR_OF:
        return BEHAVIOUR_OF[text]
    parts = _BG_PARTS.get(text)
    return f"Talks about {parts[1]}" if parts else "Miscellaneous"


def scripted_label(members: list[str]) -> str:
    """The label the scripted namer gives members: their most common theme."""
    counts = Counter(theme(m) for m in members)
    return min(counts, key=lambda t: (-counts[t], t)) if counts else "Miscellaneous"


def handler(req: FakeRequest) -> Reply:
    user = _user_text(req)
    m = re.search(r"<piece>\n(.*)\n</piece>", user, re.DOTALL)
    if m:
        return features_reply(req, m.group(1), _features(m.group(1)))
    if "sampled at random from one cluster" in user:
        own = user.split("For contrast", 1)[0].split("\nWrite:", 1)[0]
        members = [line[2:] for line in own.splitlines() if line.startswith("- ")]
        label = scripted_label(members)
        return Reply(content=json.dumps({"label": label, "description": f"Features: {label.lower()}."}))
    if "describe the same behaviour" in user:
        blocks = re.findall(r"^Cluster (\d+): .*\n((?:- .*\n?)+)", user, re.MULTILINE)
        by_label: dict[str, list[int]] = {}
        shown: dict[str, list[str]] = {}
        for cid, body in blocks:
            members = [x[2:] for x in body.strip().splitlines()]
            lab = scripted_label(members)
            by_label.setdefault(lab, []).append(int(cid))
            shown.setdefault(lab, []).extend(members)
        groups = [{"ids": ids, "label": lab, "description": f"Features: {lab.lower()}."}
                  for lab, ids in by_label.items() if len(ids) > 1]
        return Reply(content=json.dumps({"groups": groups}))
    label = re.search(r"^Label: (.*)$", user, re.MULTILINE)
    if label:
        items = re.findall(r"^(\d+)\. (.*)$", user, re.MULTILINE)
        return Reply(content=json.dumps({"fits": [int(i) for i, t in items if theme(t) == label.group(1)]}))
    return pipeline_handler(req)  # rating: the pipeline tests' scripted rater


# ---------------------------------------------------------------- figures


def measure(run_dir: Path, probes: bool = True) -> dict[str, Any]:
    """The issue's figures for a finished run."""
    feats = pq.read_table(run_dir / "features.parquet", columns=["feature_id", "kind", "text"]).to_pandas()
    assign = pq.read_table(run_dir / "assignments.parquet", columns=["feature_id", "cluster_id"]).to_pandas()
    clusters = pq.read_table(run_dir / "clusters.parquet", columns=["cluster_id", "kind", "label"]).to_pandas()
    df = feats.merge(assign, on="feature_id")
    df["behaviour"] = df["text"].map(BEHAVIOUR_OF)
    planted = df[df["behaviour"].notna()]
    out: dict[str, Any] = {"clusters": {k: int((clusters["kind"] == k).sum()) for k in ("user", "response")}}
    share = {}
    for b, g in planted.groupby("behaviour"):
        sizes = g["cluster_id"].value_counts()
        share[b] = {"largest": round(float(sizes.iloc[0] / len(g)), 3), "clusters": int((sizes >= 3).sum()),
                    "features": len(g)}
    out["share_in_largest"] = share
    out["nmi"] = round(float(normalized_mutual_info_score(planted["behaviour"], planted["cluster_id"])), 4)
    label_of = dict(zip(clusters["cluster_id"], clusters["label"], strict=True))
    dup: dict[str, Any] = {}
    for kind, g in clusters.groupby("kind"):
        norm = g["label"].fillna("").str.lower().str.strip()
        counts = norm.value_counts()
        planted_labels = [lab for lab in counts.index if lab in {b.lower() for b in PLANTED}]
        dup[kind] = {"duplicate_label_share": round(duplicate_share(g["label"].tolist()), 3),
                     "planted_labels_shared": {lab: int(counts[lab]) for lab in planted_labels if counts[lab] > 1}}
    raw = run_dir / "raw_labels.parquet"
    if raw.exists():  # the same share for the k-means clusters, before merging
        kinds = pq.read_table(run_dir / "raw_clusters.parquet", columns=["kind"]).column(0).to_pylist()
        labels = pq.read_table(raw, columns=["label"]).column(0).to_pylist()
        for kind in dup:
            dup[kind]["before_merge"] = round(duplicate_share([lab for lab, k in zip(labels, kinds, strict=True)
                                                               if k == kind]), 3)
    out["duplicates"] = dup
    if probes:
        from featdisco.analysis.probes import run_probes

        target = planted[planted["behaviour"] == CAUSED]["cluster_id"].value_counts().index[0]
        res = run_probes(run_dir, n_jobs=1).set_index("cluster_id")
        out["probe_f1"] = round(float(res.loc[target, "f1"]), 3) if target in res.index else None
        out["probe_target_label"] = label_of.get(int(target))
    return out


def planted_runner(server_url: str, run_dir: Path, data: Path, **cfg: Any) -> Any:
    """Run the pipeline on ``data`` against the scripted rater at ``server_url``."""
    from featdisco.pipeline import Pipeline, PipelineConfig

    base: dict[str, Any] = {"llm": "openai", "model": "scripted", "base_url": server_url, "concurrency": 16}
    base.update(cfg)
    return Pipeline(run_dir, PipelineConfig(**base)).run([data])

