"""Class-balanced batches: a batch is not spent on the class the model predicts most.

:func:`balanced_select` asks a strategy for a longer list than the batch (``oversample`` × n),
groups that list by the current model's predicted class, and fills the batch round-robin over
the predicted classes, each class in the strategy's own order. The first round visits classes in
the order of their best-ranked candidate, so the strategy's top pick always comes first. Without
probabilities, or with the same probabilities everywhere (cold start: no model yet), the
strategy's picks are returned unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from labelwheel.selectors._validation import check_positive_int

__all__ = ["balance_by_class", "balanced_select"]


def balance_by_class(ranked: NDArray[np.int64], predicted: NDArray[np.int64], n: int) -> NDArray:
    """Positions into ``ranked`` (the strategy's candidates, best first) for a batch of ``n``:
    round-robin over ``predicted`` classes (the class of each candidate), best-first within each.
    """
    ranked = np.asarray(ranked)
    predicted = np.asarray(predicted)
    if ranked.shape != predicted.shape:
        raise ValueError("ranked and predicted must have the same length")
    queues: dict[int, list[int]] = {}
    for pos, c in enumerate(predicted.tolist()):  # classes in order of their best candidate
        queues.setdefault(int(c), []).append(pos)
    lists = list(queues.values())
    out: list[int] = []
    depth = 0
    while len(out) < n and any(depth < len(q) for q in lists):
        for q in lists:
            if depth < len(q) and len(out) < n:
                out.append(q[depth])
        depth += 1
    return np.asarray(out, dtype=np.int64)


def balanced_select(
    strategy: str,
    n: int,
    *,
    embeddings: Any,
    probabilities: Any = None,
    labeled: Any = None,
    seed: int = 0,
    oversample: int = 3,
    **params: Any,
) -> NDArray[np.int64]:
    """:func:`labelwheel.selectors.select`, with the batch balanced over predicted classes.

    ``probabilities`` (N, C) give each candidate's predicted class (for ``bald``, (T, N, C):
    their mean). ``oversample``: the strategy ranks ``oversample · n`` candidates.
    """
    from labelwheel.selectors import select

    oversample = check_positive_int("oversample", oversample)
    probs = None if probabilities is None else np.asarray(probabilities)
    if probs is None or n <= 1 or np.ptp(probs) == 0:  # no model yet: nothing to balance
        return select(
            strategy,
            n,
            embeddings=embeddings,
            probabilities=probabilities,
            labeled=labeled,
            seed=seed,
            **params,
        )
    ranked = select(
        strategy,
        n * oversample,
        embeddings=embeddings,
        probabilities=probabilities,
        labeled=labeled,
        seed=seed,
        **params,
    )
    if probs.ndim == 3:
        probs = probs.mean(axis=0)
    predicted = np.argmax(probs[ranked], axis=1)
    return np.asarray(ranked[balance_by_class(ranked, predicted, n)], dtype=np.int64)
