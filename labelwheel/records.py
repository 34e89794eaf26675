"""The backend's record of a project, read without the backend: model versions and feedback.

The ML backend keeps its state in ``MODEL_DIR/labelwheel.sqlite3``
(:class:`labelwheel.ml_backend.store.Store` writes it). The data-lead tools and the dashboard
read two things from it: the model versions (accuracy against labels over time) and the feedback
on pre-labels (approvals and corrections per version). Both readers go through this module, so
the queries live in one place and the lead floor never imports the web server's rooms:

- :func:`read_versions` and :func:`read_feedback_counts` take any ``query(sql, params)``
  callable (the backend's store passes its own connection);
- :class:`BackendRecord` opens the database **read-only** (SQLite ``mode=ro``), so a lead tool
  run beside a live backend neither writes, nor migrates, nor takes the ``MODEL_DIR`` lock.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DB_FILENAME",
    "BackendRecord",
    "ControlConfidence",
    "ControlLabel",
    "FeedbackCounts",
    "LabelledPart",
    "LabelledTask",
    "PoolConfidence",
    "Version",
    "open_record",
    "read_control_confidence",
    "read_control_feedback",
    "read_feedback_counts",
    "read_labelling_order",
    "read_versions",
    "version_name",
]

DB_FILENAME = "labelwheel.sqlite3"
"""The backend's database file inside ``MODEL_DIR``."""

QueryFn = Callable[[str, tuple[Any, ...]], Sequence[Any]]
FeedbackCounts = dict[tuple[int, str], dict[str, int]]
"""(project, prediction version) -> {"approval": n, "correction": n}."""


@dataclass(frozen=True)
class Version:
    """One good model version of a project."""

    project_id: int
    number: int
    name: str
    created: float
    n_labels: int
    cv_accuracy: float | None
    metrics: dict[str, Any]
    artifact: str


def version_name(number: int) -> str:
    """The public name of version ``number`` (``v1``, ``v2``, ...)."""
    return f"v{number}"


def version_from_row(row: Any) -> Version:
    """A :class:`Version` from a row of the ``versions`` table (``sqlite3.Row``)."""
    return Version(
        project_id=int(row["project_id"]),
        number=int(row["number"]),
        name=str(row["name"]),
        created=float(row["created"]),
        n_labels=int(row["n_labels"]),
        cv_accuracy=None if row["cv_accuracy"] is None else float(row["cv_accuracy"]),
        metrics=json.loads(row["metrics"]),
        artifact=str(row["artifact"]),
    )


def read_versions(query: QueryFn, project_id: int | None = None) -> list[Version]:
    """Good versions, oldest first (of one project, or all)."""
    if project_id is None:
        rows = query("SELECT * FROM versions ORDER BY project_id, number", ())
    else:
        rows = query(
            "SELECT * FROM versions WHERE project_id = ? ORDER BY number", (int(project_id),)
        )
    return [version_from_row(r) for r in rows]


def read_feedback_counts(query: QueryFn, project_id: int | None = None) -> FeedbackCounts:
    """(project, prediction version) -> {"approval": n, "correction": n}, live annotations."""
    sql = (
        "SELECT project_id, prediction_version, feedback, COUNT(*) FROM annotations "
        "WHERE deleted = 0 AND feedback IS NOT NULL"
    )
    params: tuple[Any, ...] = ()
    if project_id is not None:
        sql += " AND project_id = ?"
        params = (int(project_id),)
    out: FeedbackCounts = {}
    for row in query(sql + " GROUP BY 1, 2, 3", params):
        key = (int(row[0]), str(row[1] or ""))
        out.setdefault(key, {"approval": 0, "correction": 0})[str(row[2])] = int(row[3])
    return out


ControlFeedback = dict[str, dict[str, dict[str, int]]]
"""version -> {"control" | "selected" -> {"approval": n, "correction": n}} (one project)."""


