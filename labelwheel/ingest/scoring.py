"""Scores of the images that passed the funnel: information, diversity, anomaly; their order.

* ``bits``: the project's current head's predictive entropy (:func:`labelwheel.selectors.filters.
  information_bits`; for a multi-label project, the sum of each label's binary entropy). Only when
  the project has labels of at least two classes (the head is fitted as the backend fits it).
* ``diversity``: greedy k-center (``kcenter`` selector) over the project's images and the
  candidates: each candidate's distance, at the time it is picked, to the nearest image already in
  the project or picked before it (higher = covers more new ground).
* ``anomaly``: mean distance to the 10 nearest neighbours among the project's images and the
  candidates (:func:`labelwheel.selectors.filters.anomaly_scores`); higher = more unusual. Kept,
  not dropped: an anomaly is what the seed's funnel wants labelled.

Order (most informative first): by bits when there is a head, else the k-center order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from labelwheel.selectors import select
from labelwheel.selectors.filters import anomaly_scores, information_bits

__all__ = ["Scores", "score_candidates"]


@dataclass
class Scores:
    """Per-candidate scores (aligned with the candidates) and the import order."""

    method: str  # "bits" (the project's head) or "diversity" (no head yet)
    bits: np.ndarray | None
    diversity: np.ndarray
    anomaly: np.ndarray
    order: np.ndarray  # candidate positions, most informative first


def _bits(head: Any, x: np.ndarray) -> np.ndarray:
    probs = np.asarray(head.predict_proba(x), dtype=np.float64)
    if not head.multi_label:
        return information_bits(probs)
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    return np.asarray(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)).sum(axis=1), dtype=np.float64)


def score_candidates(
    vectors: np.ndarray, project_embeddings: np.ndarray | None, head: Any, *, seed: int = 0
) -> Scores:
    """Score ``vectors`` (the candidates' embeddings) against the project (see the module doc)."""
    x = np.asarray(vectors, dtype=np.float32)
    n = x.shape[0]
    if n == 0:
        empty = np.zeros(0, dtype=np.float64)
        return Scores(
            "bits" if head is not None else "diversity",
            None,
            empty,
            empty,
            np.zeros(0, dtype=np.int64),
        )
    proj = (
        np.asarray(project_embeddings, dtype=np.float32)
        if project_embeddings is not None and len(project_embeddings)
        else np.zeros((0, x.shape[1]), dtype=np.float32)
    )
    if proj.shape[1] != x.shape[1]:
        raise ValueError(
            f"the project's embeddings have {proj.shape[1]} dimensions, the new images' "
            f"{x.shape[1]}: use the same backbone and image size"
        )
    both = np.concatenate([proj, x])
    covered = np.zeros(both.shape[0], dtype=bool)
    covered[: proj.shape[0]] = True
    picks, utilities = select(
        "kcenter", n, embeddings=both, labeled=covered, seed=seed, return_scores=True
    )
    diversity = np.zeros(n, dtype=np.float64)
    positions = np.asarray(picks, dtype=np.int64) - proj.shape[0]
    diversity[positions] = utilities
    anomaly = anomaly_scores(both, k=10, seed=seed)[proj.shape[0] :]
    if head is not None:
        bits = _bits(head, x)
        # most bits first; ties (e.g. a confident head) broken by diversity
        order = np.lexsort((-diversity, -bits)).astype(np.int64)
        return Scores("bits", bits, diversity, anomaly, order)
    return Scores("diversity", None, diversity, anomaly, positions)
