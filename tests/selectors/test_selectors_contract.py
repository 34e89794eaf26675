"""Property tests: the selection contract holds for every strategy on arbitrary small pools."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelwheel.selectors import NEEDS_PROBABILITIES, STRATEGIES, select


def _pool(seed: int, n_rows: int, dim: int, n_classes: int, frac_labeled: float, dups: bool):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, dim)).astype(np.float32)
    if dups and n_rows > 3:
        x[1] = x[0]
        x[2] = x[0]
    p = rng.dirichlet(np.ones(n_classes) * 0.5, size=n_rows)
    committee = rng.dirichlet(np.ones(n_classes) * 0.5, size=(3, n_rows))
    labeled = rng.random(n_rows) < frac_labeled
    return x, p, committee, labeled


pools = st.tuples(
    st.integers(0, 2**16),  # data seed
    st.integers(1, 60),  # N
    st.integers(1, 6),  # d
    st.integers(2, 4),  # C
    st.sampled_from([0.0, 0.0, 0.2, 0.6, 1.0]),  # labelled fraction
    st.booleans(),  # duplicate rows
)


def _call(name, n, x, p, committee, labeled, seed, **kw):
    probs = committee if name == "bald" else p
    return select(name, n, embeddings=x, probabilities=probs, labeled=labeled, seed=seed, **kw)


@pytest.mark.parametrize("name", list(STRATEGIES))
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(pool=pools, n=st.integers(0, 70), seed=st.integers(0, 1000))
def test_contract(name, pool, n, seed):
    x, p, committee, labeled = _pool(*pool)
    idx, util = _call(name, n, x, p, committee, labeled, seed, return_scores=True)
    n_unl = int((~labeled).sum())
    assert isinstance(idx, np.ndarray) and idx.dtype == np.int64 and idx.ndim == 1
    assert idx.size == min(n, n_unl)
    assert np.unique(idx).size == idx.size, "indices must be distinct"
    assert not labeled[idx].any(), "only unlabelled samples may be picked"
    assert ((idx >= 0) & (idx < x.shape[0])).all()
    assert util.shape == idx.shape and util.dtype == np.float64 and np.isfinite(util).all()
    again = _call(name, n, x, p, committee, labeled, seed)
    np.testing.assert_array_equal(idx, again)  # deterministic per seed


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_plain_function_matches_select(name):
    x, p, committee, labeled = _pool(3, 80, 5, 3, 0.1, False)
    fn = STRATEGIES[name]
    probs = committee if name == "bald" else p
    a = fn(7, embeddings=x, probabilities=probs, labeled=labeled, seed=4)
    b = select(name, 7, embeddings=x, probabilities=probs, labeled=labeled, seed=4)
    np.testing.assert_array_equal(a, b)
    doc = fn.__doc__ or ""
    assert "cost" in doc.lower() and "favours" in doc, f"{name} docstring must say cost and aim"


def test_seed_changes_random_but_not_uncertainty():
    x, p, _, _ = _pool(0, 200, 4, 3, 0.0, False)
    a = select("random", 20, embeddings=x, seed=1)
    b = select("random", 20, embeddings=x, seed=2)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(
        select("margin", 20, embeddings=x, probabilities=p, seed=1),
        select("margin", 20, embeddings=x, probabilities=p, seed=2),
    )


def test_needs_probabilities_is_exactly_the_model_based_strategies():
    assert NEEDS_PROBABILITIES == {
        "least_confidence",
        "margin",
        "entropy",
        "bald",
        "badge",
        "cluster_margin",
        "ranked_batch",
    }


@pytest.mark.parametrize("name", ["least_confidence", "margin", "entropy", "bald", "random"])
def test_probability_only_strategies_accept_no_embeddings(name):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=(4, 30) if name == "bald" else 30)
    idx = select(name, 5, embeddings=None, probabilities=p)
    assert idx.size == 5


@pytest.mark.parametrize("frac", [0.0, 0.05])
def test_kcenter_utilities_are_non_increasing(frac):
    x, _, _, labeled = _pool(5, 300, 4, 3, frac, False)
    _, util = select("kcenter", 30, embeddings=x, labeled=labeled, return_scores=True)
    assert np.all(np.diff(util) <= 1e-9)


@pytest.mark.parametrize("name", ["least_confidence", "margin", "entropy"])
def test_uncertainty_utilities_sorted_descending(name):
    x, p, _, labeled = _pool(6, 300, 4, 3, 0.1, False)
    _, util = select(name, 50, embeddings=x, probabilities=p, labeled=labeled, return_scores=True)
    assert np.all(np.diff(util) <= 0)
