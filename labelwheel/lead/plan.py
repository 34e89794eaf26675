"""What to label next under a budget: the selector's picks, each with why and how much it teaches.

A logistic-regression head is trained on the labels present (as the backend does); the configured
selector (:func:`labelwheel.selectors.select`) ranks the unlabelled pool; each pick is explained:

* ``anomaly`` — among the most unusual items of the pool (check it is not junk before paying);
* ``uncovered cluster`` — in a k-means cluster that holds no label yet;
* ``uncertain`` — the model is unsure about it (or, before any model, every item is).

"Information" is the entropy of the model's predicted class distribution in bits (before a model
exists: log2 of the number of classes, the most a label can tell).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from labelwheel.head import HeadConfig, NotEnoughLabels, Scaling, fit_codes
from labelwheel.lead import _filters
from labelwheel.lead.coverage import cluster_pool, default_n_clusters
from labelwheel.pool import Pool
from labelwheel.semisup import DEFAULT_SEMI

REASONS = ("anomaly", "uncovered cluster", "uncertain")
VIEW_PREFIX = "labelwheel: next"


@dataclass
class Pick:
    """One task to label, most informative first (``rank`` 1 = first)."""

    rank: int
    task_id: int
    ref: str
    reason: str
    bits: float
    utility: float
    cost: float | None
    cluster: int
    predicted: str | None = None
    confidence: float | None = None


@dataclass
class Plan:
    """A budget plan: the picks, their total cost and what they were chosen from."""

    strategy: str
    budget: int
    picks: list[Pick]
    pool_size: int
    unlabeled: int
    labeled: int
    cost_per_label: float | None
    total_cost: float | None
    total_bits: float
    model_trained: bool
    notes: list[str] = field(default_factory=list)

    @property
    def view_title(self) -> str:
        """Title of the Data Manager view that holds the picks."""
        return f"{VIEW_PREFIX} {self.budget}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["view_title"] = self.view_title
        return out


def default_strategy() -> str:
    """``$LABELWHEEL_STRATEGY`` if set, else the selectors' default."""
    from labelwheel import selectors

    env = os.environ.get("LABELWHEEL_STRATEGY")
    if env:
        return env
    return str(getattr(selectors, "DEFAULT_STRATEGY", next(iter(selectors.STRATEGIES))))