def read_control_feedback(query: QueryFn, project_id: int) -> ControlFeedback:
    """Feedback on pre-labels per version, split into control tasks (the version's random control
    slice, table ``control_tasks``) and selected tasks (the rest), live annotations. A database
    without the table (written before control slices existed) has only selected tasks."""
    sql = (
        "SELECT a.prediction_version, a.feedback, c.task_id IS NOT NULL, COUNT(*) "
        "FROM annotations a LEFT JOIN control_tasks c ON c.project_id = a.project_id "
        "AND c.version = a.prediction_version AND c.task_id = a.task_id "
        "WHERE a.deleted = 0 AND a.feedback IS NOT NULL AND a.project_id = ? "
        "AND a.prediction_version IS NOT NULL GROUP BY 1, 2, 3"
    )
    try:
        rows = query(sql, (int(project_id),))
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        rows = [
            (version, kind, 0, n)
            for (pid, version), counts in read_feedback_counts(query, project_id).items()
            if pid == int(project_id) and version
            for kind, n in counts.items()
        ]
    out: ControlFeedback = {}
    for version, feedback, is_control, n in rows:
        per = out.setdefault(
            str(version),
            {
                "control": {"approval": 0, "correction": 0},
                "selected": {"approval": 0, "correction": 0},
            },
        )
        per["control" if is_control else "selected"][str(feedback)] += int(n)
    return out


@dataclass(frozen=True)
class ControlLabel:
    """One annotation on a control task: the version that served the pre-label, whether the
    annotator approved it unchanged, and the version's calibrated confidence in it (None: not
    recorded, e.g. a database written before confidences were)."""

    version: str
    correct: bool
    confidence: float | None


@dataclass(frozen=True)
class PoolConfidence:
    """A version's confidence in its pre-labels over the unlabelled pool at its last ranking:
    ``n`` tasks, their ``mean`` and (population) ``var``."""

    n: int
    mean: float
    var: float


@dataclass(frozen=True)
class LabelledPart:
    """A version's labelled share of the data: the ``n`` labels it was trained on and its
    cross-validated ``accuracy`` on them (out-of-fold; None when it could not be measured)."""

    n: int
    accuracy: float | None


@dataclass(frozen=True)
class ControlConfidence:
    """What the prediction-powered and data-wide estimates (:mod:`labelwheel.lead.honest`)
    read: every annotation on a control task, the pool statistics of each version, and each
    version's labelled share (from the ``versions`` table)."""

    labels: list[ControlLabel]
    pools: dict[str, PoolConfidence]
    labelled: dict[str, LabelledPart] = field(default_factory=dict)


def read_control_confidence(query: QueryFn, project_id: int) -> ControlConfidence:
    """Control labels (live annotations with feedback on a control task of the version that
    served them) with the recorded confidences, and the pool statistics per version (tables
    ``control_tasks`` and ``control_pools``). An older database without them reads as fewer
    labels, no confidences, or no pools: the estimate then falls back to the plain proportion."""
    pid = int(project_id)
    labels: list[ControlLabel] = []
    pools: dict[str, PoolConfidence] = {}
    base = (
        "FROM annotations a JOIN control_tasks c ON c.project_id = a.project_id "
        "AND c.version = a.prediction_version AND c.task_id = a.task_id "
        "WHERE a.deleted = 0 AND a.feedback IS NOT NULL AND a.project_id = ? "
        "ORDER BY a.id"
    )
    try:
        rows = query(f"SELECT a.prediction_version, a.feedback, c.confidence {base}", (pid,))
    except sqlite3.OperationalError as exc:
        if "no such column" in str(exc):
            rows = query(f"SELECT a.prediction_version, a.feedback, NULL {base}", (pid,))
        elif "no such table" in str(exc):
            rows = []
        else:
            raise
    for version, feedback, confidence in rows:
        labels.append(
            ControlLabel(
                str(version),
                str(feedback) == "approval",
                None if confidence is None else float(confidence),
            )
        )
    pool_rows = _rows_or_none(
        query, "SELECT version, n, mean, var FROM control_pools WHERE project_id = ?", (pid,)
    )
    for version, n, mean, var in pool_rows:
        pools[str(version)] = PoolConfidence(int(n), float(mean), float(var))
    version_rows = _rows_or_none(
        query, "SELECT name, n_labels, cv_accuracy FROM versions WHERE project_id = ?", (pid,)
    )
    labelled = {
        str(name): LabelledPart(int(n), None if acc is None else float(acc))
        for name, n, acc in version_rows
    }
    return ControlConfidence(labels, pools, labelled)


