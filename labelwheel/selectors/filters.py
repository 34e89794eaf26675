"""Funnel filters: what to drop or flag before ranking.

* :func:`exact_duplicates`: byte-identical items (content hash).
* :func:`near_duplicate_groups` / :func:`near_duplicate_mask`: items whose embeddings are closer
  than a threshold; one representative per group is kept.
* :func:`anomaly_scores`: how far an item lies from its nearest neighbours (out-of-distribution).
* :func:`information_bits`: the model's predictive entropy in bits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from labelwheel.selectors._space import as_f32, faiss_threads
from labelwheel.selectors._validation import as_embeddings, as_probabilities, check_positive_int

#: Anomaly scores search neighbours among at most this many reference rows.
ANOMALY_REFERENCE_MAX = 100_000


def _digest(item: Any) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    if isinstance(item, bytes | bytearray | memoryview):
        h.update(b"b:")
        h.update(bytes(item))
    elif isinstance(item, str):
        h.update(b"s:")
        h.update(item.encode("utf-8"))
    else:
        arr = np.asarray(item)
        if arr.dtype.kind == "O":
            raise ValueError(
                "exact_duplicates hashes bytes, str or numeric arrays; got an object array "
                f"({type(item).__name__}); pass raw file bytes or numpy arrays"
            )
        arr = np.ascontiguousarray(arr)
        h.update(f"a:{arr.dtype.str}:{arr.shape}:".encode())
        h.update(arr.tobytes())
    return h.digest()


def exact_duplicates(items: Iterable[Any]) -> list[NDArray[np.int64]]:
    """Groups of byte-identical items, by content hash (BLAKE2b).

    ``items``: an iterable of ``bytes`` (e.g. image files), ``str``, or numpy arrays (an (N, ...)
    array is taken row by row; dtype and shape are part of the content). Returns the groups
    with two or more members as ascending int64 index arrays, ordered by their first index;
    keep ``group[0]`` and skip the rest. O(total bytes) time, O(N) memory.
    """
    seen: dict[bytes, list[int]] = {}
    for i, item in enumerate(items):
        seen.setdefault(_digest(item), []).append(i)
    groups = [np.asarray(v, dtype=np.int64) for v in seen.values() if len(v) > 1]
    groups.sort(key=lambda g: int(g[0]))
    return groups


def default_near_duplicate_threshold(embeddings: Any, seed: int = 0) -> float:
    """5% of the median distance between random pairs of rows (the data's own scale)."""
    x = as_embeddings(embeddings)
    n = x.shape[0]
    if n < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    m = min(4096, n * (n - 1) // 2)
    a = rng.integers(0, n, m)
    b = (a + rng.integers(1, n, m)) % n
    diff = np.asarray(x[a], dtype=np.float64) - np.asarray(x[b], dtype=np.float64)
    return 0.05 * float(np.median(np.sqrt(np.einsum("ij,ij->i", diff, diff))))


def near_duplicate_groups(
    embeddings: Any, threshold: float | None = None
) -> list[NDArray[np.int64]]:
    """Groups of samples whose embeddings lie within ``threshold`` (Euclidean) of a representative.

    Leader grouping in index order: the lowest-index sample not yet grouped becomes a
    representative and takes every ungrouped sample within ``threshold`` of it, so every member
    is provably close to ``group[0]`` (no long single-linkage chains). Returns the groups with
    two or more members as ascending int64 arrays whose first element is the representative to
    keep. ``threshold=None`` uses :func:`default_near_duplicate_threshold` (5% of the median
    pairwise distance). Cost: an exact faiss range search, O(N²·d) time in chunks, memory
    O(N + number of close pairs).
    """
    x = as_embeddings(embeddings)
    if threshold is None:
        threshold = default_near_duplicate_threshold(x)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.number):
        raise ValueError(f"threshold must be a distance >= 0, got {threshold!r}")
    threshold = float(threshold)
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite distance >= 0, got {threshold}")
    n = x.shape[0]
    if n < 2:
        return []
    x32 = as_f32(x)
    index = faiss.IndexFlatL2(x32.shape[1])
    index.add(x32)
    # strict "closer than": squared radius with a tiny tolerance for float32 rounding of zeros
    r2 = threshold * threshold if threshold > 0 else 1e-12
    neigh: dict[int, NDArray[np.int64]] = {}
    with faiss_threads():
        for s in range(0, n, 8192):
            lims, _, ids = index.range_search(x32[s : s + 8192], r2)
            for q in range(lims.size - 1):
                nb = ids[lims[q] : lims[q + 1]]
                if nb.size > 1:
                    neigh[s + q] = np.asarray(nb, dtype=np.int64)
    grouped = np.zeros(n, dtype=bool)
    groups: list[NDArray[np.int64]] = []
    for i in sorted(neigh):
        if grouped[i]:
            continue
        nb = neigh[i]
        members = np.unique(np.concatenate([[i], nb[~grouped[nb]]]))
        grouped[members] = True
        if members.size > 1:
            groups.append(members)
    return groups


def near_duplicate_mask(embeddings: Any, threshold: float | None = None) -> NDArray[np.bool_]:
    """Boolean mask (N,): True for samples to skip as near-duplicates of a kept representative."""
    x = as_embeddings(embeddings)
    mask = np.zeros(x.shape[0], dtype=bool)
    for g in near_duplicate_groups(x, threshold):
        mask[g[1:]] = True
    return mask


def anomaly_scores(embeddings: Any, k: int = 10, *, seed: int = 0) -> NDArray[np.float64]:
    """Out-of-distribution score per sample: mean Euclidean distance to its k nearest neighbours.

    Higher = more isolated in feature space (an outlier, a corrupt or off-topic image, or a rare
    but valid case: look before dropping). Neighbours are searched exactly (faiss) among all
    rows, or among a seeded sample of :data:`ANOMALY_REFERENCE_MAX` rows for bigger pools, so
    cost is O(N·min(N, 10⁵)·d) time and O(N·k) memory. Reference: Ramaswamy, Rastogi & Shim,
    "Efficient algorithms for mining outliers from large data sets", SIGMOD 2000.
    """
    x = as_embeddings(embeddings)
    k = check_positive_int("k", k)
    n = x.shape[0]
    if n < 2:
        return np.zeros(n, dtype=np.float64)
    x32 = as_f32(x)
    if n > ANOMALY_REFERENCE_MAX:
        ref_idx = np.sort(np.random.default_rng(seed).choice(n, ANOMALY_REFERENCE_MAX, False))
    else:
        ref_idx = np.arange(n)
    index = faiss.IndexFlatL2(x32.shape[1])
    index.add(np.ascontiguousarray(x32[ref_idx]))
    kk = min(k + 1, ref_idx.size)
    cols = max(1, min(k, kk - 1))
    out = np.empty(n, dtype=np.float64)
    with faiss_threads():
        for s in range(0, n, 8192):
            dist, ids = index.search(np.ascontiguousarray(x32[s : s + 8192]), kk)
            rows = np.arange(s, s + dist.shape[0])
            self_hit = ref_idx[np.maximum(ids, 0)] == rows[:, None]
            d = np.sqrt(np.maximum(dist.astype(np.float64), 0.0))
            d[self_hit | (ids < 0)] = np.inf  # a row is not its own neighbour
            d.sort(axis=1)
            out[s : s + dist.shape[0]] = d[:, :cols].mean(axis=1)
    return out


def information_bits(probabilities: Any) -> NDArray[np.float64]:
    """The model's predictive entropy per sample, in bits: ``−Σ_c p_c log2 p_c``.

    What it means: how many yes/no questions, on average, the model still needs to pin down
    the label *if its probabilities are right*: 0 bits = certain; 1 bit = a coin flip between
    two classes; log2(C) bits = no idea among C classes. It is the uncertainty a label would
    remove *from the model's point of view*.

    What it does not mean: it is not the information the label adds to the model's weights
    (that is BALD's mutual information, which needs several passes), it is only as good as
    the model's calibration (an over-confident model reports few bits on a sample it gets
    wrong), and it does not measure how representative or useful the sample is for the rest of
    the pool. ``probabilities``: (N, C), rows summing to 1.
    """
    p = as_probabilities(probabilities, None)
    logp = np.log2(np.clip(p, 1e-300, 1.0))
    return np.asarray(np.maximum(-(p * logp).sum(axis=1), 0.0), dtype=np.float64)
