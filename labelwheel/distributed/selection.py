"""``labelwheel select``'s work: two-stage selection over an embedding store, shard by shard, in
this process or as Ray tasks.

Stage one runs :func:`~labelwheel.selectors.sharded.shard_candidates` on one shard at a time:
the shard's ``.npy`` is read into memory by :func:`load_shard` (only that file: the store's
other shards and manifests are not touched), its candidates are kept and the shard is dropped
before the next is read, so the driver never holds more than one shard plus the candidates.
With Ray (``ray_address``), each shard is one ``ray.remote`` task that reads its shard from the
store path where it runs (the store must be on storage every node sees: a shared file system,
or the same path on each node) and returns only its candidates. Stage two
(:func:`~labelwheel.selectors.sharded.final_pick`) runs here over the union of the candidates,
in shard order, so both paths give the same picks for the same seed.

A row's global id is ``shard << 32 | row``; only the picked rows' manifests are read, to name
their references and content hashes. Optionally every stored vector's distance to its nearest
pick is measured, shard by shard as well (:mod:`labelwheel.selectors.coverage`: exact, or an
IVF index when the picks are many), for the covering radius and mean distance of the pick.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from labelwheel.npyio import load_npy

__all__ = [
    "STORE_STRATEGIES",
    "Picked",
    "StoreSelection",
    "load_shard",
    "select_store",
    "shard_refs",
    "store_shards",
    "task_memory",
]

#: Strategies that need only embeddings (a store holds no model probabilities).
STORE_STRATEGIES = ("kcenter", "kmeans", "typiclust", "probcover", "random")

_SHARD_RE = re.compile(r"^shard-(\d{6,})\.jsonl$")
_ROW_BITS = 32

Loader = Callable[[Path, int], tuple[NDArray[np.int64], NDArray[np.float32]]]


@dataclass(frozen=True)
class Picked:
    """One picked row: rank (0 = picked first), reference, content hash, shard and row."""

    rank: int
    ref: str
    sha: str
    shard: int
    row: int


@dataclass
class StoreSelection:
    """What :func:`select_store` picked and what it cost."""

    picks: list[Picked]
    strategy: str
    shards: int
    rows: int  # vectors in the store
    candidates: int  # rows that reached stage two
    max_shard_rows: int  # the most rows stage one held at once (one shard)
    excluded: int  # stored rows left out (``exclude``), counted as covered
    stage_one_s: float
    stage_two_s: float
    coverage_s: float = 0.0
    radius: float | None = None  # covering radius of the pick over every stored vector
    mean_distance: float | None = None
    index_kind: str | None = None
    workers: set[str] = field(default_factory=set)  # where stage one ran (pid@host)


def store_shards(root: Path | str) -> list[int]:
    """The committed shard numbers of the store at ``root`` (its ``.jsonl`` manifests exist),
    ascending; raises ValueError if ``root`` is not an embedding store."""
    root = Path(root)
    from labelwheel.features.store import read_store_meta

    read_store_meta(root)
    try:
        names = [p.name for p in (root / "shards").iterdir()]
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in map(_SHARD_RE.match, names) if m)


def global_ids(shard: int, rows: int) -> NDArray[np.int64]:
    """Global ids of a shard's rows: ``shard << 32 | row``."""
    return (np.int64(shard) << _ROW_BITS) | np.arange(rows, dtype=np.int64)


