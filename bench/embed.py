"""Benchmark the embed stage on the default model: overhead and the gain from de-duplication.

1. Throughput on distinct strings: ``embed_rows`` (no cache, and with a cold on-disk
   cache) against raw onnxruntime on the same model file, the same tokenizer, the same
   strings and the same model batch size, in the same process, runs interleaved and the
   best of ``--reps`` kept. Raw comes twice: the naive loop in input order, and the same
   loop over strings sorted by token count (the same padding work ``embed_rows`` does, so
   the ratio against it is the pure overhead of hashing, de-duplication and caching).
2. De-duplication on a realistic feature list: ``--occurrences`` feature strings drawn
   with Zipf-like repetition (rank r has weight 1/r^s) from a vocabulary of realistic
   short feature phrases (SPEC.md's example features first, then phrases composed from
   behaviour templates); time to embed every occurrence (raw, sorted) against
   ``embed_rows``, which embeds each distinct string once. Also a warm-cache rerun.

    python bench/embed.py [--distinct 3000] [--occurrences 20000] [--zipf 1.1] [--reps 3]

3. ``--compare minilm,static [--features RUN/features.parquet]``: the embedders side by side
   instead: distinct strings per second of each on a run's feature strings (or the phrase
   vocabulary above without ``--features``), embedded through the stage's code with no cache,
   interleaved, best of ``--reps``; then the agreement of each one's clustering with the
   first's (adjusted Rand; featdisco's spherical k-means, the automatic k, seed 0), per kind
   on the run's features and on real MT-bench text (question turns; first sentences of
   the answers), plus NMI of the MT-bench questions clustered at k = 8 with their 8
   categories; and the clusters of the first that the other changes most (lowest best
   Jaccard match), with members, so one can read what moved.

    python bench/embed.py --compare minilm,static --features RUN/features.parquet

   A static recipe other than the default is named with its options as JSON values, e.g.
   ``--compare 'minilm,static,static(pca_dims=null,sif_coefficient=null)'``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from featdisco.embedders import make_embedder
from featdisco.embedders.onnx_minilm import (
    MAX_SEQ_LENGTH,
    OnnxMiniLM,
    default_model_path,
    default_tokenizer_path,
    load_session,
    mean_pool,
    usable_cores,
)
from featdisco.stages.embed import EmbedStats, embed_distinct
from featdisco.storage.embed_cache import EmbeddingCache

SPEC_EXAMPLES = [
    "Talks about apples", "Uses markdown", "Emojis", "Bullet points", "Backtracks",
    "Self-corrects", "Lacks a needed tool", "Hallucinates a tool call",
    "Adopts an expert coder persona", "Roleplaying", "Few-shot prompt", "Very fictional",
    "Shows evaluation awareness", "Model is depressed", "Sycophantic response",
    "Thoughts disjointed and hard to follow", "In Mandarin", "Polite tone",
]
VERBS = ["Uses", "Mentions", "Explains", "Asks about", "Refuses", "Apologises for",
         "Summarises", "Questions", "Lists", "Compares", "Recommends", "Warns about",
         "Speculates about", "Corrects", "Repeats", "Describes", "Defines", "Jokes about",
         "Plans", "Checks", "Tracks", "Avoids", "Praises", "Criticises", "Quotes"]
OBJECTS = ["markdown tables", "code blocks", "the token budget", "a numbered list",
           "the user's feelings", "safety guidelines", "a Python function", "SQL queries",
           "historical dates", "medical advice", "legal risk", "its own mistake",
           "the system prompt", "a fictional scenario", "an earlier step", "HTTP status codes",
           "unit conversions", "a recipe", "travel plans", "a poem", "financial advice",
           "the final answer", "edge cases", "the user's identity", "copyright",
           "math notation", "a tool call", "a JSON schema", "the word count", "a citation"]
MODIFIERS = ["", "", "", " in detail", " briefly", " repeatedly", " step by step",
             " without being asked", " in Spanish", " with emojis", " at length",
             " in the first sentence", " with hedging", " confidently"]


def split_specs(specs: str) -> list[str]:
    """``a,b(x=1,y=2),c`` -> ``['a', 'b(x=1,y=2)', 'c']``: commas inside parentheses stay."""
    return [p.strip() for p in re.split(r",(?![^()]*\))", specs) if p.strip()]


def parse_spec(spec: str) -> tuple[str, dict[str, object]]:
    """``static(pca_dims=null,sif_coefficient=0.001)`` -> ``('static', {...})``: an embedder
    name and its constructor options, each value JSON (so ``null`` is None; a string
    ``"@FILE"`` stands for the words of FILE, e.g. ``vocabulary="@words.txt"``)."""
    m = re.fullmatch(r"\s*([^()]+?)\s*(?:\((.*)\))?\s*", spec)
    if m is None:
        raise SystemExit(f"bad embedder spec {spec!r}")
    opts: dict[str, object] = {}
    for item in split_specs(m.group(2) or ""):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"bad option {item!r} in {spec!r}: use KEY=JSON")
        parsed = json.loads(value)
        if isinstance(parsed, str) and parsed.startswith("@"):  # a word list: one a line
            parsed = Path(parsed[1:]).read_text(encoding="utf-8").split()
        opts[key.strip()] = parsed
    return m.group(1), opts


def use_static_recipe(opts: dict[str, object]) -> None:
    """Make ``make_embedder('static')`` (as the pipeline calls it) build the static model with
    ``opts``: for benchmarking recipes other than the default through the whole pipeline."""
    import featdisco.embedders.static as static

    base = static.StaticMiniLM

    class Recipe(base):  # type: ignore[valid-type,misc]
        def __init__(self, **kw: object) -> None:
            super().__init__(**{**opts, **kw})  # type: ignore[arg-type]

    static.StaticMiniLM = Recipe  # type: ignore[misc]


def embed_rows(texts: list[str], embedder: object, cache: object = None,
               stats: EmbedStats | None = None) -> np.ndarray:
    """Rows aligned with ``texts``, each distinct string embedded once (the embed stage)."""
    vectors, inverse = embed_distinct(texts, embedder, cache, stats=stats)  # type: ignore[arg-type]
    return vectors[inverse]


def feature_vocabulary(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct realistic feature phrases: SPEC.md's examples, then template phrases
    in a shuffled order (so frequency rank does not follow template order)."""
    combos = [f"{v} {o}{m}" for v, o, m in itertools.product(VERBS, OBJECTS, MODIFIERS)]
    combos = list(dict.fromkeys(combos))
    random.Random(seed).shuffle(combos)
    vocab = list(dict.fromkeys(SPEC_EXAMPLES + combos))
    if n > len(vocab):
        raise SystemExit(f"at most {len(vocab)} distinct phrases available")
    return vocab[:n]


