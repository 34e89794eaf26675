"""Diversity / representativeness strategies: they need only the embeddings.

These are the cold-start choices: they pick samples that cover the pool or represent its dense
regions, so they work before any model exists. All of them are deterministic per seed.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
from numpy.typing import NDArray

from labelwheel.selectors._registry import CoreResult, strategy
from labelwheel.selectors._space import (
    F32,
    as_f32,
    cluster_members,
    kmeans_labels,
    min_sqdist_update,
    random_projection,
    row_sqnorms,
    single_thread,
    working_space,
)
from labelwheel.selectors._validation import (
    Pool,
    check_fraction,
    check_positive_int,
)
from labelwheel.selectors.covering import outliers, probcover, probcover_delta, unit_rows

__all__ = ["kcenter", "kcenter_greedy", "kmeans", "probcover", "probcover_delta", "typiclust"]

#: Above this N·n·d the k-center greedy switches to its approximate mode (see :func:`kcenter`).
KCENTER_EXACT_MAX_WORK = 2e10


# --------------------------------------------------------------------------------------------
# k-center greedy (core-set)
# --------------------------------------------------------------------------------------------


def kcenter_greedy(
    x: NDArray[np.floating],
    n: int,
    labeled: NDArray[np.bool_],
    seed: int,
    *,
    min_batch: int = 1,
    candidates: int = 1024,
    blocked: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Greedy k-center on the rows of ``x``: returns (picks, distance of each pick at pick time).

    Keeps one float per row (squared distance to the nearest centre). Picks are made in
    batches: the top ``candidates`` rows by that distance are updated exactly after every pick,
    and a pick is provably the exact greedy choice while its distance is at least the largest
    distance outside the candidate set; only then (or after ``min_batch`` picks when
    ``min_batch > 1``, the approximation) is the whole pool updated in one chunked matrix
    product. With ``min_batch=1`` the result equals the textbook greedy algorithm.
    ``blocked`` rows are never picked (nor centres); they are not counted as uncovered.
    """
    n_rows = x.shape[0]
    sq = row_sqnorms(x)
    mind = np.full(n_rows, np.inf, dtype=x.dtype if x.dtype == np.float64 else np.float32)
    rng = np.random.default_rng(seed)
    picks: list[int] = []
    utils: list[float] = []
    lab_idx = np.flatnonzero(labeled)
    off = labeled if blocked is None else labeled | blocked
    if lab_idx.size:
        for s in range(0, lab_idx.size, 4096):
            min_sqdist_update(x, sq, x[lab_idx[s : s + 4096]], mind)
    else:
        first = int(rng.choice(np.flatnonzero(~off)))
        min_sqdist_update(x, sq, x[first : first + 1], mind)
        mind[first] = -np.inf
        mind[off] = -np.inf
        rest = mind[np.isfinite(mind)]
        picks.append(first)
        utils.append(math.sqrt(max(0.0, float(rest.max()))) if rest.size else 0.0)
    mind[off] = -np.inf
    while len(picks) < n:
        remaining = n - len(picks)
        avail = n_rows - int(np.count_nonzero(off)) - len(picks)
        if avail <= 0:
            break
        m = min(avail, max(candidates, 4 * min_batch))
        if m < avail:
            part = np.argpartition(mind, n_rows - m - 1)
            cand = np.sort(part[n_rows - m :])
            tau = float(mind[part[n_rows - m - 1]])
        else:
            cand = np.flatnonzero(mind > -np.inf)
            tau = -np.inf
        cm = mind[cand].astype(np.float64)
        xc = np.asarray(x[cand], dtype=np.float64)
        csq = sq[cand]
        batch: list[int] = []
        with single_thread():
            while len(batch) < remaining:
                j = int(np.argmax(cm))
                best = cm[j]
                if best == -np.inf or (best < tau and len(batch) >= min_batch):
                    break
                g = int(cand[j])
                batch.append(g)
                picks.append(g)
                utils.append(math.sqrt(max(0.0, best)) if np.isfinite(best) else 0.0)
                cm[j] = -np.inf
                d2 = csq - 2.0 * (xc @ xc[j]) + csq[j]
                np.maximum(d2, 0.0, out=d2)
                np.minimum(cm, d2, out=cm)
        if len(picks) >= n:
            break
        b = np.asarray(batch, dtype=np.int64)
        min_sqdist_update(x, sq, x[b], mind)
        mind[b] = -np.inf
    return np.asarray(picks[:n], dtype=np.int64), np.asarray(utils[:n], dtype=np.float64)


