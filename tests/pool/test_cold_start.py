"""The backend's cold-start ranking and ``adaptive``'s first phase are one decision.

``labelwheel.pool`` keeps its own constant (it imports the selectors lazily, to keep start-up
light); it must name the selector that ``adaptive`` starts with.
"""

from __future__ import annotations

import numpy as np

from labelwheel.pool import COLD_START_STRATEGY, queue_order_stacked
from labelwheel.selectors.hybrid import DEFAULT_EARLY


def test_cold_start_is_adaptives_first_phase() -> None:
    assert COLD_START_STRATEGY == DEFAULT_EARLY


def test_a_pool_without_a_head_is_ordered_by_the_cold_start_selector() -> None:
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(c, 0.3, (20, 4)) for c in (0.0, 5.0, 10.0)]).astype(np.float32)
    queue = queue_order_stacked(x, len(x), strategy="margin", head=None, first_batch=3)
    assert queue.strategy == COLD_START_STRATEGY and queue.probabilities is None
    assert sorted(queue.order) == list(range(len(x)))
    assert {p // 20 for p in queue.order[:3]} == {0, 1, 2}  # one pick per blob first
