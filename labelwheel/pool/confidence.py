"""A version's confidence in its own pre-labels, over a pool: what prediction-powered inference
(:func:`labelwheel.lead.honest.ppi_accuracy`) needs besides the control labels.

For every pool task, ``c`` = the head's calibrated probability that the pre-label it would show
is exactly right: single-label, the probability of the predicted class (the max of
``predict_proba``); multi-label, the product over labels of ``max(p, 1 − p)`` (the shown set is
right when every label's call is, taken as independent). The pool is read in blocks, so that
the ``(rows, labels)`` probabilities of a large pool are never held at once. Pure numpy.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from labelwheel.records import PoolConfidence

__all__ = ["BLOCK_ROWS", "confidence_from_proba", "prelabel_confidence", "summarise"]

BLOCK_ROWS = 8192
"""Rows per ``predict_proba`` call."""


class _ProbaHead(Protocol):
    multi_label: bool

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...


def summarise(confidence: np.ndarray) -> PoolConfidence:
    """``n``, mean and population variance of a vector of confidences (``n`` = 0: mean and
    variance 0), as the store records them per version."""
    c = np.asarray(confidence, dtype=np.float64)
    if c.size == 0:
        return PoolConfidence(0, 0.0, 0.0)
    return PoolConfidence(int(c.size), float(c.mean()), float(c.var()))


def confidence_from_proba(p: np.ndarray, multi_label: bool) -> np.ndarray:
    """``c`` per row of a head's probabilities ``p`` (float64, in ``[0, 1]``)."""
    p = np.asarray(p, dtype=np.float64)
    if multi_label:
        c = np.prod(np.maximum(p, 1.0 - p), axis=1)
    else:
        c = p.max(axis=1) if p.shape[1] else np.zeros(len(p))
    return np.clip(c, 0.0, 1.0)


def prelabel_confidence(
    head: _ProbaHead, x: np.ndarray, block_rows: int = BLOCK_ROWS
) -> np.ndarray:
    """``c`` per row of ``x`` (float64, in ``[0, 1]``), ``block_rows`` rows at a time."""
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows!r}")
    out = np.empty(len(x), dtype=np.float64)
    for start in range(0, len(x), block_rows):
        p = head.predict_proba(x[start : start + block_rows])
        out[start : start + len(p)] = confidence_from_proba(p, head.multi_label)
    return out
