"""Bad input: a ValueError whose message says what to pass, never a silent wrong answer."""

from __future__ import annotations

import numpy as np
import pytest

from labelwheel.selectors import STRATEGIES, select
from labelwheel.selectors.filters import anomaly_scores, near_duplicate_groups

rng = np.random.default_rng(0)
X = rng.normal(size=(20, 3))
P = rng.dirichlet(np.ones(3), size=20)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "nope"}, r"unknown strategy 'nope'; use one of: random, least_confidence"),
        ({"n": -1}, r"n must be >= 0"),
        ({"n": 2.5}, r"n must be a whole number"),
        ({"n": True}, r"n must be a whole number"),
        ({"embeddings": X[:, 0]}, r"embeddings must be 2-D with shape \(N, d\)"),
        ({"embeddings": np.full((20, 3), "a")}, r"embeddings must be an array of real numbers"),
        ({"embeddings": np.where(np.eye(20, 3) > 0, np.nan, X)}, r"NaN or infinite values .*row 0"),
        ({"embeddings": np.where(np.eye(20, 3) > 0, np.inf, X)}, r"NaN or infinite"),
        ({"embeddings": np.zeros((20, 0))}, r"at least one feature column"),
        ({"probabilities": None}, r"needs the model's class probabilities: pass probabilities="),
        ({"probabilities": P[:10]}, r"probabilities have 10 rows but embeddings have 20"),
        ({"probabilities": P * 2}, r"must lie in \[0, 1\].*not logits"),
        ({"probabilities": P * 0.9}, r"each row of probabilities must sum to 1"),
        ({"probabilities": P[:, :1] * 0 + 1}, r"at least 2 class columns"),
        ({"probabilities": np.where(np.eye(20, 3) > 0, np.nan, P)}, r"probabilities contains NaN"),
        ({"probabilities": P[None]}, r"probabilities must have shape \(N, C\)"),
        ({"labeled": np.zeros(19, bool)}, r"labeled must be a boolean mask of shape \(20,\)"),
        ({"labeled": np.zeros(20, int)}, r"boolean mask .* np\.isin"),
        ({"seed": 1.5}, r"seed must be an int"),
        ({"bogus": 1}, r"unknown parameter\(s\) bogus; it accepts: multi_label"),
        ({"embeddings": None, "probabilities": None}, r"needs the model's class probabilities"),
    ],
)
def test_bad_input_messages(kwargs, message):
    args = {"strategy": "margin", "n": 3, "embeddings": X, "probabilities": P} | kwargs
    strategy, n = args.pop("strategy"), args.pop("n")
    with pytest.raises(ValueError, match=message):
        select(strategy, n, **args)


@pytest.mark.parametrize("name", [s for s in STRATEGIES if s not in ("random",)])
def test_unknown_param_names_the_accepted_ones(name):
    with pytest.raises(ValueError, match=rf"strategy '{name}' got unknown parameter\(s\) zzz"):
        select(name, 2, embeddings=X, probabilities=P, zzz=1)


@pytest.mark.parametrize("name", ["kcenter", "kmeans", "typiclust", "probcover", "adaptive"])
def test_embedding_strategies_need_embeddings(name):
    with pytest.raises(ValueError, match=rf"strategy '{name}' needs embeddings"):
        select(name, 2, embeddings=None, probabilities=P)


def test_bald_needs_a_committee():
    with pytest.raises(ValueError, match=r"\(T, N, C\): T stochastic passes"):
        select("bald", 2, embeddings=X, probabilities=P)


def test_strategy_param_values_are_checked():
    with pytest.raises(ValueError, match=r"measure must be one of least_confidence, margin"):
        select("ranked_batch", 2, embeddings=X, probabilities=P, measure="gini")
    with pytest.raises(ValueError, match=r"late must be one of"):
        select("adaptive", 2, embeddings=X, probabilities=P, late="bogus")
    with pytest.raises(ValueError, match=r"cluster_labels must be an int array of shape \(20,\)"):
        select("cluster_margin", 2, embeddings=X, probabilities=P, cluster_labels=np.zeros(3))
    with pytest.raises(ValueError, match=r"n_neighbors must be an int >= 1"):
        select("typiclust", 2, embeddings=X, n_neighbors=0)


def test_probabilities_from_another_pool_are_refused_for_hybrids():
    with pytest.raises(ValueError, match=r"probabilities have 5 rows but embeddings have 20"):
        select("badge", 2, embeddings=X, probabilities=P[:5])


def test_filters_validate():
    with pytest.raises(ValueError, match=r"threshold must be a finite distance >= 0"):
        near_duplicate_groups(X, threshold=-1.0)
    with pytest.raises(ValueError, match=r"embeddings must be 2-D"):
        anomaly_scores(X[0])
    with pytest.raises(ValueError, match=r"k must be an int >= 1"):
        anomaly_scores(X, k=0)


def test_edge_cases_return_empty_not_errors():
    assert select("kcenter", 0, embeddings=X).size == 0
    assert select("kcenter", 5, embeddings=X, labeled=np.ones(20, bool)).size == 0
    assert select("typiclust", 50, embeddings=X).size == 20
    assert (
        select("margin", 3, embeddings=np.zeros((0, 3)), probabilities=np.zeros((0, 3))).size == 0
    )
