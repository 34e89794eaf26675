"""Glue shared by the CLI and the dashboard: history and acceptance from wherever they exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labelwheel.lead.forecast import (
    MIN_POINTS,
    CurvePoint,
    history_from_versions,
    learning_curve,
)
from labelwheel.lead.report import AcceptanceRow, acceptance_from_store, acceptance_from_tasks
from labelwheel.pool import Pool
from labelwheel.records import BackendRecord, open_record

HISTORY_CHOICES = ("auto", "versions", "cv")


def open_store(model_dir: Path | str | None) -> BackendRecord | None:
    """The ML backend's record in ``model_dir``, read-only, if one exists there (never creates
    one); see :mod:`labelwheel.records`."""
    return open_record(model_dir)


def accuracy_history(
    pool: Pool, store: Any = None, *, prefer: str = "auto", seed: int = 0
) -> tuple[list[CurvePoint], str]:
    """Accuracy against label count, and where it came from (``versions`` or ``cv``).

    ``auto``: the project's model versions when the backend recorded at least
    :data:`~labelwheel.lead.forecast.MIN_POINTS` of them, else a cross-validated learning curve
    on the labels present.
    """
    if prefer not in HISTORY_CHOICES:
        raise ValueError(f"history must be one of {', '.join(HISTORY_CHOICES)}")
    if prefer in ("auto", "versions") and store is not None and pool.project_id is not None:
        points = history_from_versions(store.versions(pool.project_id))
        if prefer == "versions" or len({p.n_labels for p in points}) >= MIN_POINTS:
            return points, "versions"
    if prefer == "versions":
        return [], "versions"
    mask = pool.labeled_mask & (pool.codes() >= 0)
    codes = pool.codes()[mask]
    return learning_curve(pool.embeddings[mask], codes, seed=seed), "cv"


def acceptance_rows(pool: Pool, store: Any = None) -> list[AcceptanceRow]:
    """Acceptance per version: the backend's record if it has one, else Label Studio's."""
    if pool.project_id is None:
        return []
    if store is not None:
        rows = acceptance_from_store(store, pool.project_id)
        if rows:
            return rows
    if not pool.tasks:
        return []
    from labelwheel.label_config import parse_classification_config

    xml = pool.label_config or ""
    if not xml:
        return []
    return acceptance_from_tasks(pool.tasks, parse_classification_config(xml))
