"""Durable state of the ML backend: SQLite in WAL mode under ``MODEL_DIR``.

Tables: ``projects`` (label config, Label Studio host, retrain counter), ``annotations`` (one row
per Label Studio annotation, soft-deleted, with Label Studio's ``updated_at``),
``annotation_tombstones`` (ids Label Studio deleted: a late create/update never brings them
back), ``events`` (a small summary of each webhook, see :mod:`labelwheel.ml_backend.events`,
kept under a retention rule), ``versions`` (good model versions with metrics and artifact path),
``training_runs`` (every training attempt, failed ones too), ``training_queue`` (trainings that
were acknowledged and have not finished: replayed at start-up) and ``image_refs`` (image
reference -> content hash, so a pool refresh does not fetch images it has embedded before).

Annotation webhooks are applied in Label Studio's order, not in arrival order: an event whose
``updated_at`` is older than the stored one is ignored (``stale``), an equal one is a
``duplicate`` (nothing changes, the retrain counter does not move), and an id with a tombstone
stays deleted (Label Studio never reuses annotation ids).

Writes use ``synchronous=FULL``: a write has reached the disk when the call returns, so an
annotation acknowledged with 200 survives a ``kill -9`` or a power cut. One connection per thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelwheel.ml_backend.events import EventLog
from labelwheel.ml_backend.store_control import ControlSlices
from labelwheel.ml_backend.store_images import ImageRefs, ref_key
from labelwheel.ml_backend.store_training import TrainingState, Version, version_name
from labelwheel.records import DB_FILENAME, FeedbackCounts, read_feedback_counts

__all__ = ["Annotation", "AnnotationWrite", "Store", "Version", "ref_key", "version_name"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY,
    label_config TEXT,
    hostname TEXT,
    pending_changes INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL,
    project_id INTEGER NOT NULL,
    labels TEXT NOT NULL,
    image_ref TEXT,
    was_cancelled INTEGER NOT NULL DEFAULT 0,
    feedback TEXT,
    prediction_version TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS annotations_project ON annotations (project_id, deleted);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received REAL NOT NULL,
    action TEXT NOT NULL,
    project_id INTEGER,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    project_id INTEGER NOT NULL,
    number INTEGER NOT NULL,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    n_labels INTEGER NOT NULL,
    cv_accuracy REAL,
    metrics TEXT NOT NULL,
    artifact TEXT NOT NULL,
    PRIMARY KEY (project_id, number)
);
CREATE TABLE IF NOT EXISTS training_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL,
    error TEXT,
    version TEXT
);
CREATE TABLE IF NOT EXISTS image_refs (
    ref_key TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS annotation_tombstones (
    id INTEGER PRIMARY KEY,
    project_id INTEGER,
    deleted REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS training_queue (
    project_id INTEGER PRIMARY KEY,
    requested REAL NOT NULL,
    requests INTEGER NOT NULL DEFAULT 1,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS control_tasks (
    project_id INTEGER NOT NULL,
    version TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (project_id, version, task_id)
);
CREATE TABLE IF NOT EXISTS control_pools (
    project_id INTEGER NOT NULL,
    version TEXT NOT NULL,
    n INTEGER NOT NULL,
    mean REAL NOT NULL,
    var REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (project_id, version)
);
CREATE INDEX IF NOT EXISTS events_received ON events (received);
"""

MIGRATIONS = (
    # (table, column, definition) added to databases made by earlier releases
    ("annotations", "ls_updated_us", "INTEGER"),
    # the version's calibrated confidence in a control task's pre-label (PPI estimate)
    ("control_tasks", "confidence", "REAL"),
)

ANNOTATION_OUTCOMES = ("stored", "duplicate", "stale", "deleted")
"""What :meth:`Store.apply_annotation` did: stored it (new or newer), nothing (the same event
again), nothing (older than the stored state), nothing (the id was deleted in Label Studio)."""


