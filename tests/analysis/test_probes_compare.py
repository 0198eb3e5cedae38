"""Planted truths: a causal user→response link is found by its probe while unrelated targets
stay at baseline; a cluster at 30% vs 5% ranks first in a comparison, an equal one does not."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import sparse

from featdisco.analysis.activations import cluster_frequency, load_activations
from featdisco.analysis.compare import run_compare
from featdisco.analysis.probes import (
    ProbeData,
    best_threshold,
    fit_probes,
    permutation_null,
    run_probes,
    summarize_probes,
)
from featdisco.errors import FeatdiscoError
from tests.analysis.planted import PlantedPiece, write_run

N_USER = 12
USER = [("user", f"User topic {i}") for i in range(N_USER)]
RESP = [("response", "Caused response"), ("response", "Unrelated common"), ("response", "Unrelated rare"),
        ("response", "Diff planted"), ("response", "Equal rates")]
CAUSE, CAUSED, UNREL1, UNREL2, DIFF, EQUAL = 0, N_USER, N_USER + 1, N_USER + 2, N_USER + 3, N_USER + 4


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(1)
    pieces = []
    for t in range(800):
        for turn in (0, 2):  # two exchanges: each response follows its own user turn
            users = [c for c in range(1, N_USER) if rng.random() < 0.15]
            cause = rng.random() < 0.3
            if cause:
                users.append(CAUSE)
            resp = []
            if (cause and rng.random() < 0.9) or (not cause and rng.random() < 0.02):
                resp.append(CAUSED)
            if rng.random() < 0.3:
                resp.append(UNREL1)
            if rng.random() < 0.1:
                resp.append(UNREL2)
            pieces.append(PlantedPiece(f"t{t}", turn, "user", users))
            pieces.append(PlantedPiece(f"t{t}", turn + 1, "response", resp))
    return write_run(tmp_path_factory.mktemp("probe"), pieces, USER + RESP)


def test_activation_matrices_and_frequency(probe_run: Path) -> None:
    act = load_activations(probe_run)
    assert act.piece_matrix.shape == (3200, N_USER + len(RESP))
    assert act.transcript_matrix.shape == (800, N_USER + len(RESP))
    freq = cluster_frequency(probe_run)
    row = freq.set_index("cluster_id").loc[CAUSED]
    assert row["kind_pieces"] == 1600 and row["kind_transcripts"] == 800
    assert row["pieces"] == act.piece_matrix[:, CAUSED].sum()
    assert row["transcripts"] == act.transcript_matrix[:, CAUSED].sum() <= row["pieces"]
    assert (probe_run / "analysis_frequency.parquet").exists()


def test_probe_finds_the_planted_cause_and_not_the_unrelated(probe_run: Path) -> None:
    df = run_probes(probe_run, n_jobs=1).set_index("cluster_id")
    caused = df.loc[CAUSED]
    assert caused["f1"] > 0.8 and caused["auroc"] > 0.9 and caused["beats_baseline"]
    assert caused["top_user_clusters"][0] == CAUSE
    assert caused["top_user_labels"][0] == "User topic 0"
    for target in (UNREL1, UNREL2):
        row = df.loc[target]
        assert row["f1"] < row["baseline_f1"] + 0.1, row
        assert abs(row["auroc"] - 0.5) < 0.12, row
    # counts behind every figure, and no transcript on both sides of the split
    assert caused["n_train"] + caused["n_test"] == 1600
    assert caused["tp"] + caused["fn"] == caused["test_positives"]
    summary = summarize_probes(df.reset_index())
    assert summary.loc[0, "targets"] == 3 and summary.loc[0, "beat_by_0.1"] == 1
    # against the permutation null only the planted link is real
    assert caused["beats_null"] and caused["p_value"] < 1e-10 and caused["f1"] > caused["null_f1_95"]
    for target in (UNREL1, UNREL2):
        assert not df.loc[target, "beats_null"] and df.loc[target, "q_value"] > 0.05
    assert summary.loc[0, "beat_null"] == 1
    stored = pq.read_table(probe_run / "analysis_probes.parquet").to_pandas()
    assert len(stored) == 3


def test_probe_uses_the_preceding_user_turn_not_a_later_one(probe_run: Path) -> None:
    # with the whole transcript's user turns, the turn-0 cause also "predicts" turn-3 responses
    # it did not cause, so the transcript-context probe is less precise than the turn probe
    turn = run_probes(probe_run, n_jobs=1, write=False).set_index("cluster_id").loc[CAUSED]
    whole = run_probes(probe_run, n_jobs=1, context="transcript", write=False).set_index("cluster_id").loc[CAUSED]
    assert turn["precision"] > whole["precision"] + 0.1


def _weak_and_strong_cause(seed: int, n: int = 8000) -> ProbeData:
    """A strong cause (15% of user turns, target 90%) and a weak one (40%, target 25%, above
    the base rate): balanced weights with the default cut call the weak one "present" too."""
    rng = np.random.default_rng(seed)
    strong, weak = rng.random(n) < 0.15, rng.random(n) < 0.4
    noise = rng.random((n, 10)) < 0.15
    X = sparse.csr_matrix(np.c_[strong, weak, noise].astype(np.float64))
    y = rng.random(n) < np.where(strong, 0.9, np.where(weak, 0.25, 0.02))
    return ProbeData("response", X, sparse.csc_matrix(y[:, None].astype(np.int8)), np.arange(n) // 2,
                     np.arange(12), np.array([0]))


def test_threshold_chosen_on_training_transcripts_raises_f1() -> None:
    for seed in (0, 1):
        data = _weak_and_strong_cause(seed)
        default = fit_probes(data, n_jobs=1, validation_size=None).iloc[0]
        chosen = fit_probes(data, n_jobs=1).iloc[0]
        assert default["threshold_from"] == "default" and chosen["threshold_from"] == "validation"
        assert chosen["f1"] >= default["f1"] + 0.04, (seed, default["f1"], chosen["f1"])
        assert chosen["precision"] > default["precision"] + 0.1
        assert chosen["auroc"] == default["auroc"]  # same final model; only the cut moved


def test_best_threshold_and_permutation_null() -> None:
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    scores = np.array([3.0, 2.0, 1.5, 1.0, 0.5, 0.0, -1.0, -2.0])
    cut = best_threshold(y, scores)
    assert 0.5 < cut < 1.0  # the top four: tp 3, fp 1, F1 = 6/7
    null = permutation_null(tp=3, n=8, positives=3, predicted=4)
    # shuffling 3 positives over 8 rows, 4 predicted: P(TP = 3) = C(5,1)/C(8,4) = 5/70
    assert null["p_value"] == pytest.approx(5 / 70)
    assert null["null_f1"] == pytest.approx(2 * (4 * 3 / 8) / 7)


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(2)
    pieces = []
    for q in range(300):
        for model, diff_rate in (("model-a", 0.30), ("model-b", 0.05)):
            resp = [UNREL1] if rng.random() < 0.5 else []
            if rng.random() < diff_rate:
                resp.append(DIFF)
            if rng.random() < 0.2:
                resp.append(EQUAL)
            tid = f"{model}-{q}"
            meta = {"question_id": q}
            pieces.append(PlantedPiece(tid, 0, "user", [q % N_USER], model=model, metadata=meta,
                                       text=f"question {q}"))
            pieces.append(PlantedPiece(tid, 1, "response", resp, model=model, metadata=meta))
    return write_run(tmp_path_factory.mktemp("compare"), pieces, USER + RESP)


def test_compare_ranks_the_planted_difference_first(compare_run: Path) -> None:
    df = run_compare(compare_run, "model")
    top = df.iloc[0]
    assert top["cluster_id"] == DIFF and top["significant"]
    assert top["group_high"] == "model-a" and top["n_high"] == 300
    assert 0.22 < top["rate_high"] < 0.38 and top["rate_low"] < 0.1 and top["rate_ratio"] > 3
    assert top["paired_prompts"] == 300 and top["paired_q"] < 0.01
    equal = df.set_index("cluster_id").loc[EQUAL]
    assert not equal["significant"] and equal["q_value"] > 0.05
    # user clusters are the same prompts in both models: identical rates, p = 1
    user_rows = df[df["kind"] == "user"]
    assert (user_rows["p_value"] == 1.0).all() and not user_rows["significant"].any()
    rates = pq.read_table(compare_run / "analysis_compare_model_rates.parquet").to_pandas()
    r = rates[(rates["cluster_id"] == DIFF)].set_index("group")
    assert r.loc["model-a", "ci_low"] < r.loc["model-a", "rate"] < r.loc["model-a", "ci_high"]
    assert r.loc["model-b", "n"] == 300


def test_compare_by_transcript_and_metadata_errors(compare_run: Path) -> None:
    df = run_compare(compare_run, "model", unit="transcript", write=False)
    assert df.iloc[0]["cluster_id"] == DIFF
    with pytest.raises(FeatdiscoError, match="no piece column or metadata key"):
        run_compare(compare_run, "checkpoint", write=False)
    with pytest.raises(FeatdiscoError, match="two or more"):
        run_compare(compare_run, "model", groups=["model-a"], write=False)
    assert isinstance(df, pd.DataFrame) and np.isfinite(df["p_value"]).all()


def test_cooccurrence_finds_the_planted_pair_within_pieces_and_transcripts(tmp_path: Path) -> None:
    from featdisco.analysis.cooccurrence import run_cooccurrence

    rng = random.Random(3)
    pieces = []
    for t in range(400):
        together = rng.random() < 0.2
        resp = [c for c, r in ((UNREL1, 0.3), (UNREL2, 0.3)) if rng.random() < r]
        if together:
            resp += [DIFF, EQUAL]
        users = [CAUSE] if together else ([1] if rng.random() < 0.5 else [])
        pieces.append(PlantedPiece(f"t{t}", 0, "user", users))
        pieces.append(PlantedPiece(f"t{t}", 1, "response", resp))
    run = write_run(tmp_path / "co", pieces, USER + RESP)
    df = run_cooccurrence(run, min_support=5)
    piece = df[df["level"] == "piece"].iloc[0]
    assert {piece["cluster_a"], piece["cluster_b"]} == {DIFF, EQUAL} and piece["significant"]
    assert piece["together"] == piece["count_a"] == piece["count_b"]
    assert piece["lift"] == pytest.approx(piece["units"] / piece["together"])
    tr = df[(df["level"] == "transcript") & (df["cluster_a"] == CAUSE) & (df["cluster_b"] == DIFF)]
    assert len(tr) == 1 and tr.iloc[0]["significant"] and tr.iloc[0]["kind_a"] == "user"
    independent = df[(df["cluster_a"] == UNREL1) & (df["cluster_b"] == UNREL2) & (df["level"] == "piece")]
    assert independent.empty or not independent.iloc[0]["significant"]
    assert (df["together"] >= 5).all()


@pytest.mark.parametrize("size", ["0", "1"])
def test_probe_refuses_a_test_size_of_0_or_1_with_a_message_that_says_so(tmp_path: Path, size: str) -> None:
    """The help used to offer 0.0<=x<=1.0 and the error said "must be between 0 and 1" for 0:
    both now say strictly, and the refusal is one line with exit status 2."""
    import subprocess
    import sys

    run = write_run(tmp_path / "run", [PlantedPiece("t0", 0, "user", [0]), PlantedPiece("t0", 1, "response", [1])],
                    USER[:1] + RESP[:1])
    done = subprocess.run([sys.executable, "-m", "featdisco", "probe", str(run), "--test-size", size],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"featdisco: error: --test-size {float(size)}: must be strictly between 0 and 1"
    helped = subprocess.run([sys.executable, "-m", "featdisco", "probe", "--help"], capture_output=True, text=True,
                            check=False)
    text = " ".join(helped.stdout.split())  # the help is wrapped to the terminal
    assert "strictly between 0 and 1" in text and "0.0<=x<=1.0" not in text
