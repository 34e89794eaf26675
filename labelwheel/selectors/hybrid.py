"""Hybrid strategies: they combine the model's uncertainty with the geometry of the pool.

:func:`badge`, :func:`cluster_margin`, :func:`ranked_batch` and :func:`adaptive` need both the
embeddings and (except ``adaptive`` in its cold-start phase) the class probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from labelwheel.selectors._registry import REGISTRY, CoreResult, strategy, top_n
from labelwheel.selectors._space import min_sqdist_update, row_sqnorms, single_thread
from labelwheel.selectors._validation import (
    Pool,
    check_choice,
    check_fraction,
    check_positive_int,
)
from labelwheel.selectors.diversity import _clusters
from labelwheel.selectors.uncertainty import (
    entropy_uncertainty,
    least_confidence_uncertainty,
    margin_uncertainty,
    top2_margin,
)

# --------------------------------------------------------------------------------------------
# BADGE
# --------------------------------------------------------------------------------------------


def gradient_factors(
    probabilities: NDArray[np.float64],
) -> NDArray[np.float64]:
    """``p − e_ŷ`` per sample: the class factor of BADGE's gradient embedding (ŷ = argmax p)."""
    g = np.array(probabilities, dtype=np.float64, copy=True)
    g[np.arange(g.shape[0]), g.argmax(axis=1)] -= 1.0
    return g


def gradient_embedding(
    probabilities: NDArray[np.float64], embeddings: NDArray[np.floating]
) -> NDArray[np.float64]:
    """The explicit (N, C·d) BADGE gradient embedding ``(p − e_ŷ) ⊗ x``.

    Only for small pools and tests: :func:`badge` never builds it. Row i is the gradient of the
    cross-entropy loss w.r.t. the last linear layer's weights if ŷ_i were the true label.
    """
    g = gradient_factors(probabilities)
    x = np.asarray(embeddings, dtype=np.float64)
    return (g[:, :, None] * x[:, None, :]).reshape(x.shape[0], -1)


