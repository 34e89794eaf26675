"""The labelling queue of a pool: every unlabelled item in the order annotators should see it.

The configured selector ranks the pool's unlabelled embeddings against the labelled ones (in the
backbone's own embedding space; the head standardises with the pool's statistics), in two stages:

1. the first ``first_batch`` items are what ``select(first_batch)`` picks: the batch annotators
   label before the next retrain, chosen as a batch (for TypiClust, one typical item from each
   of ``first_batch`` clusters);
2. then up to ``depth`` items in all, with that batch counted as labelled. Ranking all ``depth``
   in one call would optimise a batch of ``depth``, whose head is not a good batch of
   ``first_batch``.

The rest follow in pool order. When the selector refuses the pool (too small for it, say), the
cold-start selector is tried, then pool order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["COLD_START_STRATEGY", "PROBA_ROWS", "QueueOrder", "queue_order", "queue_order_stacked"]

log = logging.getLogger("labelwheel.pool")

COLD_START_STRATEGY = "maxherding"
"""The selector used while no model exists (it needs no probabilities)."""


@dataclass(frozen=True)
class QueueOrder:
    """Positions of the unlabelled rows, most informative first (every row exactly once)."""

    order: list[int]
    strategy: str
    probabilities: np.ndarray | None = None
    """The head's probabilities of every row (the unlabelled ones first), when a head scored
    them (None at cold start): callers that need them do not score the pool a second time."""


def _select(
    strategy: str,
    n: int,
    embeddings: np.ndarray,
    probabilities: np.ndarray | None,
    labeled: np.ndarray | None,
) -> list[int] | None:
    from labelwheel.selectors import select

    try:
        idx = select(
            strategy, n, embeddings=embeddings, probabilities=probabilities, labeled=labeled, seed=0
        )
    except ValueError as exc:
        log.warning("selector %s refused the pool (%s)", strategy, exc)
        return None
    return [int(i) for i in np.asarray(idx).ravel()]


def _staged(
    strategy: str,
    n: int,
    first: int,
    embeddings: np.ndarray,
    probabilities: np.ndarray | None,
    labeled: np.ndarray,
) -> list[int] | None:
    has_labels = bool(labeled.any())
    head = _select(
        strategy, min(first, n), embeddings, probabilities, labeled if has_labels else None
    )
    if head is None or len(head) >= n:
        return head
    taken = labeled.copy()
    taken[head] = True
    tail = _select(strategy, n - len(head), embeddings, probabilities, taken)
    return None if tail is None else head + tail


PROBA_ROWS = 8192
"""Rows the head scores at a time: its standardised copy of the pool stays this small."""


def queue_order(
    unlabeled: np.ndarray,
    labeled: np.ndarray | None,
    *,
    strategy: str,
    head: Any = None,
    depth: int = 1000,
    first_batch: int = 10,
) -> QueueOrder:
    """Order the ``unlabeled`` rows ``(n, d)`` given the ``labeled`` rows ``(m, d)`` (or None).

    ``head``: the serving :class:`~labelwheel.head.Head` (None at cold start: the cold-start
    selector is used). ``depth``: how many rows the selector ranks exactly. Stacks the two into
    one matrix; a caller that already holds them stacked uses :func:`queue_order_stacked`.
    """
    unl = np.asarray(unlabeled, dtype=np.float32)
    emb = unl if labeled is None or len(labeled) == 0 else np.vstack([unl, labeled])
    return queue_order_stacked(
        emb, len(unl), strategy=strategy, head=head, depth=depth, first_batch=first_batch
    )


def queue_order_stacked(
    embeddings: np.ndarray,
    n_unlabeled: int,
    *,
    strategy: str,
    head: Any = None,
    depth: int = 1000,
    first_batch: int = 10,
) -> QueueOrder:
    """:func:`queue_order` for rows already stacked in one float32 matrix: the first
    ``n_unlabeled`` rows are the unlabelled pool, the rest the labelled items. No copy of the
    matrix is made (on a pool of 20,000 × 1,280 each copy is 100 MB); the head's probabilities
    are computed :data:`PROBA_ROWS` rows at a time."""
    n = int(n_unlabeled)
    if n == 0:
        return QueueOrder([], strategy if head is not None else COLD_START_STRATEGY)
    if depth < 1 or first_batch < 1:
        raise ValueError("depth and first_batch must be at least 1")
    if not 0 < n <= len(embeddings):
        raise ValueError(f"n_unlabeled must be in 1..{len(embeddings)}, got {n}")
    emb = np.asarray(embeddings, dtype=np.float32)
    mask = np.zeros(len(emb), dtype=bool)
    mask[n:] = True
    probs = None
    if head is not None:
        probs = np.vstack(
            [head.predict_proba(emb[s : s + PROBA_ROWS]) for s in range(0, len(emb), PROBA_ROWS)]
        )
    used = strategy if head is not None else COLD_START_STRATEGY
    k = min(n, depth)
    picks = _staged(used, k, first_batch, emb, probs, mask)
    if picks is None and used != COLD_START_STRATEGY:
        used = COLD_START_STRATEGY
        picks = _staged(used, k, first_batch, emb, None, mask)
    if picks is None:
        used, picks = "task order", list(range(k))
    seen: set[int] = set()
    order: list[int] = []
    for p in picks:
        if 0 <= p < n and p not in seen:
            seen.add(p)
            order.append(p)
    order.extend(i for i in range(n) if i not in seen)
    return QueueOrder(order, used, probs)