@dataclass(frozen=True)
class Annotation:
    """One stored annotation."""

    id: int
    task_id: int
    project_id: int
    labels: tuple[str, ...]
    image_ref: str | None
    was_cancelled: bool
    feedback: str | None
    prediction_version: str | None
    created: float
    updated: float
    deleted: bool
    ls_updated_us: int | None = None
    """Label Studio's ``updated_at`` in microseconds since the epoch, when the event had it."""

    @property
    def order_key(self) -> tuple[float, int]:
        """Which of two annotations of a task is newer: Label Studio's time, else arrival."""
        if self.ls_updated_us is not None:
            return (self.ls_updated_us / 1e6, self.id)
        return (self.updated, self.id)


@dataclass(frozen=True)
class AnnotationWrite:
    """The result of :meth:`Store.apply_annotation`."""

    outcome: str  # one of ANNOTATION_OUTCOMES
    pending: int  # the project's annotation changes since the last training started


class Store(EventLog, TrainingState, ControlSlices, ImageRefs):
    """Thread-safe access to the backend's SQLite database (one connection per thread)."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.model_dir / DB_FILENAME
        self._local = threading.local()
        self._connections: dict[int, tuple[threading.Thread, sqlite3.Connection]] = {}
        self._lock = threading.Lock()
        conn = self._conn()
        conn.executescript(SCHEMA)
        for table, column, definition in MIGRATIONS:
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                try:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                except sqlite3.OperationalError as exc:  # added meanwhile by another opener
                    if "duplicate column" not in str(exc):
                        raise

    # -- connections -------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                # A thread-per-request server makes a thread per request: the connection of a
                # thread that has finished goes to this one (opening one costs ~0.5 ms), or is
                # closed when another took it already.
                for ident, (thread, old) in list(self._connections.items()):
                    if thread.is_alive():
                        continue
                    del self._connections[ident]
                    if conn is None and not old.in_transaction:
                        conn = old
                    else:
                        old.close()
            if conn is None:
                conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._connections[threading.get_ident()] = (threading.current_thread(), conn)
        return conn

    def _open(self) -> sqlite3.Connection:
        # check_same_thread=False so that a connection can pass from a finished thread to a new
        # one and be closed from here; each is used by one thread at a time.
        conn = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``), committed on success, rolled back on error."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Run a read query and return all rows."""
        return list(self._conn().execute(sql, params).fetchall())

    def close(self) -> None:
        """Close every connection this store opened (call once, at shutdown)."""
        with self._lock:
            for _thread, conn in self._connections.values():
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()

    # -- projects -----------------------------------------------------------------------------

    def upsert_project(
        self, project_id: int, label_config: str | None = None, hostname: str | None = None
    ) -> None:
        """Create the project row or update the given fields."""
        now = time.time()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO projects (id, label_config, hostname, created, updated) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "label_config = COALESCE(excluded.label_config, label_config), "
                "hostname = COALESCE(excluded.hostname, hostname), updated = excluded.updated",
                (project_id, label_config, hostname, now, now),
            )

    def remember_label_config(self, project_id: int, xml: str) -> None:
        """Store a project's label config (creating the project row) unless it is the one
        stored already: a repeated config costs a read, not a durable write."""
        row = self.get_project(project_id)
        if row is None or row.get("label_config") != xml:
            self.upsert_project(project_id, label_config=xml)

    def get_project(self, project_id: int) -> dict[str, Any] | None:
        """The project row as a dict, or None."""
        rows = self.query("SELECT * FROM projects WHERE id = ?", (project_id,))
        return dict(rows[0]) if rows else None

    def project_ids(self) -> list[int]:
        """Ids of every known project."""
        return [int(r["id"]) for r in self.query("SELECT id FROM projects ORDER BY id")]

    def take_pending_changes(self, project_id: int) -> int:
        """Read and reset the count of annotation changes since the last training started."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT pending_changes FROM projects WHERE id = ?", (project_id,)
            ).fetchone()
            conn.execute("UPDATE projects SET pending_changes = 0 WHERE id = ?", (project_id,))
        return int(row[0]) if row else 0

    # -- events and annotations -------------------------------------------------------------

    def apply_annotation(
        self,
        *,
        annotation_id: int,
        task_id: int,
        project_id: int,
        labels: list[str],
        image_ref: str | None,
        was_cancelled: bool,
        feedback: str | None,
        prediction_version: str | None,
        action: str,
        payload: dict[str, Any] | None,
        ls_updated_us: int | None = None,
    ) -> AnnotationWrite:
        """Durably apply one annotation event in Label Studio's order (see the module doc).

        ``ls_updated_us`` is the event's ``annotation.updated_at`` (:func:`parse_ls_timestamp`);
        without it (``/train`` of older Label Studio versions) the event is applied unless it
        repeats the stored state exactly. Called before the webhook is acknowledged: when this
        returns, the row (and the event's summary) is on disk.
        """
        now = time.time()
        labels_json = json.dumps(list(labels))
        outcome = "stored"
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO projects (id, created, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO NOTHING",
                (project_id, now, now),
            )
            row = conn.execute(
                "SELECT * FROM annotations WHERE id = ?", (annotation_id,)
            ).fetchone()
            tomb = conn.execute(
                "SELECT 1 FROM annotation_tombstones WHERE id = ?", (annotation_id,)
            ).fetchone()
            if tomb is not None or (row is not None and row["deleted"]):
                outcome = "deleted"
            elif row is not None:
                stored_us = row["ls_updated_us"]
                if ls_updated_us is not None and stored_us is not None:
                    if ls_updated_us < stored_us:
                        outcome = "stale"
                    elif ls_updated_us == stored_us:
                        outcome = "duplicate"
                elif (
                    ls_updated_us == stored_us  # both unknown
                    and row["labels"] == labels_json
                    and row["task_id"] == task_id
                    and row["project_id"] == project_id
                    and bool(row["was_cancelled"]) == bool(was_cancelled)
                    and row["feedback"] == feedback
                    and row["prediction_version"] == prediction_version
                    and (image_ref is None or row["image_ref"] == image_ref)
                ):
                    outcome = "duplicate"
            if outcome == "stored":
                conn.execute(
                    "INSERT INTO annotations (id, task_id, project_id, labels, image_ref, "
                    "was_cancelled, feedback, prediction_version, created, updated, deleted, "
                    "ls_updated_us) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,0,?) ON CONFLICT(id) DO UPDATE SET "
                    "task_id=excluded.task_id, project_id=excluded.project_id, "
                    "labels=excluded.labels, image_ref=COALESCE(excluded.image_ref, image_ref),"
                    " was_cancelled=excluded.was_cancelled, feedback=excluded.feedback,"
                    " prediction_version=excluded.prediction_version, updated=excluded.updated,"
                    " ls_updated_us=COALESCE(excluded.ls_updated_us, ls_updated_us)",
                    (
                        annotation_id,
                        task_id,
                        project_id,
                        labels_json,
                        image_ref,
                        int(was_cancelled),
                        feedback,
                        prediction_version,
                        now,
                        now,
                        ls_updated_us,
                    ),
                )
                conn.execute(
                    "UPDATE projects SET pending_changes = pending_changes + 1 WHERE id = ?",
                    (project_id,),
                )
            if payload is not None:
                self._log_event(conn, action, project_id, payload, now, outcome=outcome)
            got = conn.execute(
                "SELECT pending_changes FROM projects WHERE id = ?", (project_id,)
            ).fetchone()
        self._maybe_prune()
        return AnnotationWrite(outcome, int(got[0]))

    def delete_annotations(
        self, project_id: int | None, annotation_ids: list[int], payload: dict[str, Any] | None
    ) -> tuple[int, dict[int, int]]:
        """Mark annotations deleted and leave a tombstone for every id (known or not yet: a
        create that arrives after its delete stays deleted); returns (how many live ones were
        deleted, pending changes per project)."""
        now = time.time()
        pending: dict[int, int] = {}
        found = 0
        with self.transaction() as conn:
            if payload is not None:
                self._log_event(conn, "ANNOTATIONS_DELETED", project_id, payload, now)
            for ann_id in annotation_ids:
                row = conn.execute(
                    "SELECT project_id, deleted FROM annotations WHERE id = ?", (ann_id,)
                ).fetchone()
                owner = int(row[0]) if row is not None else project_id
                conn.execute(
                    "INSERT OR IGNORE INTO annotation_tombstones (id, project_id, deleted) "
                    "VALUES (?, ?, ?)",
                    (ann_id, owner, now),
                )
                if row is None or row[1]:
                    continue
                found += 1
                conn.execute(
                    "UPDATE annotations SET deleted = 1, updated = ? WHERE id = ?", (now, ann_id)
                )
                conn.execute(
                    "UPDATE projects SET pending_changes = pending_changes + 1 WHERE id = ?",
                    (row[0],),
                )
                pending[int(row[0])] = 0
            for pid in pending:
                got = conn.execute(
                    "SELECT pending_changes FROM projects WHERE id = ?", (pid,)
                ).fetchone()
                pending[pid] = int(got[0]) if got else 0
        self._maybe_prune()
        return found, pending

    @staticmethod
    def _annotation(row: sqlite3.Row) -> Annotation:
        return Annotation(
            id=int(row["id"]),
            task_id=int(row["task_id"]),
            project_id=int(row["project_id"]),
            labels=tuple(json.loads(row["labels"])),
            image_ref=row["image_ref"],
            was_cancelled=bool(row["was_cancelled"]),
            feedback=row["feedback"],
            prediction_version=row["prediction_version"],
            created=float(row["created"]),
            updated=float(row["updated"]),
            deleted=bool(row["deleted"]),
            ls_updated_us=None if row["ls_updated_us"] is None else int(row["ls_updated_us"]),
        )

    def annotations(self, project_id: int, include_deleted: bool = False) -> list[Annotation]:
        """Annotations of a project, oldest first."""
        sql = "SELECT * FROM annotations WHERE project_id = ?"
        if not include_deleted:
            sql += " AND deleted = 0"
        return [self._annotation(r) for r in self.query(sql + " ORDER BY id", (project_id,))]

    def get_annotation(self, annotation_id: int) -> Annotation | None:
        """One annotation by id (deleted ones too), or None."""
        rows = self.query("SELECT * FROM annotations WHERE id = ?", (annotation_id,))
        return self._annotation(rows[0]) if rows else None

    def training_set(self, project_id: int) -> list[Annotation]:
        """Annotations that train the model: not deleted, not cancelled, with labels.

        When a task has several annotations the newest wins.
        """
        latest: dict[int, Annotation] = {}
        for ann in self.annotations(project_id):
            if ann.was_cancelled or not ann.labels:
                continue
            prev = latest.get(ann.task_id)
            if prev is None or ann.order_key >= prev.order_key:
                latest[ann.task_id] = ann
        return sorted(latest.values(), key=lambda a: a.id)

    def labelled_task_ids(self, project_id: int) -> set[int]:
        """Tasks with at least one live annotation (cancelled ones count: they left the queue)."""
        rows = self.query(
            "SELECT DISTINCT task_id FROM annotations WHERE project_id = ? AND deleted = 0",
            (project_id,),
        )
        return {int(r[0]) for r in rows}

    def feedback_counts(self, project_id: int | None = None) -> FeedbackCounts:
        """(project, prediction version) -> {"approval": n, "correction": n}, live annotations."""
        return read_feedback_counts(self.query, project_id)

    def label_counts(self, project_id: int) -> dict[str, int]:
        """Label -> number of training annotations carrying it."""
        counts: dict[str, int] = {}
        for ann in self.training_set(project_id):
            for label in ann.labels:
                counts[label] = counts.get(label, 0) + 1
        return counts
