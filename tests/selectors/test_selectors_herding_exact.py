"""MaxHerding without scipy.sparse (labelwheel.selectors.herding): the CSR arrays, σ, picks and
utilities are bit for bit those of the scipy construction they replaced, kept here verbatim as
the reference, on both sides of the dense/sparse threshold."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelwheel.selectors import herding, select
from labelwheel.selectors._registry import CoreResult, fill_random
from labelwheel.selectors._space import working_space
from labelwheel.selectors._validation import Pool
from labelwheel.selectors.covering import _knn


def _reference_kernel(
    space: np.ndarray, max_neighbors: int, sigma: float | None, bandwidth_k: int
) -> tuple[sp.csr_matrix, float]:
    """herding_kernel as it was: scipy.sparse all the way."""
    nbr, dist = _knn(space, max_neighbors)
    n, kk = nbr.shape
    if sigma is None:
        col = min(bandwidth_k, kk - 1)
        sigma = float(np.median(dist[:, col])) if col > 0 else 1.0
        if not np.isfinite(sigma) or sigma <= 0:
            sigma = float(dist[:, 1:].mean()) if kk > 1 and dist[:, 1:].mean() > 0 else 1.0
    keep = nbr >= 0
    rows = np.repeat(np.arange(n), keep.sum(axis=1))
    cols = nbr[keep]
    vals = np.exp(-((dist[keep].astype(np.float64) / sigma) ** 2))
    k = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    k = k.maximum(k.T).tocsr()
    k.setdiag(1.0)
    k.eliminate_zeros()
    return k, sigma


def _reference_herd(
    pool: Pool, n: int, sigma: float | None, max_neighbors: int, bandwidth_k: int
) -> CoreResult:
    """_herd as it was, on the reference kernel (scipy's copy and sum(axis=1))."""
    space, _ = working_space(pool.need_embeddings("maxherding"), pool.seed)
    kernel, _ = _reference_kernel(space, max_neighbors, sigma, bandwidth_k)
    cover = np.zeros(kernel.shape[0], dtype=np.float64)

    def covered_by(s: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = kernel.indptr[s], kernel.indptr[s + 1]
        return kernel.indices[lo:hi], kernel.data[lo:hi]

    for s in np.flatnonzero(pool.labeled):
        rows, vals = covered_by(int(s))
        np.maximum.at(cover, rows, vals)
    excess = kernel.copy()
    excess.data = np.maximum(excess.data - cover[excess.indices], 0.0)
    gain = np.asarray(excess.sum(axis=1)).ravel()
    gain[pool.labeled] = -np.inf
    picks: list[int] = []
    utils: list[float] = []
    while len(picks) < n:
        s = int(np.argmax(gain))
        if not gain[s] > 1e-12:
            break
        picks.append(s)
        utils.append(float(gain[s]))
        rows, vals = covered_by(s)
        better = vals > cover[rows]
        for i, new in zip(rows[better], vals[better], strict=True):
            old = cover[i]
            cands, kv = covered_by(int(i))
            gain[cands] -= np.maximum(kv - old, 0.0) - np.maximum(kv - new, 0.0)
            cover[i] = new
        gain[s] = -np.inf
    return fill_random(pool, picks, utils, n)


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    """Same dtype, shape and bytes (so 0.0 is not -0.0, and a NaN matches only itself)."""
    got, want = np.asarray(got), np.asarray(want)
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def _check(
    x: np.ndarray,
    labeled: np.ndarray,
    n: int,
    *,
    sigma: float | None = None,
    max_neighbors: int = 50,
    bandwidth_k: int = 20,
    seed: int = 0,
) -> None:
    space, _ = working_space(x, seed)
    want_k, want_sigma = _reference_kernel(space, max_neighbors, sigma, bandwidth_k)
    got_k, got_sigma = herding._kernel_arrays(space, max_neighbors, sigma, bandwidth_k)
    assert type(got_sigma) is type(want_sigma) and _same(np.float64(got_sigma), want_sigma)
    assert _same(got_k.indptr, want_k.indptr)
    assert _same(got_k.indices, want_k.indices)
    assert _same(got_k.data, want_k.data)
    public, public_sigma = herding.herding_kernel(space, max_neighbors, sigma, bandwidth_k)
    assert isinstance(public, sp.csr_matrix) and public.shape == want_k.shape
    assert public_sigma == want_sigma
    for name in ("indptr", "indices", "data"):
        assert _same(getattr(public, name), getattr(want_k, name))

    pool = Pool(len(x), x, None, labeled, seed)
    got_idx, got_util = herding._herd(pool, n, sigma, max_neighbors, bandwidth_k)
    want_idx, want_util = _reference_herd(pool, n, sigma, max_neighbors, bandwidth_k)
    assert _same(got_idx, want_idx)
    assert _same(got_util, want_util)


def _data(kind: str, n_rows: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.normal(size=(n_rows, dim)).astype(np.float32)
    if kind == "grid":  # small integers: duplicate rows and tied distances everywhere
        return rng.integers(0, 3, size=(n_rows, dim)).astype(np.float32)
    if kind == "copies":  # a few distinct rows, each repeated many times
        base = rng.normal(size=(max(1, n_rows // 6), dim))
        return base[rng.integers(0, len(base), n_rows)].astype(np.float32)
    # clustered: tight blobs far apart, so far values underflow to 0 and are dropped
    centres = rng.normal(scale=20.0, size=(3, dim))
    blob = rng.integers(0, 3, n_rows)
    return (centres[blob] + rng.normal(scale=0.3, size=(n_rows, dim))).astype(np.float32)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    n_rows=st.integers(1, 60),
    dim=st.integers(1, 5),
    kind=st.sampled_from(["normal", "grid", "copies", "clustered"]),
    frac_labeled=st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0]),
    sigma=st.sampled_from([None, None, 1e-3, 0.3, 2.0, 1e3]),
    max_neighbors=st.sampled_from([1, 2, 3, 5, 10, 50, 100]),
    bandwidth_k=st.sampled_from([1, 3, 20]),
    extra=st.integers(0, 3),
)
def test_small_pools_match_the_scipy_construction(
    seed: int,
    n_rows: int,
    dim: int,
    kind: str,
    frac_labeled: float,
    sigma: float | None,
    max_neighbors: int,
    bandwidth_k: int,
    extra: int,
) -> None:
    x = _data(kind, n_rows, dim, seed)
    labeled = np.random.default_rng(seed + 1).random(n_rows) < frac_labeled
    n = max(0, int(np.count_nonzero(~labeled)) - 3 + extra)  # up to every unlabelled row
    _check(
        x,
        labeled,
        n,
        sigma=sigma,
        max_neighbors=max_neighbors,
        bandwidth_k=bandwidth_k,
        seed=seed,
    )


@pytest.mark.parametrize("offset", [-1, 0, 1, 150])
@pytest.mark.parametrize("kind", ["normal", "copies", "clustered"])
def test_both_sides_of_the_dense_threshold_match(offset: int, kind: str) -> None:
    n_rows = herding.DENSE_KERNEL_MAX_ROWS + offset
    x = _data(kind, n_rows, 8, seed=n_rows)
    labeled = np.zeros(n_rows, dtype=bool)
    labeled[::17] = True
    _check(x, labeled, 30)
    _check(x, labeled, 10, max_neighbors=5, bandwidth_k=3)


@pytest.mark.parametrize("threshold", [0, 10_000])
def test_either_path_on_any_size_matches(monkeypatch: pytest.MonkeyPatch, threshold: int) -> None:
    """The dense build forced on 300 rows, and scipy's on small pools."""
    monkeypatch.setattr(herding, "DENSE_KERNEL_MAX_ROWS", threshold)
    for seed, (n_rows, kind) in enumerate(
        [(1, "normal"), (2, "copies"), (40, "grid"), (300, "clustered")]
    ):
        x = _data(kind, n_rows, 6, seed)
        labeled = np.random.default_rng(seed).random(n_rows) < 0.2
        _check(x, labeled, min(12, n_rows), seed=seed)


def test_huge_coordinates_where_faiss_leaves_neighbours_out() -> None:
    # squared distances overflow float32: faiss returns -1 (no neighbour) for those
    x = np.array([[3e38, 0], [-3e38, 0], [0, 0], [1, 1], [1, 1]], dtype=np.float32)
    assert (_knn(x, 4)[0] < 0).any()
    _check(x, np.zeros(5, dtype=bool), 4)
    _check(x, np.array([False, False, True, False, False]), 3, sigma=0.5)


def test_small_pools_build_no_scipy_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _data("clustered", 48, 16, seed=3)
    want = select("maxherding", 10, embeddings=x, seed=0, return_scores=True)
    monkeypatch.setattr(herding, "sp", None)  # any scipy.sparse call would raise
    got = select("maxherding", 10, embeddings=x, seed=0, return_scores=True)
    assert _same(got[0], want[0]) and _same(got[1], want[1])
