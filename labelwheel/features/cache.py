"""The one embedding cache: vectors by image content hash, on disk, with an in-memory LRU in front.

Layout (shared by the ML backend and the data-lead tools, so a ``MODEL_DIR`` can be shared):
``<root>/embeddings/<backbone>-<image size>/<sha256[:2]>/<sha256>.npy``. An image is embedded once
per backbone and input size, whoever asks for it.

Embedding stores (:mod:`labelwheel.features.store`, written by ``labelwheel embed``) placed in
``<root>/stores/`` with the same backbone and input size are read too: a vector missing from the
per-hash files is looked up there by content hash (and :meth:`EmbeddingCache.hash_of` gives a
stored reference's hash without reading the image), so a pool embedded elsewhere, on a Ray
cluster for instance, is never embedded again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from labelwheel.features.store import EmbeddingStore, find_stores
from labelwheel.fsio import make_dirs
from labelwheel.npyio import array_from_npy

__all__ = ["STORES_DIR", "EmbeddingCache", "content_hash"]

STORES_DIR = "stores"
"""Sub-folder of a cache root whose embedding stores the cache reads."""

log = logging.getLogger("labelwheel.features")

STORE_RESCAN_S = 10.0
"""How often (at most) a miss looks for new stores and newly committed shards."""


def content_hash(data: bytes) -> str:
    """SHA-256 hex digest of image bytes: the embedding cache key."""
    return hashlib.sha256(data).hexdigest()


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class EmbeddingCache:
    """Embeddings of one backbone at one input size, keyed by image content hash (thread-safe).

    ``root=None`` keeps them in memory only (nothing written, no stores read).
    """

    def __init__(
        self, root: Path | str | None, backbone: str, image_size: int, memory_items: int = 20000
    ) -> None:
        self.dir: Path | None = None
        self.stores_dir: Path | None = None
        self._backbone = backbone
        self._image_size = int(image_size)
        self._stores: list[EmbeddingStore] = []
        self._stores_scanned = float("-inf")
        self._stores_lock = threading.Lock()
        if root is not None:
            self.stores_dir = Path(root) / STORES_DIR
            self.dir = Path(root) / "embeddings" / f"{_safe_name(backbone)}-{int(image_size)}"
            self.dir.mkdir(parents=True, exist_ok=True)
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memory_items = memory_items
        self._lock = threading.Lock()
        self._made: set[str] = set()  # sub-folders known to exist
        self._headers: dict[tuple[str, int], bytes] = {}  # .npy header by (dtype, length)
        self._write_failed = False

    def _path(self, sha: str) -> Path | None:
        return None if self.dir is None else self.dir / sha[:2] / f"{sha}.npy"

    def get(self, sha: str) -> np.ndarray | None:
        """The cached embedding, or None (a damaged file counts as missing)."""
        with self._lock:
            vec = self._memory.get(sha)
            if vec is not None:
                self._memory.move_to_end(sha)
                return vec
        path = self._path(sha)
        if path is None:
            return None
        try:
            vec = array_from_npy(path.read_bytes())
        except (OSError, ValueError):
            return self._from_stores(sha)
        if vec.ndim != 1 or not np.all(np.isfinite(vec)):
            return self._from_stores(sha)
        vec = vec.astype(np.float32, copy=False)
        self._remember(sha, vec)
        return vec

    # -- embedding stores -----------------------------------------------------------------------

    def stores(self, rescan: bool = False) -> list[EmbeddingStore]:
        """The stores under ``<root>/stores/`` for this backbone and size (looked for again, and
        their new shards read, at most every :data:`STORE_RESCAN_S` seconds or on ``rescan``)."""
        if self.stores_dir is None:
            return []
        with self._stores_lock:
            now = time.monotonic()
            if rescan or now - self._stores_scanned >= STORE_RESCAN_S:
                self._stores_scanned = now
                known = {s.root.resolve(): s for s in self._stores}
                fresh = []
                for store in find_stores(self.stores_dir, self._backbone, self._image_size):
                    old = known.get(store.root.resolve())
                    if old is not None:
                        old.refresh()
                        fresh.append(old)
                    else:
                        fresh.append(store)
                self._stores = fresh
            return list(self._stores)

    def _from_stores(self, sha: str) -> np.ndarray | None:
        for store in self.stores():
            vec = store.vector(sha)
            if vec is not None and vec.ndim == 1:
                self._remember(sha, vec)
                return vec
        return None

    def hash_of(self, ref: str) -> str | None:
        """The content hash a store recorded for an image reference (None if no store has it):
        lets a caller use a stored vector without reading the image."""
        for store in self.stores():
            sha = store.hash_of(ref)
            if sha is not None:
                return sha
        return None

    def put(self, sha: str, vec: np.ndarray) -> None:
        """Keep an embedding in memory (:meth:`remember`) and on disk (:meth:`write`)."""
        self.write(sha, self.remember(sha, vec))

    def remember(self, sha: str, vec: np.ndarray) -> np.ndarray:
        """Keep an embedding in memory (as contiguous float32, returned)."""
        vec = np.ascontiguousarray(vec, dtype=np.float32)
        self._remember(sha, vec)
        return vec

    def write(self, sha: str, vec: np.ndarray) -> None:
        """Write an embedding's file atomically (a temp file of this process and thread, then a
        rename; no fsync: an entry lost in a power cut is recomputed, and a damaged file fails
        :meth:`get`'s checks); nothing without a root. A file that cannot be written (disk
        full, read-only folder) is logged once: a cache never fails the embedding it caches.

        The file is the ``.npy`` format written with one ``os.write`` (its header made once per
        dtype and length): ``numpy.save`` into a ``mkstemp`` file cost twice the CPU.
        """
        if self.dir is None:
            return
        try:
            self._write(sha, np.ascontiguousarray(vec, dtype=np.float32))
        except OSError as exc:
            if not self._write_failed:
                self._write_failed = True
                log.warning("embedding cache %s not written (%s): kept in memory", sha, exc)

    def _header(self, vec: np.ndarray) -> bytes:
        key = (vec.dtype.str, int(vec.size))
        header = self._headers.get(key)
        if header is None:
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                buf, {"descr": vec.dtype.str, "fortran_order": False, "shape": (int(vec.size),)}
            )
            header = self._headers[key] = buf.getvalue()
        return header

    def _write(self, sha: str, vec: np.ndarray) -> None:
        folder = f"{self.dir}/{sha[:2]}"
        if sha[:2] not in self._made:
            make_dirs(Path(folder), fsync=False)
            self._made.add(sha[:2])
        path = f"{folder}/{sha}.npy"
        tmp = f"{folder}/.{sha}.npy.{os.getpid()}-{threading.get_ident()}.tmp"
        data = memoryview(self._header(vec) + vec.tobytes())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            try:
                while data:
                    data = data[os.write(fd, data) :]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _remember(self, sha: str, vec: np.ndarray) -> None:
        with self._lock:
            self._memory[sha] = vec
            self._memory.move_to_end(sha)
            while len(self._memory) > self._memory_items:
                self._memory.popitem(last=False)

    def __contains__(self, sha: str) -> bool:
        with self._lock:
            if sha in self._memory:
                return True
        path = self._path(sha)
        if path is not None and path.exists():
            return True
        return any(sha in store for store in self.stores())