def load_shard(root: Path, shard: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """(global ids, vectors in memory) of one shard: reads that shard's ``.npy`` only."""
    path = Path(root) / "shards" / f"shard-{shard:06d}.npy"
    try:
        arr = load_npy(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{root}: shard {shard} is unreadable: {exc}") from None
    if arr.ndim != 2 or arr.dtype != np.float32:
        raise ValueError(f"{root}: shard {shard} is damaged ({arr.dtype}, {arr.shape})")
    vectors = np.array(arr)  # one read of this file; the memory map is dropped with ``arr``
    del arr
    return global_ids(shard, len(vectors)), vectors


def shard_refs(root: Path, shard: int) -> list[str]:
    """One shard's references, in row order (its manifest only)."""
    refs: dict[int, str] = {}
    with (Path(root) / "shards" / f"shard-{shard:06d}.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                refs[int(rec["row"])] = str(rec["ref"])
    return [refs.get(i, "") for i in range(len(refs))]


StageOne = tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32], int]


def _candidates(
    root: Path,
    shard: int,
    ids: NDArray[np.int64],
    vectors: NDArray[np.float32],
    strategy: str,
    per_shard: int,
    seed: int,
    params: dict[str, Any],
    exclude: frozenset[str],
) -> StageOne:
    """Stage one on one loaded shard: (candidate ids, their vectors, the shard's excluded
    vectors, the shard's rows)."""
    from labelwheel.selectors.sharded import shard_candidates

    kwargs = dict(params)
    excluded = np.zeros((0, vectors.shape[1]), dtype=np.float32)
    if exclude:
        refs = shard_refs(root, shard)
        mask = np.array([r in exclude for r in refs], dtype=bool)
        if len(mask) != len(ids):
            raise ValueError(f"{root}: shard {shard} has {len(ids)} rows, {len(mask)} in manifest")
        if mask.any():
            kwargs["labeled"] = mask
            excluded = np.ascontiguousarray(vectors[mask])
        if mask.all():  # nothing left to pick here; its rows still count as covered
            return ids[:0].copy(), vectors[:0].copy(), excluded, len(ids)
    cid, cemb, _ = shard_candidates(strategy, per_shard, (ids, vectors, None), seed=seed, **kwargs)
    return cid, cemb, excluded, len(ids)


def _stage_one(
    shard: int,
    root: str,
    strategy: str,
    per_shard: int,
    seed: int,
    params: dict[str, Any],
    exclude: frozenset[str],
) -> tuple[StageOne, str]:
    """Stage one on one shard read from the store path, and where it ran (pid@host). The
    function a Ray task runs."""
    import os
    import socket

    ids, vectors = load_shard(Path(root), shard)
    out = _candidates(Path(root), shard, ids, vectors, strategy, per_shard, seed, params, exclude)
    return out, f"{os.getpid()}@{socket.gethostname()}"


def _coverage_one(
    shard: int, root: str, index: Any, loader: Loader = load_shard
) -> tuple[float, float, int]:
    """(max, sum, count) of one shard's nearest-pick distances; ``index`` is a faiss index or
    its bytes. The function a Ray task runs."""
    from labelwheel.selectors.coverage import Coverage, index_from_bytes, nearest_distances

    if isinstance(index, np.ndarray):
        index = index_from_bytes(index)
    _, vectors = loader(Path(root), shard)
    dist, _ = nearest_distances(vectors, index)
    cov = Coverage.of(dist)
    return cov.radius, cov.total, cov.count


class _RayRunner:
    """Runs shard functions as ``ray.remote`` tasks (one CPU each), results in shard order."""

    def __init__(self, address: str) -> None:
        from labelwheel.distributed.job import attach_ray

        self.ray, self.started = attach_ray(address)

    def map(
        self, fn: Callable[..., Any], root: Path, shards: list[int], *args: Any
    ) -> Iterator[Any]:
        """``fn(shard, str(root), *args)`` as one task per shard, each asking Ray for one CPU
        and :func:`task_memory` bytes, so a node runs no more shards at once than fit."""
        ray = self.ray
        task = ray.remote(num_cpus=1, max_retries=2)(fn)
        # big arguments go to the object store once, not once per task
        shared = [ray.put(a) if isinstance(a, np.ndarray | frozenset) else a for a in args]
        refs = [
            task.options(memory=task_memory(root, shard)).remote(shard, str(root), *shared)
            for shard in shards
        ]
        for ref in refs:  # in shard order; each result is released once consumed
            yield ray.get(ref)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def task_memory(root: Path, shard: int) -> int:
    """Memory a shard's task asks Ray for: the shard in memory plus the selector's working
    set, plus 256 MiB for the worker's interpreter and imports. Measured (traced numpy
    peaks): about 5.5 x the shard's bytes for the small shards of the tests (exact k-center in
    float64), 0.11 x (k-center) and 0.29 x (k-means) extra for a 1 M x 256 shard picking
    10,000; hence 6 x up to 80 MiB, 2 x above."""
    size = (Path(root) / "shards" / f"shard-{shard:06d}.npy").stat().st_size
    factor = 6 if size <= 80 * 2**20 else 2
    return int(factor * size + 256 * 2**20)


def _read_picked(root: Path, ids: NDArray[np.int64]) -> list[Picked]:
    """Name the picked rows: read the manifests of the shards they are in."""
    wanted: dict[int, dict[int, int]] = {}
    for rank, gid in enumerate(ids.tolist()):
        wanted.setdefault(gid >> _ROW_BITS, {})[gid & ((1 << _ROW_BITS) - 1)] = rank
    named: list[Picked | None] = [None] * len(ids)
    for shard, rows in wanted.items():
        path = root / "shards" / f"shard-{shard:06d}.jsonl"
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                rec = json.loads(line)
                at = rows.get(int(rec["row"]))
                if at is not None:
                    named[at] = Picked(at, str(rec["ref"]), str(rec["sha"]), shard, int(rec["row"]))
    missing = [int(ids[i]) for i, p in enumerate(named) if p is None]
    if missing:
        raise ValueError(f"{root}: rows missing from their shard manifests: {missing[:5]}")
    return [p for p in named if p is not None]


def select_store(
    root: Path | str,
    n: int,
    strategy: str = "kcenter",
    *,
    candidates: int | None = None,
    seed: int = 0,
    ray_address: str | None = None,
    coverage: bool = False,
    index_kind: str = "auto",
    loader: Loader = load_shard,
    exclude: Iterable[str] = (),
    **params: Any,
) -> StoreSelection:
    """Pick ``n`` rows of the embedding store at ``root`` with ``strategy`` in two stages (see
    the module doc): ``candidates`` per shard (default ``n``), stage one in this process shard
    after shard or, with ``ray_address`` (``local``, ``auto``, ``ray://head:10001``), as one
    Ray task per shard. ``coverage`` also measures the pick's covering radius and mean
    distance over every stored vector (``index_kind``: ``flat``, ``ivf`` or ``auto``).
    ``exclude``: references already labelled (or picked before): never picked, and counted
    as covered by diversity strategies (each shard's excluded rows are ``labeled`` in stage
    one; all of them join stage two as labelled rows). ``loader`` reads one shard in this
    process (tests watch it; Ray tasks use :func:`load_shard`). Raises ValueError for a bad
    store, strategy or argument."""
    from labelwheel.selectors.coverage import Coverage, index_to_bytes, pick_index
    from labelwheel.selectors.sharded import final_pick

    if strategy not in STORE_STRATEGIES:
        raise ValueError(
            f"strategy {strategy!r} cannot run on a store (it holds embeddings only): "
            f"use one of {', '.join(STORE_STRATEGIES)}"
        )
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    per_shard = n if candidates is None else int(candidates)
    if per_shard < 1:
        raise ValueError(f"candidates must be at least 1, got {candidates}")
    if ray_address:
        from labelwheel.distributed.job import _host_port

        _host_port(ray_address)
    root = Path(root)
    shards = store_shards(root)
    if not shards:
        raise ValueError(f"{root} holds no vectors")
    excluded_refs = frozenset(exclude)
    runner = _RayRunner(ray_address) if ray_address else None
    try:
        t0 = time.perf_counter()
        parts: list[tuple[Any, Any, Any]] = []
        rows = max_rows = 0
        workers: set[str] = set()
        stage_one: Iterator[StageOne]
        if runner is not None:
            args = (strategy, per_shard, seed, params, excluded_refs)
            stage_one = _tagged(runner.map(_stage_one, root, shards, *args), workers)
        else:
            stage_one = _in_process(
                root, shards, loader, strategy, per_shard, seed, params, excluded_refs
            )
            workers.add("this process")
        excluded: list[NDArray[np.float32]] = []
        for cid, cemb, lab, shard_rows in stage_one:
            parts.append((cid, cemb, None))
            excluded.append(lab)
            rows += shard_rows
            max_rows = max(max_rows, shard_rows)
        t1 = time.perf_counter()
        labeled = np.concatenate(excluded) if excluded else None
        n_excluded = 0 if labeled is None else len(labeled)
        ids = final_pick(strategy, n, parts, seed=seed, labeled_embeddings=labeled, **params)
        del labeled, excluded
        t2 = time.perf_counter()
        union = sum(len(p[0]) for p in parts)
        pick_vectors = _vectors_of(ids, parts)
        del parts
        result = StoreSelection(
            picks=_read_picked(root, ids),
            strategy=strategy,
            shards=len(shards),
            rows=rows,
            candidates=union,
            max_shard_rows=max_rows,
            excluded=n_excluded,
            stage_one_s=t1 - t0,
            stage_two_s=t2 - t1,
            workers=workers,
        )
        if coverage and len(ids):
            t3 = time.perf_counter()
            index = pick_index(pick_vectors, kind=index_kind, seed=seed)
            result.index_kind = "ivf" if hasattr(index, "nprobe") else "flat"
            total = Coverage()
            if runner is not None:
                blob = index_to_bytes(index)  # built once, searched by every task
                for mx, sm, cnt in runner.map(_coverage_one, root, shards, blob):
                    total = total.merge(Coverage(mx, sm, cnt))
            else:
                for shard in shards:
                    mx, sm, cnt = _coverage_one(shard, str(root), index, loader)
                    total = total.merge(Coverage(mx, sm, cnt))
            result.radius, result.mean_distance = total.radius, total.mean
            result.coverage_s = time.perf_counter() - t3
        return result
    finally:
        if runner is not None:
            runner.close()


def _in_process(
    root: Path,
    shards: list[int],
    loader: Loader,
    strategy: str,
    per_shard: int,
    seed: int,
    params: dict[str, Any],
    exclude: frozenset[str],
) -> Iterator[StageOne]:
    for shard in shards:
        ids, vectors = loader(root, shard)
        out = _candidates(root, shard, ids, vectors, strategy, per_shard, seed, params, exclude)
        del ids, vectors  # the shard goes before the next one is read
        yield out
        del out


def _tagged(results: Iterator[tuple[StageOne, str]], workers: set[str]) -> Iterator[StageOne]:
    for out, where in results:
        workers.add(where)
        yield out


def _vectors_of(ids: NDArray[np.int64], parts: list[tuple[Any, Any, Any]]) -> NDArray[np.float32]:
    """The picked rows' vectors, from the candidates (stage two picks among them)."""
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    all_ids = np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts])
    all_emb = np.concatenate([np.asarray(p[1], dtype=np.float32) for p in parts])
    pos = {int(g): i for i, g in enumerate(all_ids.tolist())}
    return all_emb[[pos[int(g)] for g in ids.tolist()]]