def make_plan(
    pool: Pool,
    budget: int,
    *,
    strategy: str | None = None,
    cost_per_label: float | None = None,
    seed: int = 0,
    n_clusters: int | None = None,
    anomaly_fraction: float = 0.02,
) -> Plan:
    """Pick ``budget`` unlabelled items of the pool, most informative first.

    Raises ValueError for a budget below 1 or above the unlabelled pool, a negative cost, or an
    unknown strategy.
    """
    from labelwheel import selectors

    strategy = strategy or default_strategy()
    if strategy not in selectors.STRATEGIES:
        raise ValueError(
            f"unknown strategy {strategy!r}; use one of {', '.join(sorted(selectors.STRATEGIES))}"
        )
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
        raise ValueError(f"budget must be a positive whole number, got {budget!r}")
    if cost_per_label is not None and (not math.isfinite(cost_per_label) or cost_per_label < 0):
        raise ValueError("cost per label must be a non-negative number")
    labeled = pool.labeled_mask
    unlabeled_idx = np.flatnonzero(~labeled)
    if unlabeled_idx.size == 0:
        raise ValueError("nothing to plan: every item of the pool is already labelled")
    if budget > unlabeled_idx.size:
        raise ValueError(
            f"budget {budget} is larger than the unlabelled pool ({unlabeled_idx.size} items); "
            f"use --budget {unlabeled_idx.size} or less"
        )

    emb = pool.embeddings
    codes = pool.codes()
    n_classes = max(len(pool.classes), 2)
    lab_idx = np.flatnonzero(labeled & (codes >= 0))
    proba = (
        fit_probabilities(emb[lab_idx], codes[lab_idx], emb, n_classes) if lab_idx.size else None
    )
    notes: list[str] = []
    if proba is None:
        notes.append("no model yet (labels of fewer than two classes): cold-start selection")
        needs: frozenset[str] = getattr(selectors, "NEEDS_PROBABILITIES", frozenset())
        if strategy in needs:
            fallback = str(getattr(selectors, "DEFAULT_STRATEGY", "kcenter"))
            notes.append(
                f"strategy {strategy!r} needs a model's probabilities; used {fallback!r} instead"
            )
            strategy = fallback

    picked, utilities = selectors.select(
        strategy,
        int(budget),
        embeddings=emb,
        probabilities=proba,
        labeled=labeled,
        seed=seed,
        return_scores=True,
    )
    picked = np.asarray(picked, dtype=np.int64)
    utilities = np.asarray(utilities, dtype=np.float64)
    if picked.size != budget or labeled[picked].any():
        raise RuntimeError(  # a selector bug, not a user error
            f"selector {strategy!r} returned {picked.size} items for a budget of {budget}"
        )

    clusters = cluster_pool(emb, n_clusters or default_n_clusters(len(pool)), seed=seed)
    covered = set(clusters[labeled].tolist())
    scores = _filters.anomaly_scores(emb)
    n_anom = math.ceil(anomaly_fraction * len(pool)) if len(pool) >= 20 else 0
    anomalous = set(np.argsort(-scores, kind="stable")[:n_anom].tolist())
    if proba is not None:
        bits = _filters.information_bits(proba[picked])
    else:
        bits = np.full(picked.size, math.log2(n_classes))

    picks: list[Pick] = []
    for rank, (pos, util, b) in enumerate(zip(picked, utilities, bits, strict=True), start=1):
        pos = int(pos)
        if pos in anomalous:
            reason = "anomaly"
        elif int(clusters[pos]) not in covered:
            reason = "uncovered cluster"
        else:
            reason = "uncertain"
        predicted = confidence = None
        if proba is not None:
            k = int(np.argmax(proba[pos]))
            predicted, confidence = pool.classes[k], float(proba[pos, k])
        picks.append(
            Pick(
                rank=rank,
                task_id=int(pool.ids[pos]),
                ref=pool.refs[pos],
                reason=reason,
                bits=float(b),
                utility=float(util),
                cost=cost_per_label,
                cluster=int(clusters[pos]),
                predicted=predicted,
                confidence=confidence,
            )
        )
    return Plan(
        strategy=strategy,
        budget=int(budget),
        picks=picks,
        pool_size=len(pool),
        unlabeled=int(unlabeled_idx.size),
        labeled=int(labeled.sum()),
        cost_per_label=cost_per_label,
        total_cost=None if cost_per_label is None else cost_per_label * budget,
        total_bits=float(np.sum(bits)),
        model_trained=proba is not None,
        notes=notes,
    )


def view_payload(project_id: int, plan: Plan) -> dict[str, Any]:
    """The Data Manager view holding exactly the plan's tasks, ordered by rank.

    Label Studio can order a view by a column only, so the tasks carry their rank in the data
    field ``labelwheel_rank`` (written by :func:`write_plan_view`) and the view orders by it,
    numerically. The filter lists the task ids (``tasks:id`` ``equal``, joined with ``or``).
    """
    return ranked_view_payload(
        project_id, plan.view_title, [p.task_id for p in plan.picks], RANK_FIELD
    )


def ranked_view_payload(
    project_id: int, title: str, task_ids: Sequence[int], rank_field: str
) -> dict[str, Any]:
    """A Data Manager view holding exactly ``task_ids``, ordered by the data field
    ``rank_field`` (numeric, ascending: rank 1 first)."""
    items = [
        {"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": int(tid)}
        for tid in task_ids
    ]
    return {
        "project": project_id,
        "data": {
            "title": title,
            "ordering": [f"tasks:data.{rank_field}"],
            "filters": {"conjunction": "or", "items": items},
            "columnsDisplayType": {f"tasks:data.{rank_field}": "Number"},
            "type": "list",
            "target": "tasks",
        },
    }


