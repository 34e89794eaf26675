"""The lift of active learning over random picks, measured on the project's own control slice.

The control slice (:mod:`labelwheel.pool.control`) gives a project labels picked at random
beside the labels its selector picked. That is enough to compare the two ways of spending
labels without the selector's bias, at the size the control slice has:

- split the ``m`` control labels into ``k`` folds; for each fold, train the product's head on
  the other folds' control labels (the **random** arm: ``t ≈ m·(k−1)/k`` random labels) and on
  the first ``t`` labels the selector picked, in the order they were labelled (the **active**
  arm: what active learning had bought with the same number of labels);
- score both on the held-out fold: random tasks neither arm was trained on.

The lift is the mean over the control labels of ``correct_active − correct_random`` (paired on
the same held-out tasks), with a normal 95% interval from the paired differences (the
fold-to-fold variance of the fits is not in it: the usual approximation of paired
cross-validation). It is the lift **at t labels**: the counterfactual random model at the
project's full size would need that many random labels, which a 5% slice has only after a long
project. Pure numpy on embeddings; the head is :func:`labelwheel.head.fit_codes`, semi-
supervised over the pool as the backend's default head is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from labelwheel.head import HeadConfig, NotEnoughLabels, Scaling, fit_codes
from labelwheel.pool.core import Pool
from labelwheel.records import LabelledTask
from labelwheel.semisup import DEFAULT_SEMI

__all__ = [
    "LIFT_FOLDS",
    "LIFT_MIN_CONTROL",
    "LiftEstimate",
    "active_learning_lift",
    "pool_lift",
]

LIFT_MIN_CONTROL = 20
"""Fewer control labels than this: no lift estimate (a 16-label random arm is already thin)."""
LIFT_FOLDS = 5
Z95 = 1.959963984540054


@dataclass(frozen=True)
class LiftEstimate:
    """Active learning's picks vs random picks at the same number of labels, on random tasks."""

    labels: int
    """Training labels per arm (per fold, the smallest): the size the lift is measured at."""
    random_accuracy: float | None
    active_accuracy: float | None
    lift: float | None
    """``active_accuracy − random_accuracy`` (None: not measurable, see ``reason``)."""
    interval: tuple[float, float] | None
    n_control: int
    """Control labels (the random arm's labels and the held-out tasks)."""
    n_selected: int
    """Labels on selected tasks available to the active arm."""
    folds: int
    reason: str = ""
    """Why there is no estimate (empty when there is one)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the interval as a two-item list)."""
        out = asdict(self)
        out["interval"] = list(self.interval) if self.interval is not None else None
        return out


def active_learning_lift(
    x_control: np.ndarray,
    y_control: np.ndarray,
    x_selected: np.ndarray,
    y_selected: np.ndarray,
    n_classes: int,
    *,
    pool: np.ndarray | None = None,
    semi_supervised: str = DEFAULT_SEMI,
    folds: int = LIFT_FOLDS,
    seed: int = 0,
    min_control: int = LIFT_MIN_CONTROL,
    z: float = Z95,
) -> LiftEstimate:
    """The lift of active learning over random picks (see the module's docstring).

    ``x_control``/``y_control``: embeddings and class indices of the labels made on control
    tasks (random picks); ``x_selected``/``y_selected``: those of the labels made on selected
    tasks, **in the order they were labelled**; ``pool``: the project's embeddings (the
    head's scaling, and its semi-supervised pool unless ``semi_supervised`` is ``"none"``).
    """
    x_control = np.asarray(x_control, dtype=np.float32)
    x_selected = np.asarray(x_selected, dtype=np.float32)
    y_control = np.asarray(y_control, dtype=np.int64)
    y_selected = np.asarray(y_selected, dtype=np.int64)
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if len(x_control) != len(y_control) or len(x_selected) != len(y_selected):
        raise ValueError("embeddings and labels must have the same number of rows")
    m, s = len(y_control), len(y_selected)

    def none(reason: str, labels: int = 0) -> LiftEstimate:
        return LiftEstimate(labels, None, None, None, None, m, s, folds, reason)

    if m < min_control:
        return none(f"{m} control labels; the lift needs at least {min_control}")
    k = min(folds, m)
    rng = np.random.default_rng(seed)
    parts = np.array_split(rng.permutation(m), k)
    t = m - max(len(p) for p in parts)  # the smallest training fold
    most = m - min(len(p) for p in parts)  # the largest: the active arm needs that many
    if s < most:
        return none(
            f"{s} labels on selected tasks; comparing at {most} labels per arm needs as many", t
        )
    rows = pool if pool is not None else np.concatenate([x_control, x_selected])
    config = HeadConfig(semi_supervised=semi_supervised)
    scaling = Scaling.of(rows)
    semi_pool = rows if semi_supervised != "none" else None
    hit_random = np.zeros(m)
    hit_active = np.zeros(m)
    for test in parts:
        train = np.setdiff1d(np.arange(m), test)
        try:
            random_head = fit_codes(
                x_control[train],
                y_control[train],
                n_classes,
                config=config,
                scaling=scaling,
                pool=semi_pool,
            )
            active_head = fit_codes(
                x_selected[: len(train)],
                y_selected[: len(train)],
                n_classes,
                config=config,
                scaling=scaling,
                pool=semi_pool,
            )
        except NotEnoughLabels as exc:
            return none(f"an arm has labels of fewer than two classes ({exc})", t)
        hit_random[test] = random_head.predict(x_control[test]) == y_control[test]
        hit_active[test] = active_head.predict(x_control[test]) == y_control[test]
    diff = hit_active - hit_random
    lift = float(diff.mean())
    se = float(diff.std(ddof=1)) / math.sqrt(m)
    return LiftEstimate(
        labels=t,
        random_accuracy=float(hit_random.mean()),
        active_accuracy=float(hit_active.mean()),
        lift=lift,
        interval=(max(-1.0, lift - z * se), min(1.0, lift + z * se)),
        n_control=m,
        n_selected=s,
        folds=k,
    )


def pool_lift(pool: Pool, order: Sequence[LabelledTask], seed: int = 0) -> LiftEstimate:
    """:func:`active_learning_lift` for a project's pool and its labelling order
    (:func:`labelwheel.records.read_labelling_order`: each task once, in the order it was
    labelled, control or not, with the labels chosen): the embeddings of those tasks from the
    pool, their labels as recorded, the whole pool as the head's pool. Tasks the pool no longer
    has, or whose label is not one of its classes, are left out. Multi-label projects: no
    estimate (one class per task is what the head's accuracy counts)."""
    at = {int(t): i for i, t in enumerate(pool.ids.tolist())}
    index = {name: i for i, name in enumerate(pool.classes)}
    rows = [
        (at[task.task_id], index[task.labels[0]], task.control)
        for task in order
        if task.task_id in at and len(task.labels) >= 1 and task.labels[0] in index
    ]
    control = [(r, c) for r, c, is_control in rows if is_control]
    selected = [(r, c) for r, c, is_control in rows if not is_control]
    if pool.multi_label:
        return LiftEstimate(
            0,
            None,
            None,
            None,
            None,
            len(control),
            len(selected),
            LIFT_FOLDS,
            "multi-label project: the lift is measured for single-label projects",
        )
    x = pool.embeddings

    def arm(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        positions = np.array([r for r, _ in pairs], dtype=np.int64)
        return x[positions], np.array([c for _, c in pairs], dtype=np.int64)

    (xc, yc), (xs, ys) = arm(control), arm(selected)
    return active_learning_lift(xc, yc, xs, ys, len(pool.classes), pool=x, seed=seed)
