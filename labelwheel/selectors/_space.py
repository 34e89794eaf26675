"""Numerical building blocks shared by the diversity and hybrid strategies.

Everything here works on big pools in row chunks: no N×N or N×k float64 matrices, and no copy of
the full embedding matrix unless it is a (much smaller) random projection of it.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]

#: Above this many N·d entries the clustering strategies work in a random projection.
PROJECT_ABOVE = 50_000_000
#: Dimension of that projection.
PROJECT_DIM = 64
#: Up to this N·k·d k-means runs in scikit-learn (k-means++ seeding: better on small pools).
SKLEARN_KMEANS_MAX_WORK = 3e8
#: Up to this N·k·d k-means is flat (one level); above it, two-level.
FLAT_KMEANS_MAX_WORK = 2e10
#: Bound on the temporary (rows × columns) block of a chunked distance computation.
BLOCK_ENTRIES = 4_000_000


def _chunk_rows(n_cols: int) -> int:
    return max(256, BLOCK_ENTRIES // max(1, n_cols))


def as_f32(x: NDArray[np.floating]) -> F32:
    """``x`` as C-contiguous float32 (no copy when it already is)."""
    return np.ascontiguousarray(x, dtype=np.float32)


def random_projection(
    x: NDArray[np.floating], dim: int, seed: int, rows: NDArray[np.int64] | None = None
) -> F32:
    """Gaussian random projection of the rows of ``x`` (or of ``x[rows]``) to ``dim`` columns.

    Computed in chunks: distances are preserved up to a factor 1 ± O(1/√dim)
    (Johnson-Lindenstrauss); the result, (N, dim) float32, is the only pool-sized allocation.
    """
    n = x.shape[0] if rows is None else rows.size
    d = x.shape[1]
    rng = np.random.default_rng(seed + 7919)
    r = (rng.standard_normal((d, dim)) / math.sqrt(dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    step = _chunk_rows(d)
    for s in range(0, n, step):
        blk = x[s : s + step] if rows is None else x[rows[s : s + step]]
        np.matmul(blk.astype(np.float32, copy=False), r, out=out[s : s + step])
    return out


def working_space(
    x: NDArray[np.floating], seed: int, *, project: bool | None = None, dim: int = PROJECT_DIM
) -> tuple[F32, bool]:
    """The float32 matrix a clustering strategy works on, and whether it is a projection.

    ``project=None`` projects when N·d exceeds :data:`PROJECT_ABOVE` and d > ``dim``.
    """
    n, d = x.shape
    if project is None:
        project = n * d > PROJECT_ABOVE and d > dim
    if project and d > dim:
        return random_projection(x, dim, seed), True
    return as_f32(x), False


def row_sqnorms(x: NDArray[np.floating]) -> NDArray[np.float64]:
    """Squared L2 norm of each row, in chunks (float64 result)."""
    out = np.empty(x.shape[0], dtype=np.float64)
    step = _chunk_rows(x.shape[1])
    for s in range(0, x.shape[0], step):
        blk = np.asarray(x[s : s + step], dtype=np.float64)
        out[s : s + step] = np.einsum("ij,ij->i", blk, blk)
    return out


#: faiss OpenMP threads used by the selectors. One thread: OpenMP's busy-waiting makes faiss's
#: small k-means and search calls many times slower on a shared, oversubscribed machine, and
#: the big matrix products run in numpy's BLAS anyway.
FAISS_THREADS = 1


_CONTROLLER: Any = None


def single_thread() -> contextlib.AbstractContextManager[Any]:
    """Limit BLAS/OpenMP to one thread for loops of many small matrix products.

    On a shared machine multi-threaded BLAS on small operands spends most of its time waiting
    for its threads (measured: 10× slower per call in TypiClust's per-cluster loop).
    """
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    limiter: contextlib.AbstractContextManager[Any] = _CONTROLLER.limit(limits=1)
    return limiter


@contextlib.contextmanager
def faiss_threads() -> Iterator[None]:
    """Run faiss with :data:`FAISS_THREADS` threads, restoring the caller's setting after."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(FAISS_THREADS)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def min_sqdist_update(
    x: NDArray[np.floating],
    sq: NDArray[np.float64],
    centers: NDArray[np.floating],
    mind: NDArray[np.floating],
    rows: NDArray[np.int64] | None = None,
) -> None:
    """In place: ``mind[i] = min(mind[i], min_c ||x_i - c||²)`` over ``centers``, in chunks.

    Uses ``||x||² - 2 x·c + ||c||²`` with the data's own precision; results are clipped at 0.
    ``rows`` restricts the update to those rows of ``x``; ``sq`` is always indexed like ``x``,
    ``mind`` like ``rows`` (position i of ``mind`` belongs to row ``rows[i]``).
    """
    if x.dtype == np.float32:
        index = faiss.IndexFlatL2(x.shape[1])
        index.add(np.ascontiguousarray(centers, dtype=np.float32))
        total = x.shape[0] if rows is None else rows.size
        with faiss_threads():
            for s in range(0, total, 65_536):
                blk32 = x[s : s + 65_536] if rows is None else x[rows[s : s + 65_536]]
                dist, _ = index.search(np.ascontiguousarray(blk32), 1)
                np.maximum(dist[:, 0], 0, out=dist[:, 0])
                np.minimum(mind[s : s + 65_536], dist[:, 0], out=mind[s : s + 65_536])
        return
    c = np.asarray(centers, dtype=x.dtype)
    csq = np.einsum("ij,ij->i", c.astype(np.float64), c.astype(np.float64)).astype(x.dtype)
    ct = np.ascontiguousarray(c.T)
    step = _chunk_rows(c.shape[0])
    n = x.shape[0] if rows is None else rows.size
    for s in range(0, n, step):
        if rows is None:
            blk = x[s : s + step]
            sqb = sq[s : s + step]
        else:
            blk = x[rows[s : s + step]]
            sqb = sq[rows[s : s + step]]
        d2 = blk @ ct
        d2 *= -2
        d2 += csq[None, :]
        best = d2.min(axis=1) + sqb.astype(x.dtype)
        np.maximum(best, 0, out=best)
        np.minimum(mind[s : s + step], best, out=mind[s : s + step])


