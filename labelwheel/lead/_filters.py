"""Thin adapter over :mod:`labelwheel.selectors.filters` (near-duplicates, anomalies, bits).

The lead tools show exactly what the selectors skip, so they call the selectors' filters. The
adapter only normalises return types (lists of position lists, float arrays).
"""

from __future__ import annotations

import numpy as np


def near_duplicate_groups(embeddings: np.ndarray) -> list[list[int]]:
    """Groups (size ≥ 2) of near-duplicate items as pool positions; the first of each is kept."""
    import labelwheel.selectors.filters as filters

    groups = filters.near_duplicate_groups(np.asarray(embeddings, dtype=np.float32))
    out = [sorted(int(i) for i in g) for g in groups]
    return [g for g in out if len(g) >= 2]


def anomaly_scores(embeddings: np.ndarray) -> np.ndarray:
    """Anomaly score per item (higher = more unusual)."""
    import labelwheel.selectors.filters as filters

    n = embeddings.shape[0]
    if n < 3:
        return np.zeros(n, dtype=np.float64)
    return np.asarray(
        filters.anomaly_scores(np.asarray(embeddings, dtype=np.float32)), dtype=np.float64
    )


def information_bits(probabilities: np.ndarray) -> np.ndarray:
    """Information (entropy of the predicted distribution) in bits per item."""
    import labelwheel.selectors.filters as filters

    return np.asarray(filters.information_bits(np.asarray(probabilities)), dtype=np.float64)