@strategy("kcenter", "embeddings")
def kcenter(
    pool: Pool,
    n: int,
    *,
    exact: bool | None = None,
    projection_dim: int = 32,
    sample_size: int | None = None,
    normalize: bool = True,
    outlier_fraction: float = 0.2,
) -> CoreResult:
    """Greedy k-center (core-set): favours the sample farthest from everything labelled or picked.

    Each pick is the unlabelled sample whose Euclidean distance to its nearest labelled/already
    picked sample is largest, so the batch covers the pool with the smallest radius (a
    2-approximation of the k-center problem). With no labels the first pick is drawn at random
    (seeded). Utility: that distance at pick time (non-increasing); the first pick of a cold
    start reports the covering radius after it.

    Robust on real features (:mod:`.covering`): distances are between L2-normalised rows
    (``normalize``), and the ``outlier_fraction`` of unlabelled samples with the largest
    distance to their 10th nearest neighbour are never picked (plain k-center spends its
    budget on them: on MNIST-5k embeddings it ended 15 points below random at 400 labels; with
    both, 0.4–1.1 points above at 0.1–0.3 outliers, 3 seeds).

    Cost: exact greedy is O(N·n·d) time, O(N) extra memory (one distance per sample), done in
    batched matrix products. ``exact=None`` (default) runs it exactly while N·n·d ≤ 2·10¹⁰;
    above that the approximate mode (``exact=False`` forces it, ``exact=True`` forbids it):

    * candidates are a seeded uniform sample of ``sample_size`` unlabelled samples (default
      ``max(250_000, 20·n)``; all of them when the pool is smaller), labelled samples all count;
    * distances are computed in a ``projection_dim``-dimensional Gaussian random projection
      (kept within ≈ 1/√dim relative error);
    * the pool is refreshed every ≈ n/50 picks, choosing in between among the 1024+ farthest
      candidates.

    That is O(sample·n·dim + N·d·dim) time and O(sample·dim) extra memory: 1,000,000 × 512
    picking 10,000 takes well under a minute on two cores. Reference: Sener & Savarese, "Active
    learning for convolutional neural networks: a core-set approach", ICLR 2018.
    """
    x = pool.need_embeddings("kcenter")
    projection_dim = check_positive_int("projection_dim", projection_dim)
    if sample_size is not None:
        sample_size = check_positive_int("sample_size", sample_size)
    nn, d = x.shape
    if exact is None:
        exact = float(nn) * n * d <= KCENTER_EXACT_MAX_WORK
    outlier_fraction = check_fraction("outlier_fraction", outlier_fraction, 0.0, 0.9)
    if exact:
        unit = unit_rows(x) if normalize else as_f32(x)
        dens = random_projection(unit, 64, pool.seed) if d > 64 else unit
        if normalize and d > 64:
            dens = unit_rows(dens)
        blocked = outliers(dens, ~pool.labeled, outlier_fraction, n, pool.seed)
        work = np.asarray(unit, dtype=np.float64) if nn * d <= 20_000_000 else unit
        return kcenter_greedy(work, n, pool.labeled, pool.seed, blocked=blocked)
    unl = pool.unlabeled_idx
    m = max(250_000, 20 * n) if sample_size is None else max(sample_size, n)
    if m < unl.size:
        keep = np.sort(
            np.concatenate(
                [
                    np.flatnonzero(pool.labeled),
                    pool.rng().choice(unl, size=m, replace=False),
                ]
            )
        )
        lab = pool.labeled[keep]
        rows: NDArray[np.int64] | None = keep
    else:
        keep, lab, rows = np.arange(nn), pool.labeled, None
    if d > projection_dim:
        work32 = random_projection(x, projection_dim, pool.seed, rows)
    else:
        work32 = as_f32(x if rows is None else x[rows])
    if normalize:
        work32 = unit_rows(work32)
    blocked = outliers(work32, ~lab, outlier_fraction, n, pool.seed)
    picks, utils = kcenter_greedy(
        work32, n, lab, pool.seed, min_batch=max(1, math.ceil(n / 50)), blocked=blocked
    )
    return keep[picks].astype(np.int64), utils


# --------------------------------------------------------------------------------------------
# clustering helpers shared by kmeans / typiclust
# --------------------------------------------------------------------------------------------


def _clusters(
    x: NDArray[np.floating], k: int, seed: int, project: bool | None
) -> tuple[F32, NDArray[np.int64], NDArray[np.float32], int]:
    space, _ = working_space(x, seed, project=project)
    labels, d2 = kmeans_labels(space, k, seed)
    return space, labels, d2, int(labels.max()) + 1 if labels.size else 0


