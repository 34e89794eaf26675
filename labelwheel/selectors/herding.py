"""MaxHerding: greedy generalised coverage with a smooth kernel, for the low-budget regime.

ProbCover counts a point as covered when it lies within a hard radius δ of a pick, so it stands
or falls with δ. MaxHerding (Bae, Kim & Sutherland, "Generalized coverage for more robust
low-budget active learning", ECCV 2024) replaces the ball by a kernel: the coverage of the pool
by a set S is ``Σ_i max_{s ∈ S} k(x_i, x_s)`` with ``k(x, y) = exp(-‖x − y‖² / σ²)``, and picks
greedily the sample that raises it most. Labelled samples start in S. Dense regions far from
everything labelled give the largest gains, so the first picks are typical samples of distinct
regions (like TypiClust), and later ones fill the gaps between them (like k-center), without
TypiClust's clustering or ProbCover's radius.

Here the kernel is kept sparse: each sample's ``max_neighbors`` nearest neighbours (exact, faiss;
symmetric), which truncates only values below ``exp(-r_k² / σ²)``. ``σ`` defaults to the median
distance from a sample to its ``bandwidth_k``-th nearest neighbour. The greedy loop updates the
gains incrementally: a pick changes only the rows it covers better than before. Small pools
(the ML backend ranks 16-48 rows twice per request) build the kernel through a dense N×N matrix
instead of scipy.sparse, whose fixed cost per call dwarfs the work there: the same arrays, bit
for bit, so the same picks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from labelwheel.selectors._registry import CoreResult, fill_random, strategy
from labelwheel.selectors._space import working_space
from labelwheel.selectors._validation import Pool, check_fraction, check_positive_int
from labelwheel.selectors.covering import _knn

__all__ = ["herding_kernel", "maxherding"]


class _Csr(NamedTuple):
    """A square matrix in CSR arrays: row ``i`` holds ``indices[indptr[i]:indptr[i + 1]]``
    (ascending) with values ``data[indptr[i]:indptr[i + 1]]``, as scipy's canonical CSR."""

    indptr: NDArray[np.int32]
    indices: NDArray[np.int32]
    data: NDArray[np.float64]


DENSE_KERNEL_MAX_ROWS = 200
"""Up to this many rows the kernel is symmetrised in a dense N×N float64 matrix (at most
320 KB) instead of through scipy.sparse, whose matrix objects cost ~0.2 ms per call whatever
the size. Measured after the kNN search (2-core machine): 16 rows ~0.02 ms against ~0.2 ms,
200 rows ~0.3-0.5 ms against ~0.3-0.7 ms (10-50 neighbours); the dense cost grows as N², and
from ~250 rows scipy's is lower. Both give the same arrays, bit for bit."""


def herding_kernel(
    space: NDArray[np.float32], max_neighbors: int, sigma: float | None, bandwidth_k: int
) -> tuple[sp.csr_matrix, float]:
    """The sparse symmetric kernel ``K[i, j] = exp(-‖x_i − x_j‖² / σ²)`` over each row's
    ``max_neighbors`` nearest neighbours (and itself: ``K[i, i] = 1``), and the ``σ`` used."""
    k, sigma = _kernel_arrays(space, max_neighbors, sigma, bandwidth_k)
    n = k.indptr.size - 1
    return sp.csr_matrix((k.data, k.indices, k.indptr), shape=(n, n)), sigma


def _kernel_arrays(
    space: NDArray[np.float32], max_neighbors: int, sigma: float | None, bandwidth_k: int
) -> tuple[_Csr, float]:
    """:func:`herding_kernel` as CSR arrays, built without scipy.sparse on small pools."""
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
    if n <= DENSE_KERNEL_MAX_ROWS and not np.isnan(vals).any():
        return _symmetric_dense(n, rows, cols, vals), sigma
    return _symmetric_sparse(n, rows, cols, vals), sigma


def _symmetric_sparse(
    n: int, rows: NDArray[np.int64], cols: NDArray[np.int64], vals: NDArray[np.float64]
) -> _Csr:
    """``max(K, Kᵀ)`` of the kNN values ``K[rows, cols] = vals``, 1 on the diagonal, explicit
    zeros (underflowed values) dropped, in canonical CSR (indices sorted in each row)."""
    k = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    k = k.maximum(k.T).tocsr()  # symmetric: y is near x or x is near y
    k.setdiag(1.0)
    k.eliminate_zeros()
    return _Csr(k.indptr, k.indices, k.data)


