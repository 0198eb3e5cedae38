"""FeatureDiscovery is a scikit-learn estimator for real: clone, params, tags, NotFittedError,
the scikit-learn checks that apply to a text-in estimator, no temporary folder left behind,
transform as one row per transcript that changes nothing fitted, and one activation path for
fit_transform, transform and transform_pieces."""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse
from sklearn.base import clone
from sklearn.exceptions import NotFittedError, SkipTestWarning
from sklearn.utils import estimator_checks as ec
from sklearn.utils import get_tags

from featdisco.errors import FeatdiscoError
from featdisco.estimator import FeatureDiscovery
from tests.conftest import write_jsonl
from tests.fakes.openai_server import FakeOpenAIServer
from tests.pipeline_fakes import pipeline_handler


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    os.environ["OPENAI_API_KEY"] = "sk-test-not-a-real-key"
    with FakeOpenAIServer(pipeline_handler) as srv:
        yield srv


def _data(folder: Path, quiet_at: int | None = None) -> Path:
    """12 transcripts; with ``quiet_at``, one more there holding only a system prompt (no
    user, thought or response text: nothing to split)."""
    rows = [{"id": f"t{i}", "model": "m", "messages": [
        {"role": "user", "content": f"Request {i} about subject {i * 3}"},
        {"role": "assistant", "content": f"<think>Reasoning {i} on {i * 5}</think>Answer {i} here."}]}
        for i in range(12)]
    if quiet_at is not None:
        rows.insert(quiet_at, {"id": "quiet", "model": "m",
                               "messages": [{"role": "system", "content": "You are terse."}]})
    return write_jsonl(folder / ("q.jsonl" if quiet_at is not None else "t.jsonl"), rows)


# scikit-learn's checks that apply to an estimator whose input is text (files or
# transcripts): they construct, clone, tag, print, set parameters and call an unfitted
# estimator. They all pass.
APPLICABLE: list[Callable[[str, object], None]] = [
    ec.check_estimator_cloneable, ec.check_estimator_tags_renamed, ec.check_valid_tag_types,
    ec.check_estimator_repr, ec.check_no_attributes_set_in_init, ec.check_estimators_unfitted,
    ec.check_transformers_unfitted, ec.check_do_not_raise_errors_in_init_or_set_params,
    ec.check_mixin_order, ec.check_parameters_default_constructible, ec.check_get_params_invariance,
    ec.check_set_params,
]
# The rest fit on random numeric arrays (make_blobs and the like) and compare numbers:
# a dictionary of behaviours is fitted on transcripts, by an LLM, so there is nothing to run
# them on. scikit-learn itself runs none of its checks on an estimator whose tags say it takes
# no 2-D array (as for its own text vectorizers). Where a rule still means something for text,
# the test named instead checks it on transcripts.
SKIPPED = {
    "check_fit_score_takes_y": "fits a 2-D float array; fit(X, y=None) is checked on transcripts "
                               "(test_fit_transform_and_transform_on_transcripts)",
    "check_estimators_overwrite_params": "fits a 2-D float array; parameters unchanged by fit: "
                                         "test_fit_transform_and_transform_on_transcripts",
    "check_dont_overwrite_parameters": "fits a 2-D float array; only fit and load set attributes "
                                       "ending in _: same test",
    "check_estimators_fit_returns_self": "fits a 2-D float array; fit returns self: same test",
    "check_dict_unchanged": "transforms a 2-D float array; transform leaves every fitted attribute "
                            "byte-identical: same test",
    "check_readonly_memmap_input": "the input is text, not a memory-mapped array",
    "check_n_features_in_after_fitting": "n_features_in_ counts the columns of a 2-D input; "
                                         "transcripts have none",
    "check_positive_only_tag_during_fit": "numeric input only",
    "check_estimators_dtypes": "numeric input only",
    "check_complex_data": "numeric input only",
    "check_dtype_object": "numeric input only",
    "check_estimators_empty_data_messages": "numeric input only; an empty input is a clear "
                                            "FeatdiscoError (tests/test_pipeline.py)",
    "check_pipeline_consistency": "fits twice and expects equal numbers; an LLM labels the "
                                  "features (tag non_deterministic)",
    "check_estimators_nan_inf": "numeric input only",
    "check_estimator_sparse_tag": "sparse numeric input only",
    "check_estimator_sparse_array": "sparse numeric input only",
    "check_estimator_sparse_matrix": "sparse numeric input only",
    "check_estimators_pickle": "fits a 2-D float array; save/load is the way to keep a fitted "
                               "dictionary (test_fit_transform_and_transform_on_transcripts)",
    "check_transformer_data_not_an_array": "numeric input only",
    "check_transformer_general": "fits a 2-D float array and compares fit_transform with "
                                 "transform: checked on transcripts in the same test",
    "check_transformer_n_iter": "no iterative solver",
    "check_get_feature_names_out_error": "fits a 2-D float array; get_feature_names_out names "
                                         "the clusters: same test",
    "check_set_output_transform": "set_output's pandas and polars containers are dense; the "
                                  "activations are a sparse matrix",
    "check_global_output_transform_pandas": "as check_set_output_transform",
    "check_global_set_output_transform_polars": "as check_set_output_transform",
    "check_fit2d_predict1d": "numeric input only",
    "check_methods_subset_invariance": "numeric input only; rows are independent by "
                                       "construction (each transcript is featurized alone)",
    "check_methods_sample_order_invariance": "numeric input only",
    "check_fit2d_1sample": "numeric input only",
    "check_fit2d_1feature": "numeric input only",
    "check_fit1d": "numeric input only",
    "check_fit_check_is_fitted": "fits a 2-D float array; NotFittedError before fit is checked "
                                 "by check_estimators_unfitted",
    "check_n_features_in": "numeric input only",
    "check_fit_non_negative": "numeric input only",
    "check_requires_y_none": "numeric input only; fit(X) takes no y",
}


