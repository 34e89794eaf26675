"""MaxHerding (labelwheel.selectors.herding): greedy kernel coverage, checked against a dense
textbook greedy, and its place as adaptive's cold-start strategy."""

from __future__ import annotations

import numpy as np
import pytest

from labelwheel.selectors import adaptive_phase, select
from labelwheel.selectors.herding import herding_kernel


def _blobs(sizes: list[int], spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(len(sizes), 5))
    blob = np.repeat(np.arange(len(sizes)), sizes)
    return (centres[blob] + rng.normal(scale=spread, size=(blob.size, 5))).astype(np.float32), blob


def _dense_greedy(x: np.ndarray, labeled: np.ndarray, n: int, sigma: float) -> list[int]:
    """The definition, with the full kernel: pick argmax_s Σ_i max(0, k(x_i, x_s) − cover_i)."""
    d2 = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    k = np.exp(-d2 / sigma**2)
    cover = k[:, labeled].max(axis=1) if labeled.any() else np.zeros(len(x))
    picks: list[int] = []
    for _ in range(n):
        gain = np.maximum(k - cover[:, None], 0.0).sum(axis=0)
        gain[labeled] = -np.inf
        gain[picks] = -np.inf
        s = int(np.argmax(gain))
        picks.append(s)
        cover = np.maximum(cover, k[:, s])
    return picks


@pytest.mark.parametrize("with_labels", [False, True])
def test_incremental_greedy_equals_the_dense_definition(with_labels: bool) -> None:
    x, _ = _blobs([15, 25, 10, 20], spread=2.0, seed=3)
    labeled = np.zeros(len(x), dtype=bool)
    if with_labels:
        labeled[[0, 20]] = True
    sigma = 4.0
    idx, util = select(
        "maxherding",
        12,
        embeddings=x,
        labeled=labeled,
        return_scores=True,
        sigma=sigma,
        max_neighbors=len(x),  # the whole kernel: nothing truncated
    )
    assert idx.tolist() == _dense_greedy(x, labeled, 12, sigma)
    assert not labeled[idx].any()
    assert np.all(np.diff(util) <= 1e-9)  # coverage is submodular: gains never grow


def test_first_picks_are_one_per_blob_densest_first() -> None:
    x, blob = _blobs([120, 60, 30], spread=0.5)
    idx, util = select("maxherding", 3, embeddings=x, return_scores=True)
    assert blob[idx].tolist() == [0, 1, 2]  # the biggest uncovered region gains most
    assert util[0] > util[1] > util[2] > 0
    # a labelled sample covers its blob: the next picks go to the others
    labeled = blob == 0
    assert set(blob[select("maxherding", 2, embeddings=x, labeled=labeled)]) == {1, 2}


def test_when_everything_is_covered_the_rest_is_random_with_zero_utility() -> None:
    x, _ = _blobs([5, 5], spread=0.1)
    idx, util = select(
        "maxherding", 10, embeddings=x, return_scores=True, max_neighbors=2, sigma=1e-3
    )
    assert sorted(idx.tolist()) == list(range(10))
    assert np.all(util[util > 0] <= 1.0 + 1e-9)  # a point only covers itself at this bandwidth


def test_kernel_is_symmetric_with_unit_diagonal_and_default_bandwidth() -> None:
    x, _ = _blobs([30, 30], spread=1.0)
    k, sigma = herding_kernel(x, max_neighbors=5, sigma=None, bandwidth_k=3)
    assert sigma > 0
    assert abs(k - k.T).max() < 1e-12
    np.testing.assert_allclose(k.diagonal(), 1.0)
    assert k.nnz <= 60 * (2 * 5 + 1)


@pytest.mark.parametrize(
    "params,match",
    [({"sigma": 0.0}, "sigma"), ({"max_neighbors": 0}, "max_neighbors"), ({"sigma": -1}, "sigma")],
)
def test_bad_parameters_are_clear_errors(params: dict, match: str) -> None:
    x, _ = _blobs([10, 10], spread=1.0)
    with pytest.raises(ValueError, match=match):
        select("maxherding", 2, embeddings=x, **params)


def test_adaptive_starts_with_maxherding() -> None:
    phase = adaptive_phase(5, 10, 0.5)
    assert (phase.phase, phase.strategy) == ("coverage", "maxherding")  # the default
    assert adaptive_phase(5, 10, 0.5, early="typiclust").strategy == "typiclust"
    with pytest.raises(ValueError, match="early"):
        adaptive_phase(5, 10, 0.5, early="kcenter")
    x, _ = _blobs([40, 40, 40], spread=0.5)
    got = select("adaptive", 3, embeddings=x, early="maxherding")
    assert got.tolist() == select("maxherding", 3, embeddings=x).tolist()


def test_a_pool_over_max_pool_is_herded_on_a_sample() -> None:
    x, blob = _blobs([150, 100, 50], spread=0.5)
    labeled = np.zeros(len(x), dtype=bool)
    labeled[[0, 1]] = True  # two labels in blob 0
    idx, util = select(
        "maxherding", 4, embeddings=x, labeled=labeled, seed=5, return_scores=True, max_pool=90
    )
    again = select("maxherding", 4, embeddings=x, labeled=labeled, seed=5, max_pool=90)
    assert idx.tolist() == again.tolist() and len(set(idx.tolist())) == 4
    assert not labeled[idx].any()
    assert set(blob[idx[:2]]) == {1, 2}  # the uncovered blobs first, as on the whole pool
    assert np.all(np.diff(util) <= 1e-9)