RANK_FIELD = "labelwheel_rank"


def write_plan_view(
    client: Any, project_id: int, plan: Plan, tasks: list[dict[str, Any]]
) -> dict[str, Any]:
    """Write the plan to Label Studio: rank fields on the tasks, then one view (replacing earlier).

    ``tasks`` are the project's tasks as loaded (their data is kept; the rank field of tasks no
    longer picked is removed). Every other view titled ``labelwheel: next …`` is deleted, so
    re-running replaces the view rather than adding one. Returns the view.
    """
    view = write_ranked_view(
        client,
        project_id,
        tasks,
        title=plan.view_title,
        title_prefix=VIEW_PREFIX,
        rank_field=RANK_FIELD,
        ranked=[p.task_id for p in plan.picks],
    )
    assert view is not None  # a plan has at least one pick
    return view


def write_ranked_view(
    client: Any,
    project_id: int,
    tasks: list[dict[str, Any]],
    *,
    title: str,
    title_prefix: str,
    rank_field: str,
    ranked: Sequence[int],
    fields: Mapping[int, Mapping[str, Any]] | None = None,
    owned_fields: Sequence[str] = (),
) -> dict[str, Any] | None:
    """Write a ranked list of tasks to Label Studio as one saved view, replacing earlier ones.

    ``ranked``: task ids, first = rank 1. Each gets its rank in the data field ``rank_field``
    and the extra data fields ``fields[task_id]``; on every other task of ``tasks`` (the
    project's tasks as loaded, whose data is kept) the rank field and ``owned_fields`` are
    removed, so no stale mark survives. Only tasks whose data changes are PATCHed. Views whose
    title starts with ``title_prefix`` are ours: the oldest is replaced (PUT), the others are
    deleted. With nothing ranked, our views are deleted and None is returned; else the view.
    """
    ranks = {int(tid): rank for rank, tid in enumerate(ranked, start=1)}
    ours_fields = (rank_field, *owned_fields)
    extra = fields or {}
    for task in tasks:
        tid = int(task["id"])
        old_data = dict(task.get("data") or {})
        data = {k: v for k, v in old_data.items() if k not in ours_fields}
        if tid in ranks:
            data[rank_field] = ranks[tid]
            data.update(extra.get(tid, {}))
        if data != old_data:
            client.request("PATCH", f"/api/tasks/{tid}", json={"data": data})
    ours = sorted(
        (
            v
            for v in client.list_views(project_id)
            if str((v.get("data") or {}).get("title", "")).startswith(title_prefix)
        ),
        key=lambda v: int(v["id"]),
    )
    if not ranks:
        for view in ours:
            client.request("DELETE", f"/api/dm/views/{view['id']}")
        return None
    payload = ranked_view_payload(project_id, title, list(ranks), rank_field)
    if ours:
        keep = ours[0]
        for stale in ours[1:]:
            client.request("DELETE", f"/api/dm/views/{stale['id']}")
        view = client.request("PUT", f"/api/dm/views/{keep['id']}", json=payload).json()
    else:
        view = client.request("POST", "/api/dm/views", json=payload).json()
    return dict(view)


def fit_probabilities(
    x_train: np.ndarray, y_train: np.ndarray, x_pool: np.ndarray, n_classes: int
) -> np.ndarray | None:
    """The product's head trained on the labelled rows (standardised with the pool's statistics,
    semi-supervised on the pool as the backend's default head is):
    ``(len(x_pool), n_classes)`` probabilities, or None before two classes have labels."""
    if x_pool.shape[0] == 0:
        return None
    try:
        head = fit_codes(
            x_train,
            y_train,
            n_classes,
            config=HeadConfig(semi_supervised=DEFAULT_SEMI),
            scaling=Scaling.of(x_pool),
            pool=x_pool,
        )
    except NotEnoughLabels:
        return None
    return head.predict_proba(x_pool)
