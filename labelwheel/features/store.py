"""The embedding store: a pool's vectors in sharded files plus a manifest, for pools of millions.

Layout of a store folder::

    STORE/store.json                   {"format", "version", "backbone", "image_size", "dim"}
    STORE/shards/shard-000000.npy      float32, rows x dim (memory-mappable)
    STORE/shards/shard-000000.jsonl    one line per row: {"sha", "ref", "row"}

A shard is committed when its ``.jsonl`` exists: the ``.npy`` is written first, then the
manifest, each atomically (:func:`labelwheel.fsio.atomic_write_bytes`), so a crash leaves either
a whole shard or an orphan ``.npy`` that readers ignore and the next writer overwrites. Stores
are append-only: a re-run writes new shards only for references the store does not hold yet
(:meth:`EmbeddingStore.references`), so an interrupted run resumes where it stopped.

:class:`~labelwheel.features.cache.EmbeddingCache` reads the stores found in
``<cache root>/stores/`` (same backbone and input size) by content hash, and
:class:`~labelwheel.features.embed.Embedder` uses their reference → hash map, so an image a
store holds is neither fetched nor embedded again by the backend or the data-lead tools.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelwheel.fsio import atomic_write_bytes
from labelwheel.npyio import load_npy

__all__ = [
    "STORE_FORMAT",
    "EmbeddingStore",
    "StoreMismatch",
    "StoreRow",
    "find_stores",
    "read_store_meta",
]

STORE_FORMAT = "labelwheel-embedding-store"
STORE_VERSION = 1
_SHARD_RE = re.compile(r"^shard-(\d{6,})\.jsonl$")


class StoreMismatch(ValueError):
    """A store opened with another backbone, input size or dimension than it was written with."""


@dataclass(frozen=True)
class StoreRow:
    """One manifest row: content hash, reference, and where the vector lives."""

    sha: str
    ref: str
    shard: int
    row: int


def read_store_meta(root: Path | str) -> dict[str, Any]:
    """The ``store.json`` of the embedding store at ``root``; ValueError (naming the reason)
    when ``root`` is not one or it cannot be read."""
    root = Path(root)
    try:
        meta = json.loads((root / "store.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{root} is not an embedding store (no store.json)") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{root}/store.json is unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
        raise ValueError(f"{root} is not an embedding store")
    return meta


class EmbeddingStore:
    """An append-only embedding store in one folder (see the module doc). Thread-safe."""

    def __init__(self, root: Path | str, backbone: str, image_size: int, dim: int) -> None:
        self.root = Path(root)
        self.backbone = backbone
        self.image_size = int(image_size)
        self.dim = int(dim)
        self._lock = threading.Lock()
        self._rows: list[StoreRow] = []
        self._by_sha: dict[str, StoreRow] = {}
        self._by_ref: dict[str, str] = {}
        self._shards_seen: set[int] = set()
        self._next_shard = 0
        self._arrays: dict[int, np.ndarray] = {}

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path | str, backbone: str, image_size: int, dim: int) -> EmbeddingStore:
        """Open the store at ``root`` for writing, creating it if need be; raises
        :class:`StoreMismatch` if it exists with another backbone, size or dimension."""
        root = Path(root)
        meta_path = root / "store.json"
        if meta_path.exists():
            store = cls.open(root)
            want = (backbone, int(image_size), int(dim))
            have = (store.backbone, store.image_size, store.dim)
            if want != have:
                raise StoreMismatch(
                    f"store {root} holds {have[0]} at {have[1]} px ({have[2]} dims), "
                    f"not {want[0]} at {want[1]} px ({want[2]} dims)"
                )
            return store
        if root.exists() and any(root.iterdir()):
            raise ValueError(f"{root} exists and is not an embedding store")
        meta = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "backbone": backbone,
            "image_size": int(image_size),
            "dim": int(dim),
        }
        atomic_write_bytes(meta_path, (json.dumps(meta, indent=1) + "\n").encode())
        (root / "shards").mkdir(exist_ok=True)
        return cls(root, backbone, image_size, dim)

    @classmethod
    def open(cls, root: Path | str) -> EmbeddingStore:
        """Open an existing store (its committed shards are read); raises ValueError."""
        root = Path(root)
        meta = read_store_meta(root)
        if int(meta.get("version", 0)) > STORE_VERSION:
            raise ValueError(f"{root}: store version {meta.get('version')} is newer than this one")
        store = cls(root, str(meta["backbone"]), int(meta["image_size"]), int(meta["dim"]))
        store.refresh()
        return store

    def refresh(self) -> int:
        """Read the shards committed since the last look (by another writer); returns how many
        rows were added."""
        folder = self.root / "shards"
        try:
            names = sorted(p.name for p in folder.iterdir())
        except FileNotFoundError:
            return 0
        added = 0
        with self._lock:
            for name in names:
                match = _SHARD_RE.match(name)
                if not match:
                    continue
                shard = int(match.group(1))
                self._next_shard = max(self._next_shard, shard + 1)
                if shard in self._shards_seen:
                    continue
                rows = self._read_manifest(folder / name, shard)
                if rows is None:
                    continue
                self._shards_seen.add(shard)
                for row in rows:
                    self._rows.append(row)
                    self._by_sha.setdefault(row.sha, row)
                    self._by_ref[row.ref] = row.sha
                added += len(rows)
        return added

    @staticmethod
    def _read_manifest(path: Path, shard: int) -> list[StoreRow] | None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            rows = []
            for line in lines:
                if line.strip():
                    d = json.loads(line)
                    rows.append(StoreRow(str(d["sha"]), str(d["ref"]), shard, int(d["row"])))
            return rows
        except (OSError, ValueError, KeyError, TypeError):
            return None  # damaged shard manifest: its rows are re-embedded by the next run

    # -- writing ---------------------------------------------------------------------------------

    def append(self, refs: Sequence[str], hashes: Sequence[str], vectors: np.ndarray) -> int:
        """Commit one shard (rows aligned with ``refs``/``hashes``); returns its number."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must be (n, {self.dim}), got {vectors.shape}")
        if not (len(refs) == len(hashes) == len(vectors)):
            raise ValueError("refs, hashes and vectors must have the same length")
        if len(refs) == 0:
            raise ValueError("an empty shard")
        if not np.all(np.isfinite(vectors)):
            raise ValueError("vectors must be finite")
        with self._lock:
            shard = self._next_shard
            self._next_shard += 1
        folder = self.root / "shards"
        buf = io.BytesIO()
        np.save(buf, vectors, allow_pickle=False)
        atomic_write_bytes(folder / f"shard-{shard:06d}.npy", buf.getvalue())
        lines = "".join(
            json.dumps({"sha": h, "ref": r, "row": i}, separators=(",", ":")) + "\n"
            for i, (r, h) in enumerate(zip(refs, hashes, strict=True))
        )
        atomic_write_bytes(folder / f"shard-{shard:06d}.jsonl", lines.encode())
        with self._lock:
            self._shards_seen.add(shard)
            for i, (r, h) in enumerate(zip(refs, hashes, strict=True)):
                row = StoreRow(str(h), str(r), shard, i)
                self._rows.append(row)
                self._by_sha.setdefault(row.sha, row)
                self._by_ref[row.ref] = row.sha
        return shard

    # -- reading ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def references(self) -> set[str]:
        """References the store holds (a resumed run skips them)."""
        with self._lock:
            return set(self._by_ref)

    def hash_of(self, ref: str) -> str | None:
        """The content hash stored for a reference, or None."""
        with self._lock:
            return self._by_ref.get(ref)

    def __contains__(self, sha: object) -> bool:
        with self._lock:
            return sha in self._by_sha

    def rows(self) -> list[StoreRow]:
        """The manifest, in shard and row order of commitment."""
        with self._lock:
            return list(self._rows)

    def shards(self) -> list[int]:
        """Committed shard numbers, ascending."""
        with self._lock:
            return sorted(self._shards_seen)

    def shard_array(self, shard: int) -> np.ndarray:
        """One shard's vectors, memory-mapped (read-only)."""
        with self._lock:
            arr = self._arrays.get(shard)
        if arr is None:
            arr = load_npy(self.root / "shards" / f"shard-{shard:06d}.npy", mmap_mode="r")
            if arr.ndim != 2 or arr.shape[1] != self.dim or arr.dtype != np.float32:
                raise ValueError(f"{self.root}: shard {shard} is damaged ({arr.shape})")
            with self._lock:
                self._arrays[shard] = arr
        return arr

    def iter_shards(self) -> Iterator[tuple[list[StoreRow], np.ndarray]]:
        """(manifest rows, memory-mapped vectors) per shard, shard by shard."""
        by_shard: dict[int, list[StoreRow]] = {}
        for row in self.rows():
            by_shard.setdefault(row.shard, []).append(row)
        for shard in sorted(by_shard):
            yield by_shard[shard], self.shard_array(shard)

    def matrix(self) -> tuple[list[StoreRow], np.ndarray]:
        """Every row and its vector as one in-memory matrix (manifest order)."""
        rows: list[StoreRow] = []
        parts: list[np.ndarray] = []
        for shard_rows, arr in self.iter_shards():
            rows.extend(shard_rows)
            parts.append(np.asarray(arr[[r.row for r in shard_rows]]))
        if not parts:
            return rows, np.zeros((0, self.dim), dtype=np.float32)
        return rows, np.concatenate(parts)

    def vector(self, sha: str) -> np.ndarray | None:
        """The vector stored for a content hash (a copy), or None."""
        with self._lock:
            row = self._by_sha.get(sha)
        if row is None:
            return None
        try:
            vec = np.array(self.shard_array(row.shard)[row.row], dtype=np.float32)
        except (OSError, ValueError, IndexError):
            return None
        return vec if np.all(np.isfinite(vec)) else None


def find_stores(folder: Path | str, backbone: str, image_size: int) -> list[EmbeddingStore]:
    """The embedding stores directly under ``folder`` written with this backbone and size."""
    folder = Path(folder)
    found: list[EmbeddingStore] = []
    try:
        candidates = sorted(p for p in folder.iterdir() if (p / "store.json").is_file())
    except (FileNotFoundError, NotADirectoryError):
        return found
    for path in candidates:
        try:
            store = EmbeddingStore.open(path)
        except ValueError:
            continue
        if store.backbone == backbone and store.image_size == int(image_size):
            found.append(store)
    return found
