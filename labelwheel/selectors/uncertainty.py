"""Uncertainty sampling: per-sample *measures* and the strategies that rank by them.

The measures are small pure functions of the model's class probabilities that return one number
per sample, **higher = more uncertain**. The strategies (:func:`least_confidence`,
:func:`margin`, :func:`entropy`, :func:`bald`) pick the ``n`` unlabelled samples with the highest
measure and report it as their utility. All of them cost O(N·C) time and O(N) extra memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from labelwheel.selectors._registry import CoreResult, strategy, top_n
from labelwheel.selectors._validation import Pool, as_probabilities

_EPS = 1e-12


def _binary(p: NDArray[np.float64]) -> NDArray[np.float64]:
    """Independent per-label probabilities (N, C) → (N, C, 2) two-outcome distributions."""
    return np.stack([1.0 - p, p], axis=-1)


def _entropy(p: NDArray[np.float64], axis: int = -1) -> NDArray[np.float64]:
    return -np.sum(p * np.log(np.clip(p, _EPS, 1.0)), axis=axis)


def least_confidence_uncertainty(
    probabilities: Any, *, multi_label: bool = False
) -> NDArray[np.float64]:
    """``1 − max_c p(c|x)`` per sample, in [0, 1 − 1/C].

    With ``multi_label=True`` the columns are independent per-label probabilities and the
    measure is that of the least certain label, ``max_c (1 − max(p_c, 1 − p_c))``.
    """
    p = as_probabilities(probabilities, None, multi_label=multi_label)
    if multi_label:
        return np.asarray((1.0 - np.maximum(p, 1.0 - p)).max(axis=1), dtype=np.float64)
    return np.asarray(1.0 - p.max(axis=1), dtype=np.float64)


def top2_margin(probabilities: Any, *, multi_label: bool = False) -> NDArray[np.float64]:
    """The raw margin ``p(top-1) − p(top-2)`` per sample (small = uncertain).

    With ``multi_label=True``: the smallest per-label margin ``min_c |2 p_c − 1|``.
    """
    p = as_probabilities(probabilities, None, multi_label=multi_label)
    if multi_label:
        return np.asarray(np.abs(2.0 * p - 1.0).min(axis=1), dtype=np.float64)
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return np.asarray(top2[:, 1] - top2[:, 0], dtype=np.float64)


def margin_uncertainty(probabilities: Any, *, multi_label: bool = False) -> NDArray[np.float64]:
    """``1 − (p(top-1) − p(top-2))`` per sample, in [0, 1]; 1 = a tie between two classes."""
    return 1.0 - top2_margin(probabilities, multi_label=multi_label)


def entropy_uncertainty(probabilities: Any, *, multi_label: bool = False) -> NDArray[np.float64]:
    """Shannon entropy of the predicted distribution in nats, in [0, log C].

    With ``multi_label=True``: the sum of the per-label binary entropies.
    """
    p = as_probabilities(probabilities, None, multi_label=multi_label)
    if multi_label:
        return np.asarray(_entropy(_binary(p)).sum(axis=1), dtype=np.float64)
    return np.asarray(_entropy(p), dtype=np.float64)


def bald_uncertainty(probabilities: Any) -> NDArray[np.float64]:
    """BALD mutual information between the label and the model, per sample, in nats.

    ``probabilities`` is (T, N, C): T stochastic forward passes (MC dropout) or committee
    members. ``I = H(mean_t p_t) − mean_t H(p_t)``: high where the members are individually
    confident but disagree (epistemic uncertainty), zero where they all agree, even on a
    uniform prediction (pure aleatoric noise).
    """
    p = as_probabilities(probabilities, None, committee=True)
    mean = p.mean(axis=0)
    mi = _entropy(mean) - _entropy(p).mean(axis=0)
    return np.asarray(np.maximum(mi, 0.0), dtype=np.float64)


def _rank(pool: Pool, n: int, measure: NDArray[np.float64]) -> CoreResult:
    unl = pool.unlabeled_idx
    return top_n(measure[unl], unl, n)


@strategy("least_confidence", "probabilities", multi_label_ok=True)
def least_confidence(pool: Pool, n: int, *, multi_label: bool = False) -> CoreResult:
    """Least-confidence sampling: favours samples whose top class probability is lowest.

    Utility: ``1 − max_c p(c|x)`` (higher = less confident). Cost O(N·C) time, O(N) memory.
    Deterministic (ties: lower index first). Reference: Lewis & Gale, "A sequential algorithm
    for training text classifiers", SIGIR 1994. ``multi_label=True`` treats the columns as
    independent per-label probabilities.
    """
    p = pool.need_probabilities("least_confidence")
    return _rank(pool, n, least_confidence_uncertainty(p, multi_label=multi_label))


@strategy("margin", "probabilities", multi_label_ok=True)
def margin(pool: Pool, n: int, *, multi_label: bool = False) -> CoreResult:
    """Margin sampling: favours samples whose two most likely classes are nearly tied.

    Utility: ``1 − (p(top-1) − p(top-2))`` in [0, 1] (1 = exact tie). Cost O(N·C) time, O(N)
    memory. Reference: Scheffer, Decomain & Wrobel, "Active hidden Markov models for
    information extraction", IDA 2001. A strong default once the model has a few labels per
    class. ``multi_label=True``: the label whose probability is closest to 0.5.
    """
    p = pool.need_probabilities("margin")
    return _rank(pool, n, margin_uncertainty(p, multi_label=multi_label))


@strategy("entropy", "probabilities", multi_label_ok=True)
def entropy(pool: Pool, n: int, *, multi_label: bool = False) -> CoreResult:
    """Entropy sampling: favours samples whose whole predicted distribution is flat.

    Utility: Shannon entropy in nats (``/ ln 2`` for bits). Cost O(N·C) time, O(N) memory.
    Reference: Shannon 1948; for active learning Settles, "Active Learning Literature Survey",
    2009. With many classes it prefers samples spread over all of them (margin looks only at
    the top two). ``multi_label=True``: the sum of per-label binary entropies.
    """
    p = pool.need_probabilities("entropy")
    return _rank(pool, n, entropy_uncertainty(p, multi_label=multi_label))


@strategy("bald", "committee")
def bald(pool: Pool, n: int) -> CoreResult:
    """BALD: favours samples on which stochastic passes / committee members disagree.

    ``probabilities`` must be (T, N, C). Utility: mutual information
    ``H(mean p) − mean H(p)`` in nats. Cost O(T·N·C) time, O(N·C) memory. Reference: Houlsby
    et al., "Bayesian active learning for classification and preference learning", 2011; Gal,
    Islam & Ghahramani, "Deep Bayesian active learning with image data", ICML 2017.
    """
    p = pool.need_probabilities("bald")
    return _rank(pool, n, bald_uncertainty(p))
