"""The passive baseline every active strategy is measured against."""

from __future__ import annotations

from labelwheel.selectors._registry import CoreResult, strategy, top_n
from labelwheel.selectors._validation import Pool


@strategy("random", "optional")
def random(pool: Pool, n: int) -> CoreResult:
    """Uniform random sampling without replacement: favours nothing, the baseline.

    Utility: the uniform [0, 1) draw each sample was ordered by (meaningless beyond order).
    Cost O(N) time and memory. Needs only the pool size (embeddings or probabilities).
    Deterministic per seed.
    """
    unl = pool.unlabeled_idx
    draws = pool.rng().random(unl.size)
    return top_n(draws, unl, n)