@strategy("badge", "both")
def badge(pool: Pool, n: int) -> CoreResult:
    """BADGE: k-means++ seeding on gradient embeddings; favours uncertain *and* diverse samples.

    The gradient embedding ``g_i = (p_i − e_ŷi) ⊗ x_i`` is large where the model is unsure and
    points in different directions for different regions/classes. It is never built: its
    squared norm factorises as ``||p_i − e_ŷi||²·||x_i||²`` and inner products as
    ``(g_i·g_j)(x_i·x_j)``, so each k-means++ step costs one pass over the embeddings. First
    pick: the largest gradient norm; then each pick is drawn with probability ∝ its squared
    distance to the nearest pick (seeded). Utility: that squared distance at pick time (the
    first pick: its squared norm).

    Cost O(n·N·(d + C)) time, O(N) extra memory (vs O(N·C·d) for the explicit embedding).
    Reference: Ash et al., "Deep batch active learning by diverse, uncertain gradient lower
    bounds", ICLR 2020.
    """
    x = pool.need_embeddings("badge")
    p = pool.need_probabilities("badge")
    g = gradient_factors(p)
    xsq = row_sqnorms(x)
    gsq = np.einsum("ij,ij->i", g, g)
    norm2 = gsq * xsq
    unl = pool.unlabeled_idx
    rng = pool.rng()
    mind = np.full(unl.size, np.inf)
    alive = np.ones(unl.size, dtype=bool)
    picks: list[int] = []
    utils: list[float] = []
    gu = g[unl]
    nu = norm2[unl]
    for step in range(n):
        if step == 0:
            j = int(np.argmax(nu))
            util = float(nu[j])
        else:
            w = np.where(alive, mind, 0.0)
            total = float(w.sum())
            if total <= 0.0 or not math.isfinite(total):
                j = int(rng.choice(np.flatnonzero(alive)))
            else:
                cum = np.cumsum(w)
                j = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
                j = min(j, unl.size - 1)
                while not alive[j]:  # only on float ties at the boundary
                    j -= 1
            util = float(w[j])
        c = int(unl[j])
        picks.append(c)
        utils.append(util)
        alive[j] = False
        if step + 1 == n:
            break
        xdot = np.asarray(x @ x[c], dtype=np.float64)[unl]
        d2 = nu + norm2[c] - 2.0 * (gu @ g[c]) * xdot
        np.maximum(d2, 0.0, out=d2)
        np.minimum(mind, d2, out=mind)
    return np.asarray(picks, dtype=np.int64), np.asarray(utils, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Cluster-Margin
# --------------------------------------------------------------------------------------------


@strategy("cluster_margin", "both")
def cluster_margin(
    pool: Pool,
    n: int,
    *,
    candidate_factor: float = 10.0,
    n_clusters: int | None = None,
    cluster_labels: Any = None,
    project: bool | None = None,
) -> CoreResult:
    """Cluster-Margin: favours low-margin samples, spread round-robin over clusters of the pool.

    Takes the ``candidate_factor · n`` unlabelled samples with the smallest top-2 margin, groups
    them by their cluster in the pool, sorts those clusters by how many candidates they hold
    (fewest first) and picks round-robin, one random (seeded) candidate per cluster per round,
    so no region of uncertainty fills the batch. The pool clustering (k-means, ``n_clusters``,
    default ``max(2, n)``) can be computed once and passed back as ``cluster_labels`` (N,) ints
    to save time across rounds, as the paper does with its one-off HAC. Utility:
    ``1 − margin`` of the pick.

    Cost: O(N·C) for margins plus the k-means of :func:`kmeans` (faiss; two-level and 64-d
    projection at scale), O(N) extra memory. Reference: Citovsky et al., "Batch active
    learning at scale", NeurIPS 2021.
    """
    x = pool.need_embeddings("cluster_margin")
    p = pool.need_probabilities("cluster_margin")
    factor = check_fraction("candidate_factor", candidate_factor, 1.0, float("inf"))
    unl = pool.unlabeled_idx
    if cluster_labels is None:
        k = max(2, n) if n_clusters is None else check_positive_int("n_clusters", n_clusters)
        _, labels, _, _ = _clusters(x, min(k, pool.n_samples), pool.seed, project)
    else:
        labels = np.asarray(cluster_labels)
        if labels.shape != (pool.n_samples,) or labels.dtype.kind not in "iu":
            raise ValueError(
                f"cluster_labels must be an int array of shape ({pool.n_samples},), one cluster "
                f"id per sample; got dtype {labels.dtype} and shape {labels.shape}"
            )
        labels = labels.astype(np.int64)
    unc = 1.0 - top2_margin(p)
    m = min(unl.size, max(n, math.ceil(factor * n)))
    cand, cand_u = top_n(unc[unl], unl, m)
    rng = pool.rng()
    cl = labels[cand]
    uniq, inverse, counts = np.unique(cl, return_inverse=True, return_counts=True)
    groups: list[list[int]] = [[] for _ in uniq]
    for pos in rng.permutation(cand.size):
        groups[int(inverse[pos])].append(int(pos))
    cluster_order = np.lexsort((uniq, counts))  # fewest candidates first
    picks: list[int] = []
    utils: list[float] = []
    depth = 0
    while len(picks) < n:
        for gi in cluster_order:
            grp = groups[int(gi)]
            if depth < len(grp):
                pos = grp[depth]
                picks.append(int(cand[pos]))
                utils.append(float(cand_u[pos]))
                if len(picks) == n:
                    break
        depth += 1
    return np.asarray(picks, dtype=np.int64), np.asarray(utils, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Ranked batch (Cardoso et al.)
# --------------------------------------------------------------------------------------------

_RB_MEASURES = ("least_confidence", "margin", "entropy")


def _rb_uncertainty(p: NDArray[np.float64], measure: str) -> NDArray[np.float64]:
    if measure == "least_confidence":
        return least_confidence_uncertainty(p)
    if measure == "margin":
        return margin_uncertainty(p)
    return entropy_uncertainty(p) / math.log(p.shape[1])


def _mean_distances(
    x: NDArray[np.floating], rows: NDArray[np.int64], ref: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Mean Euclidean distance from each of ``x[rows]`` to ``x[ref]``, in chunks."""
    xr = np.asarray(x[ref], dtype=np.float64)
    rsq = np.einsum("ij,ij->i", xr, xr)
    out = np.empty(rows.size, dtype=np.float64)
    step = max(1, 4_000_000 // max(1, ref.size))
    for s in range(0, rows.size, step):
        blk = np.asarray(x[rows[s : s + step]], dtype=np.float64)
        d2 = np.einsum("ij,ij->i", blk, blk)[:, None] - 2.0 * (blk @ xr.T) + rsq[None, :]
        out[s : s + step] = np.sqrt(np.maximum(d2, 0.0)).mean(axis=1)
    return out


@strategy("ranked_batch", "both")
def ranked_batch(
    pool: Pool,
    n: int,
    *,
    measure: str = "least_confidence",
    cold_start_sample: int = 20_000,
) -> CoreResult:
    """Ranked batch-mode sampling: favours uncertain samples far from labelled and picked ones.

    Each pick maximises ``α·(1 − 1/(1 + d)) + (1 − α)·u`` where ``d`` is the Euclidean distance
    to the nearest labelled or already picked sample, ``u`` the uncertainty (``measure``:
    least_confidence as in modAL, or margin, or entropy normalised to [0, 1]), and
    ``α = |U| / (|U| + |D|)`` with U the unlabelled samples not yet picked and D the labelled
    plus picked ones, so diversity dominates while labels are few. With no labels the first
    pick is the sample of least mean distance to the pool (exact up to ``cold_start_sample``
    unlabelled samples, else against a seeded sample of that size). Utility: the score at pick
    time (the cold-start pick: ``1 / (1 + mean distance)``). Same semantics as modAL's
    ``uncertainty_batch_sampling``.

    Cost: O(N·d) per pick with an incremental nearest-distance update (modAL recomputes all
    distances to the growing labelled set every pick); O(N) extra memory. Reference: Cardoso
    et al., "Ranked batch-mode active learning", Information Sciences 2017.
    """
    x = pool.need_embeddings("ranked_batch")
    p = pool.need_probabilities("ranked_batch")
    measure = check_choice("measure", measure, _RB_MEASURES)
    cold_start_sample = check_positive_int("cold_start_sample", cold_start_sample)
    unl = pool.unlabeled_idx
    u = _rb_uncertainty(p[unl], measure)
    sq = row_sqnorms(x)
    usq = sq[unl]
    mind2 = np.full(unl.size, np.inf, dtype=np.float64)
    lab = np.flatnonzero(pool.labeled)
    for s in range(0, lab.size, 2048):
        min_sqdist_update(x, sq, x[lab[s : s + 2048]], mind2, rows=unl)
    alive = np.ones(unl.size, dtype=bool)
    picks: list[int] = []
    utils: list[float] = []
    n_lab = lab.size
    # Lazy exact greedy: ``mind2`` is exact on the candidate rows (the top scores at the last
    # refresh, updated after every pick) and, elsewhere, exact up to the ``pending`` picks, i.e.
    # an upper bound. Distances only shrink, so when the best score belongs to a candidate (or
    # nothing is pending) it is the exact argmax; otherwise one batched pass refreshes all rows.
    pending: list[int] = []
    cand: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
    is_cand = np.zeros(unl.size, dtype=bool)
    xc: NDArray[np.float64] = np.zeros((0, x.shape[1]), dtype=np.float64)
    n_cand = min(unl.size, 1024)

    def alpha_now() -> float:
        remaining = unl.size - len(picks)
        return remaining / (remaining + n_lab + len(picks))

    def scores() -> NDArray[np.float64]:
        a = alpha_now()
        sc = a * (1.0 - 1.0 / (1.0 + np.sqrt(mind2))) + (1.0 - a) * u
        sc[~alive] = -np.inf
        return sc

    def refresh() -> None:
        nonlocal cand, xc
        if pending:
            min_sqdist_update(x, sq, x[np.asarray(pending)], mind2, rows=unl)
            pending.clear()
        sc = scores()
        cand = np.sort(np.argpartition(-sc, n_cand - 1)[:n_cand])
        is_cand[:] = False
        is_cand[cand] = True
        xc = np.asarray(x[unl[cand]], dtype=np.float64)

    def add(j: int) -> None:
        alive[j] = False
        c = int(unl[j])
        picks.append(c)
        pending.append(c)
        if cand.size:
            d2 = usq[cand] + sq[c] - 2.0 * (xc @ np.asarray(x[c], dtype=np.float64))
            np.maximum(d2, 0.0, out=d2)
            mind2[cand] = np.minimum(mind2[cand], d2)

    if n_lab == 0:
        if unl.size <= cold_start_sample:
            ref = unl
        else:
            ref = np.sort(pool.rng().choice(unl, size=cold_start_sample, replace=False))
        mean = _mean_distances(x, unl, ref)
        j = int(np.argmin(mean))
        utils.append(1.0 / (1.0 + float(mean[j])))
        add(j)
    if len(picks) < n:
        refresh()
    with single_thread():
        while len(picks) < n:
            sc = scores()
            j = int(np.argmax(sc))
            if pending and not is_cand[j]:
                refresh()
                continue
            utils.append(float(sc[j]))
            add(j)
    return np.asarray(picks, dtype=np.int64), np.asarray(utils, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Adaptive
# --------------------------------------------------------------------------------------------

_LATE = ("margin", "entropy", "least_confidence", "cluster_margin", "badge", "ranked_batch")
_EARLY = ("maxherding", "typiclust")
DEFAULT_EARLY = "maxherding"
"""``adaptive``'s cold-start strategy: MaxHerding beat TypiClust at 1-5 labels per class on
every benchmark set (``benchmarks/results/cold_start_*.md``)."""


@dataclass(frozen=True)
class AdaptivePhase:
    """Which phase :func:`adaptive` is in, the strategy it delegates to, and why.

    ``uncertain_fraction`` is the share of the batch taken from ``strategy`` (the uncertainty
    strategy) in the ``"transition"`` phase; 0 in the first phase, 1 in ``"uncertainty"``.
    """

    phase: str  # "coverage" (MaxHerding) or "typicality" (TypiClust), "transition", "uncertainty"
    strategy: str
    reason: str
    uncertain_fraction: float = 0.0


def adaptive_phase(
    n_labeled: int,
    n_classes: int | None,
    mean_max_probability: float | None = None,
    *,
    min_labels_per_class: float = 4.0,
    full_labels_per_class: float | None = 10.0,
    min_confidence: float = 0.0,
    late: str = "margin",
    early: str = DEFAULT_EARLY,
) -> AdaptivePhase:
    """The rule of :func:`adaptive`, as a pure function.

    ``early`` (MaxHerding by default, phase ``coverage``; TypiClust: phase ``typicality``) while
    any of these holds:

    1. there is no model (``n_classes`` or ``mean_max_probability`` is None);
    2. fewer than ``min_labels_per_class × n_classes`` labels (default 4 per class: below that
       the model's uncertainty is mostly noise, and typical samples teach more, as the
       TypiClust paper's low-budget regime shows);
    3. the model's mean max-probability over the unlabelled pool is below ``min_confidence``
       (off by default: set it for a model known to be calibrated).

    Otherwise ``late`` (uncertainty), after a transition: from ``min_labels_per_class`` to
    ``full_labels_per_class`` (default 10) labels per class the share of the batch picked by
    ``late`` grows linearly from 0 to 1 (``full_labels_per_class=None``: switch at once).
    Defaults chosen on sklearn digits (logistic regression, batch 10, 8 seeds): this stayed
    within 0.6 point of the better of TypiClust and margin at every budget from 10 to 200,
    where an abrupt switch at 3 or 5 per class fell up to 2 / 0.8 points behind.
    """
    late = check_choice("late", late, _LATE)
    early = check_choice("early", early, _EARLY)
    first = "typicality" if early == "typiclust" else "coverage"
    full = min_labels_per_class if full_labels_per_class is None else full_labels_per_class
    if n_classes is None or mean_max_probability is None:
        return AdaptivePhase(first, early, "no model probabilities yet")
    need = min_labels_per_class * n_classes
    if n_labeled < need:
        return AdaptivePhase(
            first,
            early,
            f"{n_labeled} labels < {min_labels_per_class:g} per class × {n_classes} classes "
            f"= {need:g}",
        )
    if mean_max_probability < min_confidence:
        return AdaptivePhase(
            first,
            early,
            f"mean max-probability {mean_max_probability:.3f} < {min_confidence:g}",
        )
    full_need = full * n_classes
    if n_labeled < full_need:
        frac = (n_labeled - need) / (full_need - need)
        return AdaptivePhase(
            "transition",
            late,
            f"{need:g} <= {n_labeled} labels < {full_need:g}: {frac:.0%} of the batch by {late}",
            frac,
        )
    return AdaptivePhase(
        "uncertainty",
        late,
        f"{n_labeled} labels >= {max(need, full_need):g} and mean max-probability "
        f"{mean_max_probability:.3f} >= {min_confidence:g}",
        1.0,
    )


@strategy("adaptive", "embeddings")
def adaptive(
    pool: Pool,
    n: int,
    *,
    min_labels_per_class: float = 4.0,
    full_labels_per_class: float | None = 10.0,
    min_confidence: float = 0.0,
    late: str = "margin",
    early: str = DEFAULT_EARLY,
) -> CoreResult:
    """Adaptive: ``early`` (a cold-start strategy, default MaxHerding) while labels are few,
    then uncertainty (``late``, default margin).

    It favours typical samples of uncovered regions at the start and uncertain ones later.
    The switch is :func:`adaptive_phase` (labelled count vs ``min_labels_per_class × C`` and
    the model's mean max-probability on the unlabelled pool), so the cold-start phase covers
    the dense regions of every class before the model's uncertainty is trusted; with
    ``full_labels_per_class`` the batch is shared between the two during a transition.
    Probabilities are optional: without them it is always the first phase. Utility: that of
    the strategy each pick came from. Cost: that of the delegates. References: Hacohen et al.,
    ICML 2022 (low vs high budget regimes); the switch rule is labelwheel's.
    """
    min_labels_per_class = check_fraction("min_labels_per_class", min_labels_per_class, 0.0, 1e9)
    if full_labels_per_class is not None:
        full_labels_per_class = check_fraction(
            "full_labels_per_class", full_labels_per_class, min_labels_per_class, 1e9
        )
    min_confidence = check_fraction("min_confidence", min_confidence)
    p = pool.probabilities
    if p is not None and p.ndim != 2:
        raise ValueError("adaptive needs probabilities of shape (N, C), not a committee")
    n_lab = int(np.count_nonzero(pool.labeled))
    if p is None:
        phase = adaptive_phase(n_lab, None, None, late=late, early=early)
    else:
        unl = pool.unlabeled_idx
        conf = float(p[unl].max(axis=1).mean())
        phase = adaptive_phase(
            n_lab,
            int(p.shape[1]),
            conf,
            min_labels_per_class=min_labels_per_class,
            full_labels_per_class=full_labels_per_class,
            min_confidence=min_confidence,
            late=late,
            early=early,
        )
    if phase.phase != "transition":
        return REGISTRY[phase.strategy].core(pool, n)
    k_late = min(n, max(0, round(n * phase.uncertain_fraction)))
    late_idx, late_u = (
        REGISTRY[phase.strategy].core(pool, k_late)
        if k_late
        else (
            np.zeros(0, np.int64),
            np.zeros(0, np.float64),
        )
    )
    typ_idx, typ_u = REGISTRY[early].core(pool, n)
    keep = ~np.isin(typ_idx, late_idx)
    typ_idx, typ_u = typ_idx[keep][: n - k_late], typ_u[keep][: n - k_late]
    # interleave the two rankings proportionally (typical picks first on ties)
    pos = np.concatenate(
        [
            (np.arange(typ_idx.size) + 0.5) / max(1, typ_idx.size),
            (np.arange(late_idx.size) + 0.5) / max(1, late_idx.size) + 1e-9,
        ]
    )
    order = np.argsort(pos, kind="stable")
    return (
        np.concatenate([typ_idx, late_idx])[order].astype(np.int64),
        np.concatenate([typ_u, late_u])[order].astype(np.float64),
    )