def zipf_occurrences(vocab: list[str], m: int, s: float, seed: int = 0) -> list[str]:
    """``m`` draws from ``vocab`` where rank r has probability proportional to 1/r^s."""
    w = 1.0 / np.arange(1, len(vocab) + 1) ** s
    idx = np.random.default_rng(seed).choice(len(vocab), size=m, p=w / w.sum())
    return [vocab[i] for i in idx]


class RawOnnx:
    """The baseline: a plain onnxruntime loop with the same session options, tokenizer
    (padding to the batch's longest) and pooling maths, nothing else."""

    def __init__(self, batch_size: int) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(default_tokenizer_path()))
        self.tok.enable_truncation(max_length=MAX_SEQ_LENGTH)
        self.tok.enable_padding()
        self.sess = load_session(default_model_path(), usable_cores())
        self.batch_size = batch_size

    def embed(self, texts: list[str], sort: bool) -> np.ndarray:
        order = None
        if sort:  # by token count, as embed_rows' batcher does: padding then matches too
            lens = [sum(e.attention_mask) for e in self.tok.encode_batch(texts)]
            order = sorted(range(len(texts)), key=lens.__getitem__)
        seq = [texts[i] for i in order] if order is not None else texts
        out = np.empty((len(texts), 384), dtype=np.float32)
        for s in range(0, len(seq), self.batch_size):
            enc = self.tok.encode_batch(seq[s:s + self.batch_size])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            h = self.sess.run(None, {"input_ids": ids, "attention_mask": mask,
                                     "token_type_ids": np.zeros_like(ids)})[0]
            out[s:s + len(enc)] = mean_pool(h, mask)
        if order is not None:
            res = np.empty_like(out)
            res[order] = out
            return res
        return out


