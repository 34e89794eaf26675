"""Training state in the store: good versions, training runs and the durable training queue.

A mixin of :class:`labelwheel.ml_backend.store.Store` (which provides the connection).

The training queue makes an acknowledged ``START_TRAINING`` (or an automatic retrain) survive a
``kill -9``: the request is a row in ``training_queue`` before the webhook is answered; the
row is deleted only when a training that started after the last request has ended (ok, skipped
or failed). At start-up the worker re-queues every row; a row whose trainings were interrupted
:data:`MAX_ATTEMPTS` times in a row (a training that kills the process) is dropped and recorded
as a failed run, so a crash loop ends.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from labelwheel.records import Version, read_versions, version_from_row, version_name

__all__ = ["MAX_ATTEMPTS", "TrainingState", "Version", "version_name"]

MAX_ATTEMPTS = 3
"""Interrupted attempts after which an owed training is given up."""


class TrainingState:
    """Versions, runs and the training queue (mixed into ``Store``)."""

    if TYPE_CHECKING:  # provided by Store

        def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]: ...

    # -- versions and training runs ---------------------------------------------------------

    def start_run(self, project_id: int) -> int:
        """Record that a training of ``project_id`` started; returns the run id."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO training_runs (project_id, started, status) VALUES (?, ?, 'running')",
                (project_id, time.time()),
            )
            return int(cur.lastrowid or 0)

    def finish_run(
        self, run_id: int, status: str, error: str | None = None, version: str | None = None
    ) -> None:
        """Record the outcome of a training run (``ok``, ``failed`` or ``skipped``)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE training_runs SET finished = ?, status = ?, error = ?, version = ? "
                "WHERE id = ?",
                (time.time(), status, error, version, run_id),
            )

    def runs(self, project_id: int | None = None) -> list[dict[str, Any]]:
        """Training runs, newest first. Runs still marked running after a restart were killed."""
        sql = "SELECT * FROM training_runs"
        params: tuple[Any, ...] = ()
        if project_id is not None:
            sql += " WHERE project_id = ?"
            params = (project_id,)
        return [dict(r) for r in self.query(sql + " ORDER BY id DESC", params)]

    def mark_interrupted_runs(self) -> int:
        """At start-up: runs left 'running' by a killed process become 'interrupted'."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE training_runs SET status = 'interrupted', finished = ? "
                "WHERE status = 'running'",
                (time.time(),),
            )
            return int(cur.rowcount)

    def next_version_number(self, project_id: int) -> int:
        """The number the next good version of the project will get."""
        row = self.query(
            "SELECT COALESCE(MAX(number), 0) FROM versions WHERE project_id = ?", (project_id,)
        )
        return int(row[0][0]) + 1

    def add_version(
        self,
        project_id: int,
        number: int,
        n_labels: int,
        cv_accuracy: float | None,
        metrics: dict[str, Any],
        artifact: str,
        run_id: int | None = None,
    ) -> Version:
        """Record a good version (call after its artifact is on disk). With ``run_id``, the
        training run that made it is marked ``ok`` in the same transaction, so nobody ever sees
        the new version beside a run still marked running."""
        now = time.time()
        name = version_name(number)
        with self.transaction() as conn:
            if run_id is not None:
                conn.execute(
                    "UPDATE training_runs SET finished = ?, status = 'ok', error = NULL, "
                    "version = ? WHERE id = ?",
                    (now, name, run_id),
                )
            conn.execute(
                "INSERT INTO versions (project_id, number, name, created, n_labels, cv_accuracy, "
                "metrics, artifact) VALUES (?,?,?,?,?,?,?,?)",
                (
                    project_id,
                    number,
                    name,
                    now,
                    n_labels,
                    cv_accuracy,
                    json.dumps(metrics),
                    artifact,
                ),
            )
        return Version(project_id, number, name, now, n_labels, cv_accuracy, metrics, artifact)

    def versions(self, project_id: int | None = None) -> list[Version]:
        """Good versions, oldest first (of one project, or all)."""
        return read_versions(self.query, project_id)

    def latest_version(self, project_id: int) -> Version | None:
        """The newest good version of a project, or None."""
        rows = self.query(
            "SELECT * FROM versions WHERE project_id = ? ORDER BY number DESC LIMIT 1",
            (project_id,),
        )
        return version_from_row(rows[0]) if rows else None

    # -- the durable training queue -----------------------------------------------------------

    def queue_training(self, project_id: int) -> None:
        """Record an acknowledged training request (before the acknowledgement is sent).

        Requests for a project already queued add to its row; the row stays until a training
        that started after the last request has finished (:meth:`training_finished`).
        """
        now = time.time()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO training_queue (project_id, requested, requests, attempts) "
                "VALUES (?, ?, 1, 0) ON CONFLICT(project_id) DO UPDATE SET "
                "requested = excluded.requested, requests = requests + 1, attempts = 0",
                (project_id, now),
            )

    def training_started(self, project_id: int) -> int:
        """A training of the project starts: count the attempt; returns a token for
        :meth:`training_finished` (0 when nothing was queued, e.g. a direct call)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE training_queue SET attempts = attempts + 1 WHERE project_id = ?",
                (project_id,),
            )
            row = conn.execute(
                "SELECT requests FROM training_queue WHERE project_id = ?", (project_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def training_finished(self, project_id: int, token: int) -> bool:
        """The training that returned ``token`` ended (ok, skipped or failed): the requests it
        served are done. Returns True when newer requests still owe a training."""
        with self.transaction() as conn:
            conn.execute(
                "DELETE FROM training_queue WHERE project_id = ? AND requests <= ?",
                (project_id, token),
            )
            row = conn.execute(
                "SELECT 1 FROM training_queue WHERE project_id = ?", (project_id,)
            ).fetchone()
        return row is not None

    def queued_trainings(self) -> list[tuple[int, int]]:
        """(project id, attempts started) of every training still owed, oldest request first."""
        rows = self.query("SELECT project_id, attempts FROM training_queue ORDER BY requested")
        return [(int(r[0]), int(r[1])) for r in rows]

    def drop_queued_training(self, project_id: int) -> None:
        """Forget a project's owed training (after repeated interrupted attempts)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM training_queue WHERE project_id = ?", (project_id,))
