"""The ingest ledger: what was decided about which image content, so nothing is imported twice.

One SQLite file per Label Studio project (default
``<cache dir>/ingest/<host>-<port>-project<ID>.sqlite3``).
Every decision is committed as soon as a batch is analysed, in one transaction (SQLite's journal
makes each commit atomic: a crash leaves the ledger as of the last commit), so an interrupted run
resumes where it stopped.

Tables:

* ``items``: one row per image content (SHA-256): ``status`` is ``dropped`` (with the reason),
  ``passed`` (kept by the funnel, not imported yet: over budget, or the run stopped), ``uploading``
  (an upload was started, with the task fields it carries: the next run checks the project for
  that content before trying again, and completes a landed upload's task data)
  or ``imported`` (with the task id);
* ``keys``: source key → (size, version, hash), so a re-run recognises an unchanged item without
  reading it;
* ``refs`` and ``descriptors``: the project's task image references → content hash, and the
  near-duplicate descriptor per hash, so the project's images are fetched once, not per run.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from labelwheel.fsio import fsync_dir
from labelwheel.ingest.dedup import DESCRIPTOR_DIM

__all__ = ["Ledger", "LedgerItem", "default_ledger_path"]

STATUSES = ("dropped", "passed", "uploading", "imported")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    sha TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    detail TEXT,
    task_id INTEGER,
    fields TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    key TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    version TEXT NOT NULL,
    sha TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refs (ref TEXT PRIMARY KEY, sha TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS descriptors (sha TEXT PRIMARY KEY, vec BLOB NOT NULL);
"""


def default_ledger_path(state_dir: Path, ls_url: str, project_id: int) -> Path:
    """``<state_dir>/ingest/<host>-<port>-project<ID>.sqlite3`` (one per server and project)."""
    parsed = urlparse(ls_url)
    host = "".join(c if c.isalnum() else "-" for c in (parsed.hostname or "ls"))
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return Path(state_dir) / "ingest" / f"{host}-{port}-project{int(project_id)}.sqlite3"


@dataclass(frozen=True)
class LedgerItem:
    """A recorded decision about one image content."""

    sha: str
    key: str
    status: str
    reason: str | None = None
    detail: str | None = None
    task_id: int | None = None
    fields: str | None = None  # JSON of the task data fields an upload carries


class Ledger:
    """The ledger of one project (see the module doc). ``read_only`` writes nothing (dry runs)."""

    def __init__(self, path: Path | str, project_id: int, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.project_id = int(project_id)
        self.read_only = read_only
        self._conn: sqlite3.Connection | None = None
        if read_only and not self.path.is_file():
            return
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
        else:
            new = False
        uri = f"file:{self.path}?mode=ro" if read_only else f"file:{self.path}"
        try:
            self._conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
            if not read_only:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.executescript(_SCHEMA)
            owner = self._conn.execute("SELECT value FROM meta WHERE name='project'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"ingest ledger {self.path} is not usable: {exc}") from None
        if owner is not None and int(owner[0]) != self.project_id:
            raise ValueError(
                f"ingest ledger {self.path} belongs to project {owner[0]}, not {self.project_id}"
            )
        if owner is None and not read_only:
            self._conn.execute(
                "INSERT INTO meta(name, value) VALUES ('project', ?)", (str(self.project_id),)
            )
        if new:
            fsync_dir(self.path.parent)

    def close(self) -> None:
        """Close the database."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------------------

    def get(self, sha: str) -> LedgerItem | None:
        """The decision recorded for a content hash, if any."""
        if self._conn is None:
            return None
        row = self._conn.execute(
            "SELECT sha, key, status, reason, detail, task_id, fields FROM items WHERE sha=?",
            (sha,),
        ).fetchone()
        return LedgerItem(*row) if row else None

    def all(self, status: str | None = None) -> list[LedgerItem]:
        """Every recorded decision (with ``status``, only those)."""
        if self._conn is None:
            return []
        sql = "SELECT sha, key, status, reason, detail, task_id, fields FROM items"
        rows = (
            self._conn.execute(sql + " WHERE status=? ORDER BY key", (status,)).fetchall()
            if status
            else self._conn.execute(sql + " ORDER BY key").fetchall()
        )
        return [LedgerItem(*r) for r in rows]

    def known_sha(self, key: str, size: int, version: str) -> str | None:
        """The content hash of a source item read earlier, if it is unchanged since."""
        if self._conn is None:
            return None
        row = self._conn.execute(
            "SELECT sha FROM keys WHERE key=? AND size=? AND version=?", (key, size, version)
        ).fetchone()
        return str(row[0]) if row else None

    # -- writing ----------------------------------------------------------------------------

    def record(
        self,
        items: Sequence[LedgerItem],
        keys: Iterable[tuple[str, int, str, str]] = (),
    ) -> None:
        """Record decisions and key → hash facts in one atomic transaction."""
        if self.read_only or self._conn is None:
            return
        for it in items:
            if it.status not in STATUSES:
                raise ValueError(f"unknown ledger status {it.status!r}")
        now = time.time()
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO items(sha, key, status, reason, detail, task_id, fields, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(sha) DO UPDATE SET key=excluded.key, "
                "status=excluded.status, reason=excluded.reason, detail=excluded.detail, "
                "task_id=excluded.task_id, fields=COALESCE(excluded.fields, items.fields), "
                "updated=excluded.updated",
                [
                    (i.sha, i.key, i.status, i.reason, i.detail, i.task_id, i.fields, now)
                    for i in items
                ],
            )
            conn.executemany(
                "INSERT INTO keys(key, size, version, sha) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET size=excluded.size, version=excluded.version, "
                "sha=excluded.sha",
                list(keys),
            )

    def _transaction(self) -> _Tx:
        assert self._conn is not None
        return _Tx(self._conn)

    def ref_shas(self) -> dict[str, str]:
        """Task image reference → content hash, as learnt by earlier runs."""
        if self._conn is None:
            return {}
        return {str(r): str(s) for r, s in self._conn.execute("SELECT ref, sha FROM refs")}

    def descriptors(self, shas: Iterable[str]) -> dict[str, np.ndarray]:
        """Stored near-duplicate descriptors of these hashes."""
        if self._conn is None:
            return {}
        out: dict[str, np.ndarray] = {}
        wanted = list(dict.fromkeys(shas))
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            marks = ",".join("?" * len(part))
            for sha, blob in self._conn.execute(
                f"SELECT sha, vec FROM descriptors WHERE sha IN ({marks})", part
            ):
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.size == DESCRIPTOR_DIM and np.all(np.isfinite(vec)):
                    out[str(sha)] = vec.copy()
        return out

    def remember_project(self, refs: dict[str, str], descriptors: dict[str, np.ndarray]) -> None:
        """Store task references → hashes and descriptors (one transaction)."""
        if self.read_only or self._conn is None or not (refs or descriptors):
            return
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO refs(ref, sha) VALUES (?, ?)", list(refs.items())
            )
            conn.executemany(
                "INSERT OR REPLACE INTO descriptors(sha, vec) VALUES (?, ?)",
                [
                    (sha, np.asarray(v, dtype=np.float32).tobytes())
                    for sha, v in descriptors.items()
                ],
            )

    def counts(self) -> dict[str, int]:
        """Number of recorded contents per status."""
        if self._conn is None:
            return {}
        rows = self._conn.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall()
        return {str(s): int(n) for s, n in rows}


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def sha_of(data: bytes) -> str:
    """SHA-256 hex of bytes (the same key as the embedding cache)."""
    return hashlib.sha256(data).hexdigest()