def _kmeans_centroids(x: F32, k: int, seed: int, niter: int, max_per_centroid: int) -> F32:
    """Train faiss k-means on (a seeded subsample of) the rows of ``x``."""
    n, d = x.shape
    cap = k * max_per_centroid
    if n > cap:
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=cap, replace=False))
        train = np.ascontiguousarray(x[sample])
    else:
        train = np.ascontiguousarray(x)
    km = faiss.Kmeans(
        d,
        k,
        niter=niter,
        seed=int(seed) % (2**31 - 1),
        max_points_per_centroid=max_per_centroid,
        min_points_per_centroid=1,
        verbose=False,
    )
    km.train(train)
    return np.asarray(km.centroids, dtype=np.float32)


def assign(x: F32, centroids: F32) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Nearest centroid of each row and the squared distance to it, in chunks."""
    n = x.shape[0]
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    labels = np.empty(n, dtype=np.int64)
    d2 = np.empty(n, dtype=np.float32)
    step = 65_536
    for s in range(0, n, step):
        dist, lab = index.search(np.ascontiguousarray(x[s : s + step]), 1)
        labels[s : s + step] = lab[:, 0]
        d2[s : s + step] = np.maximum(dist[:, 0], 0)
    return labels, d2


def kmeans_labels(
    x: F32, k: int, seed: int, *, niter: int = 20
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Cluster labels (0..k-1) and squared distance to the cluster centroid for every row.

    Flat faiss k-means (trained on ≤ 256 points per centroid) while N·k·d is moderate; above
    that a two-level scheme: √k coarse clusters, then each coarse cell is split into a share of
    the k fine clusters proportional to its size. Cost O(N·(√k + k/√k)·d) instead of O(N·k·d);
    memory O(N) beyond the input.
    """
    with faiss_threads():
        return _kmeans(x, k, seed, niter)


def _kmeans(x: F32, k: int, seed: int, niter: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    n, d = x.shape
    k = max(1, min(k, n))
    if k == n:
        return np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.float32)
    if k == 1:
        c = np.asarray(x.mean(axis=0, dtype=np.float64), dtype=np.float32)[None, :]
        return assign(x, c)
    if float(n) * k * d <= SKLEARN_KMEANS_MAX_WORK:
        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning
        from threadpoolctl import threadpool_limits

        # one thread: OpenMP busy-waiting is slow on a shared machine; duplicate rows may leave
        # fewer distinct clusters than k, which is fine here
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            km = KMeans(k, n_init=1, random_state=seed % (2**32), max_iter=100).fit(x)
        lab = km.labels_.astype(np.int64)
        diff = x - km.cluster_centers_[lab].astype(np.float32)
        return lab, np.einsum("ij,ij->i", diff, diff).astype(np.float32)
    if float(n) * k * d <= FLAT_KMEANS_MAX_WORK or k <= 64:
        cents = _kmeans_centroids(x, k, seed, niter, 256)
        return assign(x, cents)
    k1 = max(2, round(math.sqrt(k)))
    coarse = _kmeans_centroids(x, k1, seed, niter, 256)
    lab1, _ = assign(x, coarse)
    sizes = np.bincount(lab1, minlength=k1)
    share = sizes / n * k
    kj = np.floor(share).astype(np.int64)
    kj[np.argsort(-(share - kj), kind="stable")[: k - int(kj.sum())]] += 1
    kj = np.minimum(np.maximum(kj, (sizes > 0).astype(np.int64)), sizes)
    order = np.argsort(lab1, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    labels = np.empty(n, dtype=np.int64)
    d2 = np.empty(n, dtype=np.float32)
    offset = 0
    for j in range(k1):
        members = order[bounds[j] : bounds[j + 1]]
        if members.size == 0:
            continue
        sub = np.ascontiguousarray(x[members])
        kk = int(kj[j])
        if kk <= 1:
            c = np.asarray(sub.mean(axis=0, dtype=np.float64), dtype=np.float32)[None, :]
        elif kk >= members.size:
            c = sub
        else:
            c = _kmeans_centroids(sub, kk, seed + j + 1, max(8, niter // 2), 32)
        lab, dd = assign(sub, c)
        labels[members] = lab + offset
        d2[members] = dd
        offset += c.shape[0]
    return labels, d2


def cluster_members(
    labels: NDArray[np.int64], k: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(order, bounds): members of cluster j are ``order[bounds[j]:bounds[j+1]]``, ascending."""
    order = np.argsort(labels, kind="stable").astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=k))]).astype(np.int64)
    return order, bounds
