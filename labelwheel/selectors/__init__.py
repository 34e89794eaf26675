"""Selectors: rank unlabelled samples by how much they would teach the model.

One entry point, many strategies::

    from labelwheel.selectors import select, STRATEGIES
    idx = select("margin", 10, embeddings=X, probabilities=P, labeled=mask, seed=0)
    idx, utilities = select("kcenter", 10, embeddings=X, return_scores=True)

``select`` returns a 1-D int64 array of distinct indices of unlabelled samples, most informative
first, ``min(n, #unlabelled)`` of them, deterministic for a given seed. With
``return_scores=True`` it also returns each pick's utility (the number it was ranked by, higher =
more informative; see each strategy's docstring). Every strategy is also a plain function of the
same call shape, e.g. :func:`labelwheel.selectors.uncertainty.margin`.

Measures (per-sample numbers) live beside their strategies in :mod:`.uncertainty`; the funnel
filters (duplicates, anomalies, information in bits) in :mod:`.filters`.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import NDArray

from labelwheel.selectors import diversity, hybrid, passive, uncertainty
from labelwheel.selectors._registry import REGISTRY, StrategyFunction
from labelwheel.selectors.diversity import kcenter, kmeans, probcover, typiclust
from labelwheel.selectors.herding import maxherding
from labelwheel.selectors.hybrid import (
    AdaptivePhase,
    adaptive,
    adaptive_phase,
    badge,
    cluster_margin,
    ranked_batch,
)
from labelwheel.selectors.passive import random
from labelwheel.selectors.uncertainty import bald, entropy, least_confidence, margin

_ORDER = (
    "random",
    "least_confidence",
    "margin",
    "entropy",
    "bald",
    "kcenter",
    "kmeans",
    "typiclust",
    "probcover",
    "maxherding",
    "badge",
    "cluster_margin",
    "ranked_batch",
    "adaptive",
)

#: Every strategy name → its public function (read-only mapping, in a stable order).
STRATEGIES: MappingProxyType[str, StrategyFunction] = MappingProxyType(
    {name: REGISTRY[name].function for name in _ORDER}
)

#: The strategy used when none is configured: works from zero labels and improves with a model.
DEFAULT_STRATEGY = "adaptive"

#: Strategies that cannot run without ``probabilities``.
NEEDS_PROBABILITIES = frozenset(
    name for name in _ORDER if REGISTRY[name].needs in ("probabilities", "committee", "both")
)


@overload
def select(
    strategy: str,
    n: int,
    *,
    embeddings: Any,
    probabilities: Any = ...,
    labeled: Any = ...,
    seed: int = ...,
    return_scores: Literal[False] = ...,
    **params: Any,
) -> NDArray[np.int64]: ...


@overload
def select(
    strategy: str,
    n: int,
    *,
    embeddings: Any,
    probabilities: Any = ...,
    labeled: Any = ...,
    seed: int = ...,
    return_scores: Literal[True],
    **params: Any,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]: ...


def select(
    strategy: str,
    n: int,
    *,
    embeddings: Any,
    probabilities: Any = None,
    labeled: Any = None,
    seed: int = 0,
    return_scores: bool = False,
    **params: Any,
) -> NDArray[np.int64] | tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Pick ``n`` unlabelled samples with ``strategy``, most informative first.

    Args:
        strategy: one of :data:`STRATEGIES`.
        n: how many to pick (an int ≥ 0); fewer come back if fewer are unlabelled.
        embeddings: (N, d) float array for the whole pool (may be None only for strategies
            that need just ``probabilities``).
        probabilities: (N, C) class probabilities from the current model, rows summing to 1;
            for ``bald`` (T, N, C). Required by the strategies in :data:`NEEDS_PROBABILITIES`.
        labeled: boolean mask (N,) of samples already labelled (None = none).
        seed: makes the result deterministic.
        return_scores: also return each pick's utility (float64, higher = more informative).
        **params: strategy-specific options (see the strategy's docstring).

    Raises:
        ValueError: unknown strategy or parameter, bad shapes/dtypes, NaN/inf, n < 0, missing
            probabilities; the message says what to pass.
    """
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of: {', '.join(STRATEGIES)}")
    result: NDArray[np.int64] | tuple[NDArray[np.int64], NDArray[np.float64]] = STRATEGIES[
        strategy
    ](
        n,
        embeddings=embeddings,
        probabilities=probabilities,
        labeled=labeled,
        seed=seed,
        return_scores=return_scores,
        **params,
    )
    return result


__all__ = [
    "DEFAULT_STRATEGY",
    "NEEDS_PROBABILITIES",
    "STRATEGIES",
    "AdaptivePhase",
    "adaptive",
    "adaptive_phase",
    "badge",
    "bald",
    "cluster_margin",
    "diversity",
    "entropy",
    "hybrid",
    "kcenter",
    "kmeans",
    "least_confidence",
    "margin",
    "maxherding",
    "passive",
    "probcover",
    "random",
    "ranked_batch",
    "select",
    "typiclust",
    "uncertainty",
]