def best_of(reps: int, fns: dict[str, Callable[[], object]]) -> dict[str, tuple[float, float]]:
    """Best wall time and best process CPU time of each function over ``reps`` interleaved
    rounds. Interleaving spreads background load evenly over the contenders; CPU time
    (all threads of this process) is the steadier figure on a shared machine, since time
    slices taken by other processes do not count in it."""
    best = dict.fromkeys(fns, (float("inf"), float("inf")))
    for _ in range(reps):
        for name, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            w, c = time.perf_counter() - w, time.process_time() - c
            best[name] = (min(best[name][0], w), min(best[name][1], c))
    return best


MT_BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mt_bench"


def mt_bench_texts(root: Path = MT_BENCH) -> tuple[list[str], list[str], list[str]]:
    """MT-bench's question turns, their categories, and the distinct first sentences of
    every model's answers (real text, short like feature strings)."""
    import json

    questions, categories = [], []
    for line in (root / "question.jsonl").read_text().splitlines():
        q = json.loads(line)
        for turn in q["turns"]:
            questions.append(turn)
            categories.append(q["category"])
    first: dict[str, None] = {}
    for f in sorted((root / "model_answer").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            for turn in json.loads(line)["choices"][0]["turns"]:
                head = turn.strip().split("\n")[0].split(". ")[0].strip()
                if 3 <= len(head.split()) <= 40:
                    first.setdefault(head)
    return questions, categories, list(first)


def cluster_labels(x: np.ndarray, k: int, weights: np.ndarray | None = None,
                   seed: int = 0) -> np.ndarray:
    """featdisco's own clustering of the rows: spherical k-means."""
    from featdisco.stages.kmeans import SphericalKMeans

    km = SphericalKMeans(n_clusters=k, seed=seed)
    km.fit(x, sample_weight=None if weights is None else weights.astype(np.float32))
    return np.asarray(km.assign(x)[0])


def changed_clusters(strings: list[str], base: np.ndarray, other: np.ndarray,
                     weights: np.ndarray, top: int) -> list[str]:
    """The ``top`` clusters of ``base`` whose best match in ``other`` (weighted Jaccard over
    occurrences) is lowest, each with its size, the match and its commonest members."""
    lines = []
    scored = []
    for c in np.unique(base):
        members = base == c
        best = max(weights[members & (other == o)].sum() / weights[members | (other == o)].sum()
                   for o in np.unique(other[members]))
        scored.append((best, c))
    for best, c in sorted(scored)[:top]:
        idx = np.flatnonzero(base == c)
        idx = idx[np.argsort(-weights[idx])][:4]
        where = Counter(other[base == c].tolist()).most_common(3)
        lines.append(f"   Jaccard {best:.2f}, {int(weights[base == c].sum())} occurrences, "
                     f"split {[n for _, n in where]}: " + " | ".join(strings[i] for i in idx))
    return lines


ALPACA_EVAL = MT_BENCH.parent / "alpaca_eval"


def write_vocabulary(path: Path, min_count: int = 5, root: Path = ALPACA_EVAL) -> int:
    """Write the static embedder's vocabulary additions: the words (letters only, 3 or more)
    that occur ``min_count`` or more times in AlpacaEval's instructions and model outputs
    (real assistant-chat English, none of it the planted benchmark's or MT-bench's text) and
    that MiniLM's WordPiece splits into several pieces, commonest first. Returns the count."""
    from featdisco.embedders.onnx_minilm import default_tokenizer_path
    from featdisco.embedders.static import _load_tokenizer, extend_tokenizer

    counts: Counter[str] = Counter()
    for f in sorted(root.glob("*.json")):
        for record in json.loads(f.read_text(encoding="utf-8")):
            for key in ("instruction", "output"):
                counts.update(re.findall(r"[a-z]+", record[key].lower()))
    words = [w for w, n in sorted(counts.items(), key=lambda x: (-x[1], x[0]))
             if n >= min_count and len(w) >= 3]
    _, added = extend_tokenizer(_load_tokenizer(default_tokenizer_path()), words)
    path.write_text("".join(f"{w}\n" for w in added), encoding="utf-8")
    return len(added)


def compare(names: list[str], features: Path | None, reps: int, top: int,
            seeds: int = 1) -> None:
    """Part 3 of the module docstring."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from featdisco.stages.kmeans import auto_n_clusters

    by_kind: dict[str, tuple[list[str], np.ndarray]] = {}
    if features is not None:
        import pyarrow.parquet as pq

        df = pq.read_table(features, columns=["kind", "text"]).to_pandas()
        for kind, g in df.groupby("kind"):
            counts = g["text"].value_counts()
            by_kind[str(kind)] = (counts.index.tolist(), counts.to_numpy())
        strings = list(dict.fromkeys(df["text"]))
        source = f"{features} ({len(df):,} features)"
    else:
        strings = feature_vocabulary(3000)
        source = "the phrase vocabulary"
    loaded = {}
    for name in names:
        t0 = time.perf_counter()
        kind, opts = parse_spec(name)
        loaded[name] = make_embedder(kind, **opts)
        print(f"{name}: {loaded[name].name}, built in {time.perf_counter() - t0:.2f} s")
        embed_rows(strings[:200], loaded[name])  # warm up
    mean_chars = np.mean([len(t) for t in strings])
    t = best_of(reps, {n: (lambda e=e: embed_rows(strings, e)) for n, e in loaded.items()})
    print(f"\n3a. {len(strings):,} distinct feature strings of {source}, mean {mean_chars:.0f} "
          f"chars, {usable_cores()} cores; best of {reps}, interleaved: wall, CPU")
    for n, (wall, cpu) in t.items():
        print(f"   {n:10s} {len(strings) / wall:10,.0f} strings/s wall {len(strings) / cpu:10,.0f} "
              f"strings/s CPU   ({t[names[0]][0] / wall:.0f}x the first)")

    questions, categories, answers = mt_bench_texts()
    sets: dict[str, tuple[list[str], np.ndarray]] = {
        **{f"features: {k}": v for k, v in by_kind.items()},
        "MT-bench question turns": (questions, np.ones(len(questions))),
        "MT-bench answer first sentences": (answers, np.ones(len(answers))),
    }
    base_name = names[0]
    print(f"\n3b. agreement with {base_name}'s clusters (adjusted Rand; spherical k-means, "
          f"automatic k, seed 0); '{base_name} seed 1' is {base_name} clustered again with "
          "another seed: the agreement k-means itself allows")
    changes: dict[str, list[str]] = {}
    for label, (texts, w) in sets.items():
        k = max(2, min(auto_n_clusters(len(texts)), len(texts)))
        vecs = {n: embed_rows(texts, e) for n, e in loaded.items()}
        labs = {n: cluster_labels(v, k, w) for n, v in vecs.items()}
        aris = {f"{base_name} seed 1": adjusted_rand_score(
            labs[base_name], cluster_labels(vecs[base_name], k, w, seed=1))}
        aris.update({n: adjusted_rand_score(labs[base_name], labs[n]) for n in names[1:]})
        print(f"   {label:34s} {len(texts):6,} strings, k={k:3d}: "
              + ", ".join(f"{n} ARI {a:.3f}" for n, a in aris.items()))
        if seeds > 1:  # one seed pair is noisy: mean (min-max) over seeds 0..seeds-1
            per = {n: [cluster_labels(v, k, w, seed=s) for s in range(seeds)]
                   for n, v in vecs.items()}
            base = per[base_name]
            spread = {f"{base_name} other seed": [adjusted_rand_score(base[i], base[j])
                                                  for i in range(seeds) for j in range(seeds)
                                                  if i < j]}
            spread.update({n: [adjusted_rand_score(base[i], per[n][j]) for i in range(seeds)
                               for j in range(seeds)] for n in names[1:]})
            print(f"   {'':34s} over {seeds} seeds: " + ", ".join(
                f"{n} {np.mean(a):.3f} ({min(a):.3f}-{max(a):.3f})" for n, a in spread.items()))
        if label.startswith("features"):
            for n in names[1:]:
                changes[f"{label}, {n}"] = changed_clusters(texts, labs[base_name], labs[n], w, top)
    print("\n3c. MT-bench questions clustered at k = 8 against their 8 categories (NMI)")
    for n, e in loaded.items():
        nmi = normalized_mutual_info_score(categories, cluster_labels(embed_rows(questions, e), 8))
        print(f"   {n:10s} NMI {nmi:.3f}")
    for label, lines in changes.items():
        print(f"\n3d. {base_name}'s clusters that {label.split(', ')[1]} changes most "
              f"({label.split(', ')[0]}):")
        print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--distinct", type=int, default=3000)
    ap.add_argument("--occurrences", type=int, default=20000)
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--compare", default=None, metavar="A,B",
                    help="embedders to compare (the first is the reference), e.g. minilm,static")
    ap.add_argument("--features", type=Path, default=None,
                    help="with --compare: a run's features.parquet")
    ap.add_argument("--top", type=int, default=5, help="with --compare: changed clusters shown")
    ap.add_argument("--seeds", type=int, default=1,
                    help="with --compare: also the mean ARI over k-means seeds 0..N-1 (every "
                         "pair of different seeds for the first embedder against itself, every "
                         "pair for the others against it)")
    ap.add_argument("--write-vocabulary", type=Path, default=None, metavar="FILE",
                    help="write the static embedder's vocabulary additions (from AlpacaEval) "
                         "to FILE and stop")
    args = ap.parse_args()
    if args.write_vocabulary:
        print(f"{write_vocabulary(args.write_vocabulary)} words -> {args.write_vocabulary}")
        return
    if args.compare:
        compare(split_specs(args.compare), args.features, args.reps, args.top, args.seeds)
        return

    bs = args.batch_size
    emb = OnnxMiniLM(batch_size=bs)
    raw = RawOnnx(bs)
    vocab = feature_vocabulary(args.distinct)
    emb.embed(vocab[:200])
    raw.embed(vocab[:200], sort=False)  # warm both sessions up
    print(f"model {emb.name}, {usable_cores()} cores, model batch {bs}, "
          f"{len(vocab)} distinct strings, mean {np.mean([len(v) for v in vocab]):.0f} chars")

    check = np.abs(embed_rows(vocab, emb) - raw.embed(vocab, sort=False)).max()
    print(f"max |embed_rows - raw| over all rows: {check:.2e}")

    with tempfile.TemporaryDirectory() as tmp:
        caches = iter(range(10**6))

        def cold_cache() -> None:
            with EmbeddingCache(Path(tmp) / f"c{next(caches)}.sqlite") as c:
                embed_rows(vocab, emb, c)

        t = best_of(args.reps, {
            "raw onnxruntime, input order": lambda: raw.embed(vocab, sort=False),
            "raw onnxruntime, token-sorted": lambda: raw.embed(vocab, sort=True),
            "embed_rows, no cache": lambda: embed_rows(vocab, emb),
            "embed_rows, cold disk cache": cold_cache,
        })
    print(f"\n1. distinct strings per second (best of {args.reps}, interleaved): wall, CPU")
    for name, (wall, cpu) in t.items():
        print(f"   {name:34s} {len(vocab) / wall:8.0f} /s wall {len(vocab) / cpu:8.0f} /s CPU")
    for ours in ("embed_rows, no cache", "embed_rows, cold disk cache"):
        for base in ("raw onnxruntime, input order", "raw onnxruntime, token-sorted"):
            print(f"   {ours} / {base}: {t[base][0] / t[ours][0]:.3f}x wall, "
                  f"{t[base][1] / t[ours][1]:.3f}x CPU")

    occ = zipf_occurrences(vocab, args.occurrences, args.zipf)
    counts = Counter(occ)
    n_distinct = len(counts)
    top = sum(c for _, c in counts.most_common(10))
    print(f"\n2. de-duplication: {len(occ)} occurrences, Zipf s={args.zipf}, {n_distinct} "
          f"distinct ({n_distinct / len(occ):.1%}); top 10 phrases are {top / len(occ):.1%} "
          "of occurrences")
    t2 = best_of(1, {"raw": lambda: raw.embed(occ, sort=True),
                     "dedup": lambda: embed_rows(occ, emb)})
    (rw, rc), (dw, dc) = t2["raw"], t2["dedup"]
    print(f"   raw (every occurrence, token-sorted):  {rw:7.2f} s wall {rc:7.2f} s CPU")
    print(f"   embed_rows (each distinct once):      {dw:7.2f} s wall {dc:7.2f} s CPU")
    print(f"   effective speed-up: {rw / dw:.1f}x wall, {rc / dc:.1f}x CPU "
          f"({len(occ) / dw:.0f} occurrences/s)")
    with tempfile.TemporaryDirectory() as tmp, EmbeddingCache(Path(tmp) / "c.sqlite") as c:
        embed_rows(occ, emb, c)
        st = EmbedStats()
        t0 = time.perf_counter()
        embed_rows(occ, emb, c, stats=st)
        warm = time.perf_counter() - t0
    print(f"   warm-cache rerun: {warm:.3f} s ({len(occ) / warm:.0f} occurrences/s, "
          f"{st.cached} from cache, {st.embedded} embedded)")


if __name__ == "__main__":
    main()
