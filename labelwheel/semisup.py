"""Semi-supervised use of the unlabelled pool: pseudo-labels for the head's regression.

In pool-based active learning the embeddings of the whole pool are known; a handful of labels
says which class each dense region of it is. :func:`pseudo_labels` turns the labels into
pseudo-labels for confident pool rows, which :class:`labelwheel.head.LinearProbe` adds (with a
smaller weight) to the real labels before fitting its logistic regression. Calibration stays
on the real labels only (the head's temperature is fitted on out-of-fold logits of real rows).

Two methods (:data:`SEMI_MODES`):

- ``"spreading"``: label spreading (Zhou et al., "Learning with local and global consistency",
  NeurIPS 2003) on a symmetric k-nearest-neighbour graph of the pool's L2-normalised embeddings
  (cosine similarity; PCA to at most :data:`GRAPH_DIM` dimensions first, so that the exact
  faiss search stays cheap). Each labelled row seeds its label on its nearest pool rows; the
  labels then diffuse over the graph, ``F ← α·S·F + (1−α)·Y`` with ``S = D^-½ W D^-½``. Memory
  O(N·k); the graph of a pool is built once and reused while the pool is unchanged (a small
  cache keyed by a fingerprint of the array).
- ``"self_training"``: the plain probe predicts the pool, its confident predictions are taken.

Either way the pseudo-labels are chosen per class (the most confident ``keep`` fraction of the
rows assigned to each class, at most :data:`MAX_PSEUDO_PER_CLASS`), so that a class the labels
under-represent is not drowned by the majority class.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = [
    "DEFAULT_SEMI",
    "GRAPH_DIM",
    "MAX_GRAPH_ROWS",
    "MAX_PSEUDO_PER_CLASS",
    "MAX_PSEUDO_ROWS",
    "PCA_SAMPLE_ROWS",
    "SEMI_MODES",
    "PoolGraph",
    "Pseudo",
    "pool_graph",
    "pseudo_labels",
    "spread_labels",
]

SEMI_MODES: tuple[str, ...] = ("none", "spreading", "self_training")
"""Values of :attr:`labelwheel.head.HeadConfig.semi_supervised`."""
DEFAULT_SEMI = "spreading"
"""The product's default, one value for the backend (``LABELWHEEL_HEAD_SEMI``), the simulator
and the data-lead tools: label spreading gave 0.39-0.47× the labels of the plain head on real
sets (``benchmarks/results/semisup_head_*.md``)."""
MAX_GRAPH_ROWS = 30_000
"""Pools larger than this are spread over an evenly strided subset of this many rows (the
kNN search is O(N²); pseudo-labels are capped per class anyway)."""
GRAPH_DIM = 64
"""Embeddings are reduced to at most this many PCA dimensions before the kNN search."""
MAX_PSEUDO_PER_CLASS = 2000
"""Cap on pseudo-labelled rows per class (bounds the regression's size on large pools)."""
MAX_PSEUDO_ROWS = 8000
"""Cap on pseudo-labelled rows in all, shared evenly by the classes: the regression's float64
copy of its rows is the training process's largest allocation (8,000 × 1,280 × 8 bytes = 78 MiB;
20,000 rows took the process from 207 to 600 MiB on a 20,000-task pool)."""
PCA_SAMPLE_ROWS = 5000
"""The graph's PCA is fitted on at most this many evenly strided rows of the pool."""
_CACHE_SIZE = 2


@dataclass(frozen=True)
class PoolGraph:
    """The kNN graph of a pool: ``S`` (N×N sparse, symmetric-normalised), and what is needed to
    attach new (labelled) rows to it: the PCA ``mean`` and ``components`` and the normalised
    reduced pool ``space``."""

    S: sp.csr_matrix
    mean: np.ndarray
    components: np.ndarray
    space: np.ndarray
    k: int

    def project(self, x: np.ndarray) -> np.ndarray:
        """Rows of ``x`` in the graph's space (normalised, PCA, normalised again)."""
        z = _normalise(np.asarray(x, dtype=np.float32))
        return _normalise((z - self.mean) @ self.components.T)


@dataclass(frozen=True)
class Pseudo:
    """Pseudo-labelled pool rows: their indices, classes and confidences in [0, 1]."""

    rows: np.ndarray
    classes: np.ndarray
    confidence: np.ndarray


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def _fingerprint(x: np.ndarray) -> str:
    step = max(1, x.shape[0] // 256)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(x.shape).encode())
    h.update(np.ascontiguousarray(x[::step]).tobytes())
    h.update(np.asarray(x.sum(axis=0, dtype=np.float64)).tobytes())
    return h.hexdigest()


_cache: OrderedDict[tuple[str, int], PoolGraph] = OrderedDict()
_cache_lock = threading.Lock()


def _search(space: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(space.shape[1])
    index.add(np.ascontiguousarray(space))
    sims = np.empty((queries.shape[0], k), dtype=np.float32)
    nbrs = np.empty((queries.shape[0], k), dtype=np.int64)
    for s in range(0, queries.shape[0], 8192):
        d, i = index.search(np.ascontiguousarray(queries[s : s + 8192]), k)
        sims[s : s + 8192], nbrs[s : s + 8192] = d, i
    return sims, nbrs


def pool_graph(pool: np.ndarray, k: int = 10) -> PoolGraph:
    """The (cached) kNN graph of the pool's embeddings; O(N·k) memory, O(N²·GRAPH_DIM) time."""
    pool = np.asarray(pool, dtype=np.float32)
    if pool.ndim != 2 or pool.shape[0] < 2:
        raise ValueError(f"the pool needs at least 2 rows of embeddings, got shape {pool.shape}")
    key = (_fingerprint(pool), k)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    n = pool.shape[0]
    sample = pool if n <= PCA_SAMPLE_ROWS else pool[:: -(-n // PCA_SAMPLE_ROWS)]
    zs = _normalise(sample)
    mean = zs.mean(axis=0)
    dim = min(GRAPH_DIM, zs.shape[1], zs.shape[0])
    if dim < zs.shape[1]:
        from sklearn.decomposition import PCA

        components = PCA(dim, svd_solver="randomized", random_state=0).fit(zs).components_
    else:
        components = np.eye(zs.shape[1], dtype=np.float32)
    components = np.asarray(components, dtype=np.float32)
    space = np.empty((n, components.shape[0]), dtype=np.float32)
    for s in range(0, n, 2048):  # in chunks: no normalised copy of a large pool
        space[s : s + 2048] = _normalise((_normalise(pool[s : s + 2048]) - mean) @ components.T)
    n = space.shape[0]
    kk = min(k + 1, n)
    sims, nbrs = _search(space, space, kk)
    rows = np.repeat(np.arange(n), kk)
    cols = nbrs.ravel()
    vals = np.maximum(sims.ravel(), 0.0)  # cosine similarity, negatives dropped
    keep = (cols >= 0) & (cols != rows)
    w = sp.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=(n, n))
    w = w.maximum(w.T).tocsr()  # symmetric
    deg = np.asarray(w.sum(axis=1)).ravel()
    inv = 1.0 / np.sqrt(np.maximum(deg, 1e-12))
    s_norm = sp.diags(inv) @ w @ sp.diags(inv)
    graph = PoolGraph(s_norm.tocsr().astype(np.float32), mean, components, space, k)
    with _cache_lock:
        _cache[key] = graph
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return graph


def spread_labels(
    graph: PoolGraph,
    x_labelled: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    alpha: float = 0.9,
    iterations: int = 30,
) -> np.ndarray:
    """Label spreading: ``(N, n_classes)`` class scores of every pool row (rows sum to 1 where
    any label reached them, else 0). Each labelled row seeds its nearest pool rows, weighted by
    similarity; classes are balanced (each class seeds the same total mass)."""
    q = graph.project(x_labelled)
    k = min(graph.k, graph.space.shape[0])
    sims, nbrs = _search(graph.space, q, k)
    sims = np.maximum(sims, 0.0) ** 3  # a duplicate of a pool row seeds mostly that row
    seeds = np.zeros((graph.space.shape[0], n_classes), dtype=np.float64)
    np.add.at(seeds, (nbrs.ravel(), np.repeat(y, k)), sims.ravel())
    mass = seeds.sum(axis=0)
    seeds[:, mass > 0] /= mass[mass > 0]
    f = seeds.copy()
    s = graph.S
    for _ in range(iterations):
        f = alpha * (s @ f) + (1.0 - alpha) * seeds
    total = f.sum(axis=1, keepdims=True)
    return np.divide(f, total, out=np.zeros_like(f), where=total > 0)


def _per_class(classes: np.ndarray, confidence: np.ndarray, keep: float, limit: int) -> np.ndarray:
    chosen: list[np.ndarray] = []
    for c in np.unique(classes):
        rows = np.flatnonzero(classes == c)
        m = min(limit, int(np.floor(keep * rows.size)))
        if m > 0:
            order = rows[np.argsort(-confidence[rows], kind="stable")]
            chosen.append(order[:m])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def pseudo_labels(
    mode: str,
    pool: np.ndarray,
    x_labelled: np.ndarray,
    y: np.ndarray,
    *,
    keep: float = 0.5,
    k: int = 10,
    predict: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Pseudo:
    """Pseudo-labels for rows of ``pool`` from the labelled rows ``(x_labelled, y)``.

    ``y`` holds class indices ``0..C-1`` of the classes present (the caller maps them).
    ``predict(pool) -> (N, C) probabilities`` is the plain probe's view of the pool.
    ``mode="spreading"`` diffuses the labels on the pool's kNN graph and keeps the rows where
    the spreading's class and the plain probe's agree (with many labels the probe is the better
    judge, with few the graph; their agreement is more often right than either: on MNIST-5k
    without the filter pseudo-labels cost 3 points at 400 labels, with it they gain 1);
    ``"self_training"`` takes the probe's own confident predictions. The most confident ``keep``
    fraction of each class's rows is returned.
    """
    if mode not in SEMI_MODES or mode == "none":
        raise ValueError(f"semi-supervised mode must be one of {SEMI_MODES[1:]}, got {mode!r}")
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep!r}")
    y = np.asarray(y, dtype=np.int64)
    n_classes = int(y.max()) + 1 if y.size else 0
    n = len(pool)
    if n > MAX_GRAPH_ROWS:  # an evenly strided subset; its rows are mapped back at the end
        subset = np.arange(0, n, -(-n // MAX_GRAPH_ROWS))
        found = pseudo_labels(
            mode, np.asarray(pool[subset]), x_labelled, y, keep=keep, k=k, predict=predict
        )
        return Pseudo(subset[found.rows], found.classes, found.confidence)
    if mode == "spreading":
        scores = spread_labels(pool_graph(pool, k), x_labelled, y, n_classes)
    else:
        if predict is None:
            raise ValueError("self_training needs the probe's predict function")
        scores = np.asarray(predict(pool), dtype=np.float64)
    classes = np.argmax(scores, axis=1).astype(np.int64)
    confidence = scores[np.arange(len(classes)), classes]
    reached = confidence > 0
    if mode == "spreading" and predict is not None:
        reached &= np.argmax(predict(pool), axis=1) == classes
    confidence = np.where(reached, confidence, 0.0)
    present = max(1, int(np.unique(classes[reached]).size))
    limit = min(MAX_PSEUDO_PER_CLASS, max(1, MAX_PSEUDO_ROWS // present))
    rows = _per_class(np.where(reached, classes, -1), confidence, keep, limit)
    rows = rows[reached[rows]]
    return Pseudo(rows, classes[rows], confidence[rows])
