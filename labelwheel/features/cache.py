"""The one embedding cache: vectors by image content hash, on disk, with an in-memory LRU in front.

Layout (shared by the ML backend and the data-lead tools, so a ``MODEL_DIR`` can be shared):
``<root>/embeddings/<backbone>-<image size>/<sha256[:2]>/<sha256>.npy``. An image is embedded once
per backbone and input size, whoever asks for it.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from labelwheel.fsio import atomic_write_bytes

__all__ = ["EmbeddingCache", "content_hash"]


def content_hash(data: bytes) -> str:
    """SHA-256 hex digest of image bytes: the embedding cache key."""
    return hashlib.sha256(data).hexdigest()


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class EmbeddingCache:
    """Embeddings of one backbone at one input size, keyed by image content hash (thread-safe).

    ``root=None`` keeps them in memory only (nothing written).
    """

    def __init__(
        self, root: Path | str | None, backbone: str, image_size: int, memory_items: int = 20000
    ) -> None:
        self.dir: Path | None = None
        if root is not None:
            self.dir = Path(root) / "embeddings" / f"{_safe_name(backbone)}-{int(image_size)}"
            self.dir.mkdir(parents=True, exist_ok=True)
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memory_items = memory_items
        self._lock = threading.Lock()

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
            vec = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if vec.ndim != 1 or not np.all(np.isfinite(vec)):
            return None
        vec = vec.astype(np.float32, copy=False)
        self._remember(sha, vec)
        return vec

    def put(self, sha: str, vec: np.ndarray) -> None:
        """Store an embedding atomically (temp file + rename; no fsync: a cache entry lost in a
        power cut is recomputed, and a damaged file fails :meth:`get`'s checks)."""
        vec = np.asarray(vec, dtype=np.float32)
        path = self._path(sha)
        if path is not None:
            buf = io.BytesIO()
            np.save(buf, vec, allow_pickle=False)
            atomic_write_bytes(path, buf.getvalue(), fsync=False)
        self._remember(sha, vec)

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
        return path is not None and path.exists()
