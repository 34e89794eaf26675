"""Image references in the store: reference -> content hash, so that an image embedded before
is not read again (its cached vector is found by its hash).

A mixin of :class:`labelwheel.ml_backend.store.Store` (which provides the connections); the
``image_refs`` table is in its schema.
"""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

__all__ = ["ImageRefs", "ref_key"]


def ref_key(ref: str) -> str:
    """Stable key of an image reference (URIs can be long: hash them)."""
    return hashlib.sha256(ref.encode("utf-8", "surrogatepass")).hexdigest()


class ImageRefs:
    """Reference -> content hash records (mixed into ``Store``)."""

    if TYPE_CHECKING:  # provided by Store

        def _conn(self) -> sqlite3.Connection: ...

        def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]: ...

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
        """Store reference -> content hash pairs.

        A cache (a lost pair only means the image is read and hashed again), so its commit does
        not wait for the disk (``synchronous=NORMAL``: in WAL mode it survives a crash of the
        process, and the next durable commit flushes it), which saves an fsync per /predict."""
        if not pairs:
            return
        conn = self._conn()  # the thread's connection, which the transaction uses
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with self.transaction() as tx:
                tx.executemany(
                    "INSERT OR REPLACE INTO image_refs (ref_key, sha256) VALUES (?, ?)",
                    [(ref_key(ref), sha) for ref, sha in pairs.items()],
                )
        finally:
            conn.execute("PRAGMA synchronous=FULL")
