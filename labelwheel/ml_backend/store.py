"""Durable state of the ML backend: SQLite in WAL mode under ``MODEL_DIR``.

Tables: ``projects`` (label config, Label Studio host, retrain counter), ``annotations`` (one row
per Label Studio annotation, soft-deleted), ``events`` (raw webhook payloads), ``versions`` (good
model versions with metrics and artifact path), ``training_runs`` (every training attempt, failed
ones too) and ``image_refs`` (image reference -> content hash, so a pool refresh does not fetch
images it has embedded before).

Writes use ``synchronous=FULL``: a write has reached the disk when the call returns, so an
annotation acknowledged with 200 survives a ``kill -9`` or a power cut. One connection per thread.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
"""


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


def ref_key(ref: str) -> str:
    """Stable key of an image reference (URIs can be long: hash them)."""
    return hashlib.sha256(ref.encode("utf-8", "surrogatepass")).hexdigest()


class Store:
    """Thread-safe access to the backend's SQLite database (one connection per thread)."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.model_dir / "labelwheel.sqlite3"
        self._local = threading.local()
        self._connections: dict[int, tuple[threading.Thread, sqlite3.Connection]] = {}
        self._lock = threading.Lock()
        self._conn().executescript(SCHEMA)

    # -- connections -------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread=False only so that connections of finished threads can be
            # closed from here; each connection is used by its own thread alone.
            conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._lock:
                # a thread-per-request server makes a thread per request: close the
                # connections of threads that have finished
                for ident, (thread, old) in list(self._connections.items()):
                    if not thread.is_alive():
                        old.close()
                        del self._connections[ident]
                self._connections[threading.get_ident()] = (threading.current_thread(), conn)
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

    def record_annotation(
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
    ) -> int:
        """Durably store an annotation (and the raw event); returns the project's pending changes.

        Called before the webhook is acknowledged: when this returns the row is on disk.
        """
        now = time.time()
        with self.transaction() as conn:
            if payload is not None:
                conn.execute(
                    "INSERT INTO events (received, action, project_id, payload) VALUES (?,?,?,?)",
                    (now, action, project_id, json.dumps(payload)),
                )
            conn.execute(
                "INSERT INTO projects (id, created, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO NOTHING",
                (project_id, now, now),
            )
            conn.execute(
                "INSERT INTO annotations (id, task_id, project_id, labels, image_ref, "
                "was_cancelled, feedback, prediction_version, created, updated, deleted) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,0) ON CONFLICT(id) DO UPDATE SET "
                "task_id=excluded.task_id, project_id=excluded.project_id, labels=excluded.labels,"
                " image_ref=COALESCE(excluded.image_ref, image_ref),"
                " was_cancelled=excluded.was_cancelled, feedback=excluded.feedback,"
                " prediction_version=excluded.prediction_version, updated=excluded.updated,"
                " deleted=0",
                (
                    annotation_id,
                    task_id,
                    project_id,
                    json.dumps(list(labels)),
                    image_ref,
                    int(was_cancelled),
                    feedback,
                    prediction_version,
                    now,
                    now,
                ),
            )
            conn.execute(
                "UPDATE projects SET pending_changes = pending_changes + 1 WHERE id = ?",
                (project_id,),
            )
            row = conn.execute(
                "SELECT pending_changes FROM projects WHERE id = ?", (project_id,)
            ).fetchone()
        return int(row[0])

    def delete_annotations(
        self, project_id: int | None, annotation_ids: list[int], payload: dict[str, Any] | None
    ) -> tuple[int, dict[int, int]]:
        """Mark annotations deleted; returns (how many were known, pending changes per project)."""
        now = time.time()
        pending: dict[int, int] = {}
        found = 0
        with self.transaction() as conn:
            if payload is not None:
                conn.execute(
                    "INSERT INTO events (received, action, project_id, payload) VALUES (?,?,?,?)",
                    (now, "ANNOTATIONS_DELETED", project_id, json.dumps(payload)),
                )
            for ann_id in annotation_ids:
                row = conn.execute(
                    "SELECT project_id FROM annotations WHERE id = ? AND deleted = 0", (ann_id,)
                ).fetchone()
                if row is None:
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
        return found, pending

    def record_event(self, action: str, project_id: int | None, payload: dict[str, Any]) -> None:
        """Log a raw webhook payload."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO events (received, action, project_id, payload) VALUES (?,?,?,?)",
                (time.time(), action, project_id, json.dumps(payload)),
            )

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
            if prev is None or (ann.updated, ann.id) >= (prev.updated, prev.id):
                latest[ann.task_id] = ann
        return sorted(latest.values(), key=lambda a: a.id)

    def labelled_task_ids(self, project_id: int) -> set[int]:
        """Tasks with at least one live annotation (cancelled ones count: they left the queue)."""
        rows = self.query(
            "SELECT DISTINCT task_id FROM annotations WHERE project_id = ? AND deleted = 0",
            (project_id,),
        )
        return {int(r[0]) for r in rows}

    def feedback_counts(
        self, project_id: int | None = None
    ) -> dict[tuple[int, str], dict[str, int]]:
        """(project, prediction version) -> {"approval": n, "correction": n}, live annotations."""
        sql = (
            "SELECT project_id, prediction_version, feedback, COUNT(*) FROM annotations "
            "WHERE deleted = 0 AND feedback IS NOT NULL"
        )
        params: tuple[Any, ...] = ()
        if project_id is not None:
            sql += " AND project_id = ?"
            params = (project_id,)
        out: dict[tuple[int, str], dict[str, int]] = {}
        for row in self.query(sql + " GROUP BY 1, 2, 3", params):
            key = (int(row[0]), str(row[1] or ""))
            out.setdefault(key, {"approval": 0, "correction": 0})[str(row[2])] = int(row[3])
        return out

    def label_counts(self, project_id: int) -> dict[str, int]:
        """Label -> number of training annotations carrying it."""
        counts: dict[str, int] = {}
        for ann in self.training_set(project_id):
            for label in ann.labels:
                counts[label] = counts.get(label, 0) + 1
        return counts

    def event_count(self, action: str | None = None) -> int:
        """How many webhook events were logged (of one action, or all)."""
        if action is None:
            return int(self.query("SELECT COUNT(*) FROM events")[0][0])
        return int(self.query("SELECT COUNT(*) FROM events WHERE action = ?", (action,))[0][0])

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
    ) -> Version:
        """Record a good version (call after its artifact is on disk)."""
        now = time.time()
        name = version_name(number)
        with self.transaction() as conn:
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

    @staticmethod
    def _version(row: sqlite3.Row) -> Version:
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

    def versions(self, project_id: int | None = None) -> list[Version]:
        """Good versions, oldest first (of one project, or all)."""
        if project_id is None:
            rows = self.query("SELECT * FROM versions ORDER BY project_id, number")
        else:
            rows = self.query(
                "SELECT * FROM versions WHERE project_id = ? ORDER BY number", (project_id,)
            )
        return [self._version(r) for r in rows]

    def latest_version(self, project_id: int) -> Version | None:
        """The newest good version of a project, or None."""
        rows = self.query(
            "SELECT * FROM versions WHERE project_id = ? ORDER BY number DESC LIMIT 1",
            (project_id,),
        )
        return self._version(rows[0]) if rows else None

    # -- image references -----------------------------------------------------------------------

    def image_hash(self, ref: str) -> str | None:
        """Content hash of an image reference seen before, or None."""
        rows = self.query("SELECT sha256 FROM image_refs WHERE ref_key = ?", (ref_key(ref),))
        return str(rows[0][0]) if rows else None

    def image_hashes(self, refs: list[str]) -> dict[str, str]:
        """Content hashes of the references seen before."""
        out: dict[str, str] = {}
        keys = {ref_key(r): r for r in refs}
        items = list(keys)
        for start in range(0, len(items), 500):
            chunk = items[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.query(
                f"SELECT ref_key, sha256 FROM image_refs WHERE ref_key IN ({marks})", tuple(chunk)
            ):
                out[keys[row[0]]] = str(row[1])
        return out

    def remember_image_hashes(self, pairs: dict[str, str]) -> None:
        """Store reference -> content hash pairs."""
        if not pairs:
            return
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO image_refs (ref_key, sha256) VALUES (?, ?)",
                [(ref_key(ref), sha) for ref, sha in pairs.items()],
            )
