"""Hybrid strategies against explicit reference implementations (and modAL where installed)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from labelwheel.selectors import select
from labelwheel.selectors.hybrid import gradient_embedding, gradient_factors


def _data(n=120, d=6, c=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    p = rng.dirichlet(np.ones(c) * 0.7, size=n)
    return x, p


def test_badge_factorisation_equals_explicit_gradient_embedding():
    x, p = _data()
    g = gradient_embedding(p, x)  # (N, C*d), explicit
    assert g.shape == (120, 4 * 6)
    f = gradient_factors(p)
    np.testing.assert_allclose((g**2).sum(1), (f**2).sum(1) * (x**2).sum(1), rtol=1e-12)
    np.testing.assert_allclose(g @ g.T, (f @ f.T) * (x @ x.T), rtol=1e-10, atol=1e-12)


def _badge_reference(x, p, n, seed, labeled):
    """k-means++ seeding on the explicit gradient embeddings, same random draws as badge()."""
    g = gradient_embedding(p, x)
    unl = np.flatnonzero(~labeled)
    gu = g[unl]
    rng = np.random.default_rng(seed)
    norms = (gu**2).sum(1)
    picks = [int(np.argmax(norms))]
    mind = ((gu - gu[picks[0]]) ** 2).sum(1)
    alive = np.ones(unl.size, bool)
    alive[picks[0]] = False
    for _ in range(n - 1):
        w = np.where(alive, mind, 0.0)
        cum = np.cumsum(w)
        j = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
        picks.append(j)
        alive[j] = False
        mind = np.minimum(mind, ((gu - gu[j]) ** 2).sum(1))
    return unl[picks]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_badge_equals_explicit_kmeanspp(seed):
    x, p = _data(seed=seed)
    labeled = np.zeros(120, bool)
    labeled[::7] = True
    got = select("badge", 15, embeddings=x, probabilities=p, labeled=labeled, seed=seed)
    np.testing.assert_array_equal(got, _badge_reference(x, p, 15, seed, labeled))


def test_badge_first_pick_has_largest_gradient_norm():
    x, p = _data(seed=4)
    idx, util = select("badge", 1, embeddings=x, probabilities=p, return_scores=True)
    norms = (gradient_embedding(p, x) ** 2).sum(1)
    assert idx[0] == int(np.argmax(norms)) and util[0] == pytest.approx(norms.max())


def _ranked_batch_reference(x, p, n, labeled):
    """Cardoso et al. 2017, written out directly: recompute everything each step."""
    unl = list(np.flatnonzero(~labeled))
    chosen_pool = [x[i] for i in np.flatnonzero(labeled)]
    u = 1.0 - p.max(axis=1)
    picks = []
    if not chosen_pool:
        mean = [np.mean([np.linalg.norm(x[i] - x[j]) for j in unl]) for i in unl]
        first = unl[int(np.argmin(mean))]
        picks.append(first)
        chosen_pool.append(x[first])
        unl.remove(first)
    while len(picks) < n:
        alpha = len(unl) / (len(unl) + len(chosen_pool))
        best, best_s = None, -np.inf
        for i in unl:
            d = min(np.linalg.norm(x[i] - c) for c in chosen_pool)
            s = alpha * (1 - 1 / (1 + d)) + (1 - alpha) * u[i]
            if s > best_s:
                best, best_s = i, s
        picks.append(best)
        chosen_pool.append(x[best])
        unl.remove(best)
    return np.array(picks)


@pytest.mark.parametrize("n_labeled", [0, 1, 10])
def test_ranked_batch_equals_reference(n_labeled):
    x, p = _data(n=80, seed=n_labeled)
    labeled = np.zeros(80, bool)
    labeled[:n_labeled] = True
    got = select("ranked_batch", 12, embeddings=x, probabilities=p, labeled=labeled)
    np.testing.assert_array_equal(got, _ranked_batch_reference(x, p, 12, labeled))


class _FakeLearner:
    """The two attributes modAL's ranked_batch reads from a learner."""

    def __init__(self, x_training):
        self.X_training = x_training
        self.on_transformed = False


def test_ranked_batch_matches_modal_and_is_faster():
    batch = pytest.importorskip("modAL.batch")
    rng = np.random.default_rng(0)
    n_pool, d = 1000, 16
    x = rng.normal(size=(n_pool + 20, d))
    p = rng.dirichlet(np.ones(5), size=n_pool + 20)
    labeled = np.zeros(n_pool + 20, bool)
    labeled[:20] = True
    pool_x = x[20:]
    unc = 1.0 - p[20:].max(axis=1)
    t = time.perf_counter()
    ref, _ = batch.ranked_batch(
        _FakeLearner(x[:20]), pool_x, unc, n_instances=15, metric="euclidean", n_jobs=None
    )
    t_modal = time.perf_counter() - t
    t = time.perf_counter()
    got = select("ranked_batch", 15, embeddings=x, probabilities=p, labeled=labeled)
    t_ours = time.perf_counter() - t
    np.testing.assert_array_equal(got - 20, ref)
    assert t_ours < t_modal


def test_cluster_margin_reuses_cluster_labels():
    x, p = _data(n=300, seed=3)
    labels = np.arange(300) % 7
    a = select("cluster_margin", 14, embeddings=x, probabilities=p, cluster_labels=labels)
    assert np.bincount(labels[a], minlength=7).tolist() == [2] * 7


@pytest.mark.parametrize("n_labeled", [0, 25])
def test_ranked_batch_lazy_updates_match_full_recomputation(n_labeled):
    """Pools larger than the candidate set exercise the lazy refresh path."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4000, 8))
    p = rng.dirichlet(np.ones(3), size=4000)
    labeled = np.zeros(4000, bool)
    labeled[:n_labeled] = True
    got = select("ranked_batch", 60, embeddings=x, probabilities=p, labeled=labeled)
    unl = np.flatnonzero(~labeled)
    u = 1.0 - p[unl].max(axis=1)
    xu = x[unl]
    if n_labeled:
        d = np.min(np.linalg.norm(xu[:, None] - x[labeled][None], axis=2), axis=1)
        picks = []
    else:
        mean = np.array([np.linalg.norm(xu - xu[i], axis=1).mean() for i in range(unl.size)])
        first = int(np.argmin(mean))
        picks = [first]
        d = np.linalg.norm(xu - xu[first], axis=1)
    alive = np.ones(unl.size, bool)
    alive[picks] = False
    while len(picks) < 60:
        remaining = unl.size - len(picks)
        alpha = remaining / (remaining + n_labeled + len(picks))
        s = alpha * (1 - 1 / (1 + d)) + (1 - alpha) * u
        s[~alive] = -np.inf
        j = int(np.argmax(s))
        picks.append(j)
        alive[j] = False
        d = np.minimum(d, np.linalg.norm(xu - xu[j], axis=1))
    np.testing.assert_array_equal(got, unl[picks])