@strategy("kmeans", "embeddings")
def kmeans(
    pool: Pool,
    n: int,
    *,
    n_clusters: int | None = None,
    project: bool | None = None,
) -> CoreResult:
    """k-means representatives: favours the sample nearest each cluster centroid, uncovered first.

    The pool is split into ``k = n_clusters`` clusters (default ``n + min(#labelled,
    max(n, 1000))``, so labelled samples occupy clusters of their own and the clusters get finer
    as labels grow; with ``n + min(#labelled, n)`` it ended 3 points below random at 400 labels
    on MNIST-5k, picking the centres of a few coarse clusters again and again: now 0.2 above,
    3 seeds). Each cluster has weight
    ``size / (1 + labelled in it + already picked from it)``; picks go, one at a time, to the
    cluster of highest weight, taking its unlabelled sample nearest to the centroid. Clusters
    without labels therefore come first, big ones before small ones. Utility: that weight as a
    fraction of the pool.

    Cost: faiss k-means, O(N·k·d·iters) on ≤ 256 points per centroid plus one assignment pass;
    above N·k·d ≈ 2·10¹⁰ a two-level k-means (√k coarse cells, then fine clusters per cell)
    and, when N·d > 5·10⁷, a 64-d random projection (``project`` forces it on/off). Extra
    memory O(N) (plus the projection, N·64 floats). Reference: the clustering baseline of
    Zhdanov, "Diverse mini-batch active learning", 2019 (without its uncertainty weights).
    """
    x = pool.need_embeddings("kmeans")
    n_lab = int(np.count_nonzero(pool.labeled))
    if n_clusters is None:
        k = n + min(n_lab, max(n, 1000))
    else:
        k = check_positive_int("n_clusters", n_clusters)
    _, labels, d2, k = _clusters(x, min(k, pool.n_samples), pool.seed, project)
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    labcnt = np.bincount(labels[pool.labeled], minlength=k).astype(np.float64)
    unl = pool.unlabeled_idx
    ul = labels[unl]
    order = unl[np.lexsort((unl, d2[unl], ul))]  # by cluster, then distance to centroid
    counts = np.bincount(ul, minlength=k)
    starts = np.concatenate([[0], np.cumsum(counts)])
    heap = [(-sizes[j] / (1.0 + labcnt[j]), j) for j in range(k) if counts[j] > 0]
    heapq.heapify(heap)
    taken = np.zeros(k, dtype=np.int64)
    picks: list[int] = []
    utils: list[float] = []
    total = float(pool.n_samples)
    while len(picks) < n and heap:
        negw, j = heapq.heappop(heap)
        picks.append(int(order[starts[j] + taken[j]]))
        utils.append(-negw / total)
        taken[j] += 1
        if taken[j] < counts[j]:
            w = sizes[j] / (1.0 + labcnt[j] + taken[j])
            heapq.heappush(heap, (-w, j))
    return np.asarray(picks, dtype=np.int64), np.asarray(utils, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# TypiClust
# --------------------------------------------------------------------------------------------


def typicality(
    x: NDArray[np.floating], k: int = 20, *, reference: NDArray[np.floating] | None = None
) -> NDArray[np.float64]:
    """Typicality ``1 / mean distance to the k nearest neighbours`` of each row of ``x``.

    Neighbours are searched in ``reference`` (default: ``x`` itself, excluding each row's own
    zero distance). High typicality = the row sits in a dense region. Cost O(|x|·|ref|·d).
    """
    x64 = np.asarray(x, dtype=np.float64)
    self_ref = reference is None
    ref = x64 if reference is None else np.asarray(reference, dtype=np.float64)
    if ref.shape[0] == 0 or (self_ref and ref.shape[0] == 1):
        return np.ones(x64.shape[0], dtype=np.float64)
    xs = np.einsum("ij,ij->i", x64, x64)
    rs = np.einsum("ij,ij->i", ref, ref)
    d2 = xs[:, None] - 2.0 * (x64 @ ref.T) + rs[None, :]
    np.maximum(d2, 0.0, out=d2)
    if self_ref:
        np.fill_diagonal(d2, np.inf)
    kk = max(1, min(k, ref.shape[0] - (1 if self_ref else 0)))
    near = np.partition(d2, kk - 1, axis=1)[:, :kk]
    mean = np.sqrt(near).mean(axis=1)
    return 1.0 / (mean + 1e-12)


def _typical_order(
    space: F32,
    members: NDArray[np.int64],
    candidates: NDArray[np.int64],
    k: int,
    cap: int,
    rng: np.random.Generator,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Candidates of one cluster sorted by typicality within it (a bounded reference sample)."""
    if members.size <= cap:
        ref_idx = members
    else:
        ref_idx = np.sort(rng.choice(members, size=cap, replace=False))
    ref = space[ref_idx]
    cand = (
        candidates
        if candidates.size <= 4 * cap
        else np.sort(rng.choice(candidates, size=4 * cap, replace=False))
    )
    xs = np.asarray(space[cand], dtype=np.float64)
    r64 = np.asarray(ref, dtype=np.float64)
    d2 = (
        np.einsum("ij,ij->i", xs, xs)[:, None]
        - 2.0 * (xs @ r64.T)
        + np.einsum("ij,ij->i", r64, r64)[None, :]
    )
    np.maximum(d2, 0.0, out=d2)
    # exclude each candidate's own entry in the reference set
    pos = np.searchsorted(ref_idx, cand)
    hit = (pos < ref_idx.size) & (ref_idx[np.minimum(pos, ref_idx.size - 1)] == cand)
    d2[np.flatnonzero(hit), pos[hit]] = np.inf
    avail = ref_idx.size - 1 if hit.any() else ref_idx.size
    if avail < 1:
        typ = np.ones(cand.size, dtype=np.float64)
    else:
        kk = max(1, min(k, avail))
        near = np.partition(d2, kk - 1, axis=1)[:, :kk]
        typ = 1.0 / (np.sqrt(near).mean(axis=1) + 1e-12)
    o = np.lexsort((cand, -typ))
    return cand[o], typ[o]


@strategy("typiclust", "embeddings")
def typiclust(
    pool: Pool,
    n: int,
    *,
    n_neighbors: int = 20,
    min_cluster_size: int = 5,
    max_clusters: int | None = None,
    project: bool | None = None,
) -> CoreResult:
    """TypiClust: favours the most *typical* sample of each cluster that holds no labels yet.

    The pool is clustered into ``k = #labelled + n`` clusters (capped by ``max_clusters``);
    picks go, one per cluster, to the clusters with the fewest labelled/picked samples,
    largest first (clusters smaller than ``min_cluster_size`` last), and take the unlabelled
    member with the highest typicality ``1 / mean distance to its n_neighbors nearest
    neighbours within the cluster``. The cold-start choice: with very few labels it beats
    uncertainty sampling, which needs a model. Utility: the pick's typicality (the order of
    picks is by cluster coverage and size).

    Cost: k-means as in :func:`kmeans` (faiss, two-level and 64-d projection at scale), plus
    typicality for the picked clusters only, each on a reference sample of ≤ 1000 members:
    O(n·1000·d). Extra memory O(N) (+ the projection). Reference: Hacohen, Dekel & Weinshall,
    "Active learning on a budget: opposite strategies suit high and low budgets", ICML 2022.
    """
    x = pool.need_embeddings("typiclust")
    n_neighbors = check_positive_int("n_neighbors", n_neighbors)
    min_cluster_size = check_positive_int("min_cluster_size", min_cluster_size)
    n_lab = int(np.count_nonzero(pool.labeled))
    k = n_lab + n
    if max_clusters is not None:
        k = min(k, check_positive_int("max_clusters", max_clusters))
    space, labels, _, k = _clusters(x, min(k, pool.n_samples), pool.seed, project)
    order, bounds = cluster_members(labels, k)
    sizes = np.diff(bounds)
    covered = np.bincount(labels[pool.labeled], minlength=k)
    unl_mask = ~pool.labeled
    heap = [
        (int(sizes[j] < min_cluster_size), int(covered[j]), -int(sizes[j]), j) for j in range(k)
    ]
    heapq.heapify(heap)
    rng = pool.rng()
    cache: dict[int, tuple[NDArray[np.int64], NDArray[np.float64]]] = {}
    taken: dict[int, int] = {}
    picks: list[int] = []
    utils: list[float] = []
    with single_thread():
        while len(picks) < n and heap:
            small, cov, negsize, j = heapq.heappop(heap)
            if j not in cache:
                members = order[bounds[j] : bounds[j + 1]]
                cands = members[unl_mask[members]]
                if cands.size == 0:
                    continue
                cache[j] = _typical_order(space, members, cands, n_neighbors, 1000, rng)
                taken[j] = 0
            cands_sorted, typ = cache[j]
            t = taken[j]
            if t >= cands_sorted.size:
                continue
            picks.append(int(cands_sorted[t]))
            utils.append(float(typ[t]))
            taken[j] = t + 1
            if t + 1 < cands_sorted.size:
                heapq.heappush(heap, (small, cov + 1, negsize, j))
    if len(picks) < n:  # only when candidates were subsampled in huge clusters
        rest = np.setdiff1d(np.flatnonzero(unl_mask), np.asarray(picks, dtype=np.int64))
        extra = rng.permutation(rest)[: n - len(picks)]
        picks.extend(int(i) for i in extra)
        utils.extend([0.0] * extra.size)
    return np.asarray(picks, dtype=np.int64), np.asarray(utils, dtype=np.float64)