def _rows_or_none(query: QueryFn, sql: str, params: tuple[Any, ...]) -> Sequence[Any]:
    """The rows of ``sql``, or none when its table does not exist (an older database)."""
    try:
        return query(sql, params)
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return []


@dataclass(frozen=True)
class LabelledTask:
    """A task as it was first labelled: whether on a control task of the version that served
    it (a random pick), and the labels chosen."""

    task_id: int
    control: bool
    labels: tuple[str, ...]


def read_labelling_order(query: QueryFn, project_id: int) -> list[LabelledTask]:
    """Every labelled task of a project once, in the order it was first labelled (live,
    non-cancelled annotations, by arrival), with whether that annotation was made on a control
    task of the version that served it (as in :func:`read_control_confidence`) and its labels.
    A database without the control table reads as no control labels."""
    base = (
        "FROM annotations a {join} WHERE a.deleted = 0 AND a.was_cancelled = 0 "
        "AND a.project_id = ? ORDER BY a.created, a.id"
    )
    join = (
        "LEFT JOIN control_tasks c ON c.project_id = a.project_id "
        "AND c.version = a.prediction_version AND c.task_id = a.task_id"
    )
    pid = (int(project_id),)
    try:
        rows = query(
            f"SELECT a.task_id, c.task_id IS NOT NULL, a.labels {base.format(join=join)}", pid
        )
    except sqlite3.OperationalError as exc:
        if "no such table: control_tasks" not in str(exc):
            raise
        rows = query(f"SELECT a.task_id, 0, a.labels {base.format(join='')}", pid)
    seen: set[int] = set()
    order: list[LabelledTask] = []
    for task_id, control, labels in rows:
        if int(task_id) not in seen:
            seen.add(int(task_id))
            order.append(LabelledTask(int(task_id), bool(control), tuple(json.loads(labels))))
    return order


class BackendRecord:
    """Read-only view of a backend's database (one connection; not shared across threads)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, timeout=30.0)
        self._conn.row_factory = sqlite3.Row

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Run a read query and return all rows."""
        return list(self._conn.execute(sql, params).fetchall())

    def versions(self, project_id: int | None = None) -> list[Version]:
        """Good versions, oldest first (see :func:`read_versions`)."""
        return read_versions(self.query, project_id)

    def feedback_counts(self, project_id: int | None = None) -> FeedbackCounts:
        """Approvals and corrections per version (see :func:`read_feedback_counts`)."""
        return read_feedback_counts(self.query, project_id)

    def control_feedback(self, project_id: int) -> ControlFeedback:
        """Feedback per version on control and selected tasks (see
        :func:`read_control_feedback`)."""
        return read_control_feedback(self.query, project_id)

    def control_confidence(self, project_id: int) -> ControlConfidence:
        """Control labels with confidences and pool statistics (see
        :func:`read_control_confidence`)."""
        return read_control_confidence(self.query, project_id)

    def labelling_order(self, project_id: int) -> list[LabelledTask]:
        """Labelled tasks in labelling order, control or not (see :func:`read_labelling_order`)."""
        return read_labelling_order(self.query, project_id)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def open_record(model_dir: Path | str | None) -> BackendRecord | None:
    """The backend's record in ``model_dir`` if a database exists there (never creates one)."""
    if not model_dir:
        return None
    path = Path(model_dir).expanduser() / DB_FILENAME
    if not path.is_file():
        return None
    return BackendRecord(path)