def test_check_estimator_itself_runs_nothing_on_text_input() -> None:
    # why the checks are called one by one above: scikit-learn skips every check, API ones
    # included, for an estimator whose input is not a 2-D array
    with pytest.warns(SkipTestWarning, match="Can't test estimator"):
        ec.check_estimator(FeatureDiscovery())


@pytest.mark.parametrize("check", APPLICABLE, ids=lambda c: c.__name__)
def test_the_scikit_learn_checks_that_apply_pass(check: Callable[[str, object], None]) -> None:
    check("FeatureDiscovery", FeatureDiscovery())


def test_the_tags_say_text_in_and_no_target() -> None:
    tags = get_tags(FeatureDiscovery())
    assert not tags.input_tags.two_d_array and tags.input_tags.string
    assert not tags.target_tags.required and tags.requires_fit and tags.non_deterministic
    assert tags.transformer_tags is not None
    # every check named is scikit-learn's, run above or skipped with a reason
    assert {c.__name__ for c in APPLICABLE}.isdisjoint(SKIPPED)
    assert all(hasattr(ec, name) for name in SKIPPED), [n for n in SKIPPED if not hasattr(ec, n)]


def test_clone_and_params_follow_the_scikit_learn_contract() -> None:
    est = FeatureDiscovery(n_clusters=5, prompts={"featurize": "mine.txt"})
    copy = clone(est)
    assert copy is not est and copy.get_params() == est.get_params()
    assert est.get_params()["n_clusters"] == 5 and "run_dir" in est.get_params()
    assert est.set_params(seed=3, max_features=12) is est and est.seed == 3 and est.max_features == 12
    # parameters are stored as given and checked by fit, not __init__
    bad = FeatureDiscovery(min_features=30, max_features=10)
    assert bad.min_features == 30
    with pytest.raises(FeatdiscoError, match="min_features"):
        bad.fit([])
    with pytest.raises(NotFittedError):
        FeatureDiscovery().transform([])
    with pytest.raises(TypeError):
        FeatureDiscovery("openai")  # type: ignore[misc]  # keyword-only


def _fitted_state(est: FeatureDiscovery) -> dict[str, bytes]:
    return {k: pickle.dumps(v) for k, v in vars(est).items() if k.endswith("_")}


def test_fit_transform_and_transform_on_transcripts(server: FakeOpenAIServer, tmp_path: Path) -> None:
    data = _data(tmp_path)
    tmp_root = Path(tempfile.gettempdir())
    ours = ("featdisco-run-*", "featdisco-transform-*")  # the estimator's own temporary folders
    before = {p.name for pat in ours for p in tmp_root.glob(pat)}
    est = FeatureDiscovery(llm="openai", model="fake-rater", base_url=server.base_url, n_clusters=3,
                           concurrency=4)
    params = pickle.dumps(est.get_params())
    fitted = est.fit_transform(data)
    assert pickle.dumps(est.get_params()) == params  # fit stores, never rewrites, parameters
    assert {p.name for pat in ours for p in tmp_root.glob(pat)} == before  # no temporary run left
    names = est.get_feature_names_out()
    assert all(n.startswith("Cluster about") for n in names)
    assert sparse.issparse(fitted) and fitted.shape == (12, len(names)) == (12, est.clusters_.num_rows)
    assert (fitted.getnnz(axis=1) > 0).all()  # every transcript activates some cluster

    state = _fitted_state(est)
    again = est.transform(data)  # the same transcripts through the encoder
    assert _fitted_state(est) == state  # transform changed nothing fitted, byte for byte
    assert {p.name for pat in ours for p in tmp_root.glob(pat)} == before
    assert again.shape == (12, len(names))
    np.testing.assert_array_equal(again.toarray(), fitted.toarray())

    # one row per input transcript, in input order: one with nothing to split has an empty row
    quiet = est.transform(_data(tmp_path, quiet_at=5))
    assert quiet.shape == (13, len(names)) and quiet[5].nnz == 0
    np.testing.assert_array_equal(quiet[[i for i in range(13) if i != 5]].toarray(), fitted.toarray())

    # the per-piece detail agrees feature by feature with where fit put each feature
    pieces = est.transform_pieces(data)
    assert _fitted_state(est) == state
    assert pieces.features is not None and pieces.matrix.shape == (len(pieces.pieces), len(names))
    np.testing.assert_array_equal(pieces.transcript_matrix.toarray(), fitted.toarray())

    saved = est.save(tmp_path / "dict")
    loaded = FeatureDiscovery.load(saved)
    assert loaded.clusters_.equals(est.clusters_)
    np.testing.assert_array_equal(loaded.transform(data).toarray(), fitted.toarray())
    assert clone(loaded).get_params() == loaded.get_params() and not hasattr(clone(loaded), "dictionary_")
