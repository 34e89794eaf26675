"""Control slices in the store: which tasks were each version's random control tasks, with the
version's confidence in their pre-labels, and its confidence over the pool it ranked.

A mixin of :class:`labelwheel.ml_backend.store.Store` (which provides the connection); the
tables are in its schema. What the honest estimate reads (:mod:`labelwheel.lead.honest`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from labelwheel.records import (
    ControlConfidence,
    ControlFeedback,
    LabelledTask,
    PoolConfidence,
    read_control_confidence,
    read_control_feedback,
    read_labelling_order,
)

__all__ = ["ControlSlices"]


class ControlSlices:
    """Control tasks, their confidences and the pools' confidence (mixed into ``Store``)."""

    if TYPE_CHECKING:  # provided by Store

        def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]: ...

    def record_control_tasks(
        self,
        project_id: int,
        version: str,
        task_ids: list[int],
        confidence: Mapping[int, float] | None = None,
    ) -> int:
        """Remember that ``task_ids`` are in the random control slice of ``version``'s queue
        (:mod:`labelwheel.pool.control`), with the version's calibrated confidence in each
        task's pre-label where ``confidence`` has it (a task recorded without one gets it
        later; a recorded one is kept: the same version gives the same number); returns how
        many tasks were new."""
        if not task_ids:
            return 0
        now = time.time()
        conf = confidence or {}
        pid, name = int(project_id), str(version)
        with self.transaction() as conn:
            have = {
                int(r[0])
                for r in conn.execute(
                    "SELECT task_id FROM control_tasks WHERE project_id = ? AND version = ?",
                    (pid, name),
                )
            }
            conn.executemany(
                "INSERT INTO control_tasks (project_id, version, task_id, created, confidence) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (project_id, version, task_id) DO UPDATE "
                "SET confidence = COALESCE(control_tasks.confidence, excluded.confidence)",
                [
                    (pid, name, int(t), now, None if conf.get(t) is None else float(conf[t]))
                    for t in task_ids
                ],
            )
            return len({int(t) for t in task_ids} - have)

    def record_control_pool(self, project_id: int, version: str, pool: PoolConfidence) -> None:
        """The version's confidence over the unlabelled pool it ranked (its last ranking): what
        the PPI estimate averages (:func:`labelwheel.lead.honest.ppi_accuracy`); its ``n`` is
        also the unlabelled share of the data-wide estimate."""
        row = (int(pool.n), float(pool.mean), float(pool.var))
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO control_pools (project_id, version, n, mean, var, "
                "updated) VALUES (?, ?, ?, ?, ?, ?)",
                (int(project_id), str(version), *row, time.time()),
            )

    def control_task_ids(self, project_id: int, version: str) -> set[int]:
        """The control tasks recorded for a version of a project."""
        rows = self.query(
            "SELECT task_id FROM control_tasks WHERE project_id = ? AND version = ?",
            (int(project_id), str(version)),
        )
        return {int(r[0]) for r in rows}

    def control_feedback(self, project_id: int) -> ControlFeedback:
        """Feedback per version on control and on selected tasks (see
        :func:`labelwheel.records.read_control_feedback`)."""
        return read_control_feedback(self.query, project_id)

    def labelling_order(self, project_id: int) -> list[LabelledTask]:
        """Labelled tasks in labelling order, control or not (see
        :func:`labelwheel.records.read_labelling_order`)."""
        return read_labelling_order(self.query, project_id)

    def control_confidence(self, project_id: int) -> ControlConfidence:
        """Control labels with their confidences, and the pool statistics per version (see
        :func:`labelwheel.records.read_control_confidence`)."""
        return read_control_confidence(self.query, project_id)
