"""Cluster pairs that occur together more often than chance, within pieces and within
transcripts.

Within a piece only clusters of the same kind can meet (a piece has one kind); within a
transcript any two can, which is where "this kind of user request goes with that kind of
thought" shows up. Each pair comes with its counts, lift ``c·N / (n_i·n_j)``, PMI and
normalised PMI, and a one-sided hypergeometric (Fisher) p-value with Benjamini–Hochberg
correction; ``min_support`` drops pairs seen together too rarely to mean anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from featdisco.analysis.activations import Activations, load_activations, write_analysis
from featdisco.analysis.stats import benjamini_hochberg, hypergeom_sf
from featdisco.errors import FeatdiscoError


def cooccurrence(matrix: sparse.csr_matrix, *, min_support: int = 5,
                 rows: np.ndarray | None = None) -> pd.DataFrame:
    """Pairs (i < j) of columns of a binary matrix co-occurring in ``min_support``+ rows."""
    m = matrix if rows is None else matrix[rows]
    m = sparse.csr_matrix(m, dtype=np.int32)
    N = m.shape[0]
    n = np.asarray(m.getnnz(axis=0))
    co = sparse.triu(m.T @ m, k=1).tocoo()
    keep = co.data >= min_support
    i, j, c = co.row[keep], co.col[keep], co.data[keep].astype(np.int64)
    ni, nj = n[i].astype(np.float64), n[j].astype(np.float64)
    with np.errstate(divide="ignore"):
        p_ij = c / N
        lift = c * N / (ni * nj)
        pmi = np.log(lift)
        npmi = np.where(p_ij < 1, pmi / -np.log(p_ij), 1.0)
    p = hypergeom_sf(c, N, ni.astype(np.int64), nj.astype(np.int64)) if len(c) else np.zeros(0)
    return pd.DataFrame({"cluster_a": i.astype(np.int64), "cluster_b": j.astype(np.int64),
                         "together": c, "count_a": ni.astype(np.int64), "count_b": nj.astype(np.int64),
                         "units": N, "expected": ni * nj / max(N, 1), "lift": lift, "pmi": pmi,
                         "npmi": npmi, "p_value": p})


def cooccurrence_table(act: Activations, *, levels: tuple[str, ...] = ("piece", "transcript"),
                       min_support: int = 5, alpha: float = 0.05) -> pd.DataFrame:
    """Both levels in one table (column ``level``), ranked by NPMI within each level. Pairs
    with a cluster a researcher hid are neither tested nor counted in the Benjamini–Hochberg
    correction; ``attrs["hidden_left_out"]``: the hidden clusters' ids."""
    # a hidden cluster's column emptied: it meets no cluster, and the units stay all of them
    shown = sparse.diags((~act.hidden_mask).astype(np.int32), dtype=np.int32)
    frames = []
    for level in levels:
        if level == "piece":
            # per kind, so a pair's chance rate is computed over pieces where both could occur
            for kind in sorted(set(act.pieces["kind"])):
                rows = np.nonzero(act.pieces["kind"].to_numpy() == kind)[0]
                df = cooccurrence(act.piece_matrix @ shown, min_support=min_support, rows=rows)
                frames.append(df.assign(level="piece"))
        elif level == "transcript":
            frames.append(cooccurrence(act.transcript_matrix @ shown, min_support=min_support)
                          .assign(level="transcript"))
        else:
            raise FeatdiscoError(f"unknown co-occurrence level {level!r}; use piece or transcript")
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    df.attrs["hidden_left_out"] = act.hidden_ids
    if df.empty:
        return df
    df["q_value"] = np.nan
    for level in df["level"].unique():
        mask = df["level"] == level
        df.loc[mask, "q_value"] = benjamini_hochberg(df.loc[mask, "p_value"].to_numpy())
    df["significant"] = df["q_value"] < alpha
    c = act.clusters
    for side in ("a", "b"):
        ids = df[f"cluster_{side}"].to_numpy()
        df[f"kind_{side}"] = c["kind"].to_numpy()[ids]
        df[f"label_{side}"] = c["label"].to_numpy()[ids]
    cols = ["level", "cluster_a", "kind_a", "label_a", "cluster_b", "kind_b", "label_b", "together",
            "count_a", "count_b", "units", "expected", "lift", "pmi", "npmi", "p_value", "q_value",
            "significant"]
    out = df[cols].sort_values(["level", "npmi"], ascending=[True, False]).reset_index(drop=True)
    out.attrs["hidden_left_out"] = act.hidden_ids
    return out


def run_cooccurrence(run_dir: str | Path, *, levels: tuple[str, ...] = ("piece", "transcript"),
                     min_support: int = 5, alpha: float = 0.05, write: bool = True) -> pd.DataFrame:
    """:func:`cooccurrence_table` of a run directory, saved as ``analysis_cooccurrence.parquet``."""
    df = cooccurrence_table(load_activations(run_dir), levels=levels, min_support=min_support, alpha=alpha)
    if write:
        from featdisco.analysis.provenance import analysis_name

        level = "both" if set(levels) == {"piece", "transcript"} else "+".join(levels)
        write_analysis(run_dir, analysis_name("cooccurrence", {"level": level}, {"level": "both"}), df,
                       command="cooccur", args={"level": level, "min_support": min_support},
                       hidden=df.attrs["hidden_left_out"])
    return df
