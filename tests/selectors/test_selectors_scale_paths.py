"""The large-pool code paths, exercised on small data by lowering their size thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from labelwheel.selectors import _space, select


def _blobs(n_blobs=20, per=150, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_blobs, dim)) * 10
    blob = np.repeat(np.arange(n_blobs), per)
    x = (centers[blob] + rng.normal(size=(blob.size, dim))).astype(np.float32)
    return x, blob


def test_two_level_kmeans_recovers_blobs(monkeypatch):
    monkeypatch.setattr(_space, "SKLEARN_KMEANS_MAX_WORK", 0)
    monkeypatch.setattr(_space, "FLAT_KMEANS_MAX_WORK", 0)
    x, blob = _blobs()
    labels, d2 = _space.kmeans_labels(x, 100, seed=0)  # k > 64: two levels, 10 coarse cells
    assert labels.shape == (x.shape[0],) and d2.shape == (x.shape[0],)
    k = int(labels.max()) + 1
    assert 80 <= k <= 100
    # every fine cluster lies inside one blob (purity 1 on well-separated blobs)
    for c in np.unique(labels):
        assert np.unique(blob[labels == c]).size == 1
    assert np.all(d2 >= 0)


def test_projected_working_space_is_used_above_threshold(monkeypatch):
    monkeypatch.setattr(_space, "PROJECT_ABOVE", 0)
    x, blob = _blobs(dim=80)
    space, projected = _space.working_space(x, seed=0)
    assert projected and space.shape == (x.shape[0], _space.PROJECT_DIM)
    idx = select("typiclust", 20, embeddings=x, seed=0)
    assert np.unique(blob[idx]).size == 20  # one typical sample per blob


def test_kcenter_sampled_approximation_keeps_the_contract():
    x, _ = _blobs()
    labeled = np.zeros(x.shape[0], bool)
    labeled[::100] = True
    idx, util = select(
        "kcenter",
        40,
        embeddings=x,
        labeled=labeled,
        exact=False,
        sample_size=600,
        return_scores=True,
    )
    assert idx.size == 40 and np.unique(idx).size == 40 and not labeled[idx].any()
    assert np.all(np.diff(util) <= 1e-6)


def test_typiclust_bounded_reference_sample_in_a_huge_cluster():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2500, 4))  # one cluster of 2,500 > the 1,000-member reference cap
    idx, util = select("typiclust", 1, embeddings=x, return_scores=True)
    assert np.linalg.norm(x[idx[0]]) < 1.0  # the typical sample sits near the dense centre
    assert util[0] > 0


@pytest.mark.parametrize("name", ["kmeans", "cluster_margin"])
def test_clustering_strategies_on_projected_two_level_path(monkeypatch, name):
    monkeypatch.setattr(_space, "SKLEARN_KMEANS_MAX_WORK", 0)
    monkeypatch.setattr(_space, "FLAT_KMEANS_MAX_WORK", 0)
    monkeypatch.setattr(_space, "PROJECT_ABOVE", 0)
    x, blob = _blobs(dim=80)
    p = np.random.default_rng(1).dirichlet(np.ones(3), size=x.shape[0])
    idx = select(name, 70, embeddings=x, probabilities=p, seed=0)
    assert idx.size == 70 and np.unique(idx).size == 70
    assert np.unique(blob[idx]).size >= 15  # spread over the blobs, not piled in a few