def _symmetric_dense(
    n: int, rows: NDArray[np.int64], cols: NDArray[np.int64], vals: NDArray[np.float64]
) -> _Csr:
    """:func:`_symmetric_sparse` through a dense N×N matrix: the same arrays, bit for bit.

    scipy's ``maximum`` of two sparse matrices is the elementwise maximum with absent entries
    as 0 and keeps only nonzero results, ``setdiag`` keeps the indices sorted, and that
    canonical order is the dense matrix's row-major order. The kNN pairs are distinct (faiss
    lists each neighbour once per row), so scipy sums no duplicates. Not for NaN values
    (:func:`_kernel_arrays` sends any to scipy, though faiss leaves out neighbours whose
    distance overflows): scipy's maximum and ``np.maximum`` treat NaN differently.
    """
    knn = np.zeros((n, n), dtype=np.float64)
    knn[rows, cols] = vals
    dense = np.maximum(knn, knn.T)  # symmetric: y is near x or x is near y
    np.fill_diagonal(dense, 1.0)
    flat = np.flatnonzero(dense)  # row-major
    indptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(flat // n, minlength=n), out=indptr[1:])
    return _Csr(indptr, (flat % n).astype(np.int32), dense.ravel()[flat])


MAX_POOL = 20_000
"""Pools larger than this are herded on a seeded sample of this many rows (every labelled row
up to half of it, unlabelled rows for the rest): the kNN graph is O(N²), and a sample of 20,000
represents the dense regions the first picks come from."""


@strategy("maxherding", "embeddings")
def maxherding(
    pool: Pool,
    n: int,
    *,
    sigma: float | None = None,
    max_neighbors: int = 50,
    bandwidth_k: int = 20,
    max_pool: int = MAX_POOL,
) -> CoreResult:
    """MaxHerding: the samples that most raise the pool's kernel coverage, greedily.

    It favours typical samples of dense regions no labelled sample covers yet, then the gaps
    between them: a cold-start strategy for the first labels.

    Coverage of the pool by the labelled set plus the picks: ``Σ_i max_s k(x_i, x_s)`` with a
    Gaussian kernel (see the module doc). Utility: each pick's gain in coverage (at most the
    pool size; non-increasing along the batch). Once no sample adds coverage (every kernel
    neighbourhood covered) the rest is filled at random with utility 0.

    ``sigma``: the kernel's bandwidth (default: the median distance to the ``bandwidth_k``-th
    nearest neighbour). ``max_neighbors``: the kernel is kept for each sample's nearest ones.
    Cost: exact k-NN graph O(M²·d) time for M = min(N, ``max_pool``) (faiss; with a random
    projection of large pools), O(M·max_neighbors) memory; larger pools are herded on a seeded
    sample of ``max_pool`` rows (:data:`MAX_POOL`).
    """
    x = pool.need_embeddings("maxherding")
    max_neighbors = check_positive_int("max_neighbors", max_neighbors)
    bandwidth_k = check_positive_int("bandwidth_k", bandwidth_k)
    max_pool = check_positive_int("max_pool", max_pool)
    if sigma is not None:
        sigma = check_fraction("sigma", sigma, 0.0, float("inf"))
        if sigma <= 0:
            raise ValueError("sigma must be positive (or None for the default bandwidth)")
    if pool.n_samples > max_pool:
        rng = pool.rng()
        lab, unl = np.flatnonzero(pool.labeled), pool.unlabeled_idx
        if lab.size > max_pool // 2:
            lab = rng.choice(lab, max_pool // 2, replace=False)
        unl = rng.choice(unl, min(unl.size, max_pool - lab.size), replace=False)
        rows = np.sort(np.concatenate([lab, unl]))
        sub = Pool(rows.size, x[rows], None, pool.labeled[rows], pool.seed)
        idx, util = _herd(
            sub, min(n, int(np.count_nonzero(~sub.labeled))), sigma, max_neighbors, bandwidth_k
        )
        # the sample ran out (n above its unlabelled rows): the rest at random, utility 0
        return fill_random(pool, [int(i) for i in rows[idx]], [float(u) for u in util], n)
    return _herd(pool, n, sigma, max_neighbors, bandwidth_k)


def _herd(
    pool: Pool, n: int, sigma: float | None, max_neighbors: int, bandwidth_k: int
) -> CoreResult:
    x = pool.need_embeddings("maxherding")
    space, _ = working_space(x, pool.seed)
    # symmetric (CSR): row s lists the samples s covers, K[i, s] = K[s, i]
    kernel, _ = _kernel_arrays(space, max_neighbors, sigma, bandwidth_k)
    indptr, indices, data = kernel
    cover = np.zeros(indptr.size - 1, dtype=np.float64)  # max kernel value to labelled + picks

    def covered_by(s: int) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
        lo, hi = indptr[s], indptr[s + 1]
        return indices[lo:hi], data[lo:hi]

    for s in np.flatnonzero(pool.labeled):
        rows, vals = covered_by(int(s))
        np.maximum.at(cover, rows, vals)
    # gain[s] = Σ_i max(0, K[i, s] − cover[i]); np.add.reduceat is what scipy's csr sum(axis=1)
    # runs, same float sums (np.bincount, a left-to-right sum, differs in the last bits on rows
    # over 8 entries). Every row holds its diagonal, so no row is empty.
    gain = np.add.reduceat(np.maximum(data - cover[indices], 0.0), indptr[:-1])
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
            # each candidate's gain from row i falls from max(0, kv - old) to max(0, kv - new)
            gain[cands] -= np.maximum(kv - old, 0.0) - np.maximum(kv - new, 0.0)
            cover[i] = new
        gain[s] = -np.inf
    return fill_random(pool, picks, utils, n)
