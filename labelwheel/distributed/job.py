"""``labelwheel embed``'s work: references → vectors → an embedding store, in-process or on Ray.

One :class:`BatchEmbedder` (a source reader plus one :class:`~labelwheel.features.Embedder`,
hence one backbone) turns a batch of references into a batch of rows. In-process, the driver
calls it chunk by chunk; with Ray, it is the actor class of a Ray Data ``map_batches`` (an actor
pool of ``actors`` actors, each holding its backbone for the whole job, reading, decoding and
embedding its batches where it runs) over ``ray.data.from_items(references)``. Either way the
driver alone writes the store, one shard per ``shard_rows`` vectors, so the store's atomicity
and resumption (references already stored are not even listed to the workers) hold for both.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelwheel.distributed.sources import EmbedSource
from labelwheel.features import DEFAULT_BACKBONE, DEFAULT_IMAGE_SIZE, Embedder
from labelwheel.features.store import EmbeddingStore

__all__ = ["BatchEmbedder", "EmbedResult", "default_actor_cpus", "run_embed"]

Batch = dict[str, Any]


@dataclass
class EmbedResult:
    """What one run did."""

    listed: int = 0
    skipped: int = 0  # already in the store
    embedded: int = 0  # rows written by this run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (reference, reason)
    shards: int = 0
    store: Path | None = None
    workers: set[int] = field(default_factory=set)  # process ids that embedded
    seconds: float = 0.0  # from the start of the work (after listing) to the last shard
    startup_s: float = 0.0  # until the first batch came back (workers started, backbone loaded)


class BatchEmbedder:
    """References in, rows out (``ref``, ``sha``, ``vector``, ``error``): the work of one
    in-process worker or one Ray actor. The reader and the backbone are built on first use,
    where the worker runs."""

    def __init__(
        self,
        source: EmbedSource,
        backbone: str = DEFAULT_BACKBONE,
        image_size: int = DEFAULT_IMAGE_SIZE,
        batch_size: int = 32,
        inference: str | None = None,
    ) -> None:
        self.source = source
        self.embedder = Embedder(backbone, image_size, batch_size, inference=inference)
        self.embedder.backbone()  # loaded once per worker, before its first batch
        self._read: Callable[[str], bytes] | None = None

    def __call__(self, batch: Batch) -> Batch:
        refs = [str(r) for r in batch["ref"]]
        if self._read is None:
            self._read = self.source.reader()
        out = self.embedder.embed_refs(refs, self._read, local=self.source.local)
        dim = self.embedder.backbone().dim
        vectors = np.zeros((len(refs), dim), dtype=np.float32)
        for i in out.ok:
            vectors[i] = out.vectors[i]
        return {
            "ref": np.array(refs, dtype=object),
            "sha": np.array([h or "" for h in out.hashes], dtype=object),
            "vector": vectors,
            "error": np.array([e or "" for e in out.errors], dtype=object),
            "worker": np.full(len(refs), os.getpid(), dtype=np.int64),
        }


def _in_process(refs: list[str], worker: BatchEmbedder, batch_size: int) -> Iterator[Batch]:
    for start in range(0, len(refs), batch_size):
        yield worker({"ref": refs[start : start + batch_size]})


def _host_port(address: str) -> tuple[str, int] | None:
    """``HOST:PORT`` / ``ray://HOST:PORT`` → (host, port); None for local / auto; ValueError."""
    if address in ("local", "auto"):
        return None
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--ray {address!r}: use local, auto, HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with one line, for a ``host:port`` or ``ray://host:port`` nobody
    answers at (``ray.init`` would retry for minutes)."""
    target = _host_port(address)
    if target is None:
        return
    host, port = target
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ValueError(f"cannot reach Ray at {address}: {exc.strerror or exc}") from None


def attach_ray(address: str) -> tuple[Any, bool]:
    """The ``ray`` module, connected to ``address`` (``local``: a Ray started here; ``auto``,
    ``HOST:PORT``, ``ray://HOST:PORT``: a cluster), and whether this call started it (then the
    caller shuts it down). Raises ValueError (one line) when ray is missing, the address is
    malformed or nobody answers there."""
    try:
        import ray
    except ImportError:
        raise ValueError('ray is not installed: pip install "labelwheel[distributed]"') from None
    _host_port(address)
    if ray.is_initialized():
        return ray, False
    _check_reachable(address)
    ray.init(
        address=None if address == "local" else address,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    return ray, True


MAX_ACTOR_CPUS = 4
"""Default cap on an actor's CPUs: ONNX Runtime's intra-op threads scale well up to about 4 on
batches of 16-32 images; a bigger node gets several actors."""


def default_actor_cpus(nodes: Iterable[dict[str, Any]]) -> int:
    """CPUs per actor when not given, from ``ray.nodes()``: the CPUs of the largest live node,
    at most :data:`MAX_ACTOR_CPUS`. Each actor holds a backbone and its runtime (about 0.9 GiB
    resident with ONNX Runtime here): one actor per CPU on a 16-CPU node would hold 16 of them.
    On this 2-CPU machine both layouts cost the same on a long job (``benchmarks/ray_embed.py``,
    quiet machine: +5 % with 1 actor of 2 CPUs, +6 % with 2 actors of 1 CPU, against in-process);
    the multi-CPU actor takes about a second longer to start."""
    per_node = [int(node.get("Resources", {}).get("CPU", 0)) for node in nodes if node.get("Alive")]
    return max(1, min(MAX_ACTOR_CPUS, max(per_node, default=1)))


def _on_ray(
    refs: list[str],
    source: EmbedSource,
    *,
    address: str,
    backbone: str,
    image_size: int,
    batch_size: int,
    inference: str | None,
    actors: int | None,
    actor_cpus: int | None = None,
) -> Iterator[Batch]:
    ray, started = attach_ray(address)
    try:
        total = max(1, int(ray.cluster_resources().get("CPU", 1)))
        if actor_cpus is None:  # as many CPUs as a node has (capped), or a share of them all
            actor_cpus = default_actor_cpus(ray.nodes())
            if actors is not None:
                actor_cpus = max(1, min(actor_cpus, total // actors))
        if actors is None:
            actors = max(1, total // actor_cpus)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        # enough blocks for every actor to get work, without one block per batch on huge pools
        blocks = max(1, min(math.ceil(len(refs) / batch_size), max(4 * actors, len(refs) // 4096)))
        items = ray.data.from_items([{"ref": r} for r in refs], override_num_blocks=blocks)
        ds = items.map_batches(
            BatchEmbedder,
            fn_constructor_kwargs={
                "source": source,
                "backbone": backbone,
                "image_size": image_size,
                "batch_size": batch_size,
                "inference": inference,
            },
            batch_size=batch_size,
            batch_format="numpy",
            # a fixed pool of ``actors`` (``concurrency=actors``), each given at most two
            # batches at a time (one embedding, one waiting), so the work spreads over the
            # actors as they come up instead of queueing on the first one ready
            compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=2),
            # Ray sets OMP_NUM_THREADS to this in the actor: its ONNX Runtime session takes as
            # many intra-op threads (labelwheel.features.runtime.inference_threads)
            num_cpus=actor_cpus,
        )
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")
    finally:
        if started:
            ray.shutdown()


def run_embed(
    source: EmbedSource,
    out: Path | str,
    *,
    backbone: str = DEFAULT_BACKBONE,
    image_size: int = DEFAULT_IMAGE_SIZE,
    batch_size: int = 32,
    shard_rows: int = 4096,
    ray_address: str | None = None,
    actors: int | None = None,
    actor_cpus: int | None = None,
    inference: str | None = None,
    progress: bool = False,
) -> EmbedResult:
    """Embed every reference of ``source`` the store at ``out`` does not hold yet.

    ``ray_address`` (``local`` for a Ray started here, else a cluster address such as
    ``ray://head:10001`` or ``auto``) runs the work as a Ray Data job; None runs it in this
    process. Raises ValueError for a bad source, a store written with another backbone or size,
    or a missing ray.
    """
    if batch_size < 1 or shard_rows < 1:
        raise ValueError("batch size and shard rows must be at least 1")
    if actor_cpus is not None and actor_cpus < 1:
        raise ValueError("each Ray actor needs at least 1 CPU (--actor-cpus)")
    if ray_address:
        _host_port(ray_address)
    out = Path(out)
    store: EmbeddingStore | None = None
    if (out / "store.json").exists():
        store = EmbeddingStore.open(out)
        if (store.backbone, store.image_size) != (backbone, int(image_size)):
            raise ValueError(
                f"store {out} holds {store.backbone} at {store.image_size} px, "
                f"not {backbone} at {image_size} px"
            )
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an embedding store")
    result = EmbedResult(store=out)
    refs = source.references()
    result.listed = len(refs)
    done = store.references() if store is not None else set()
    todo = [r for r in dict.fromkeys(refs) if r not in done]
    result.skipped = result.listed - len(todo)
    if not todo:
        return result
    started = time.monotonic()
    if ray_address:
        batches: Iterable[Batch] = _on_ray(
            todo,
            source,
            address=ray_address,
            backbone=backbone,
            image_size=image_size,
            batch_size=batch_size,
            inference=inference,
            actors=actors,
            actor_cpus=actor_cpus,
        )
    else:
        worker = BatchEmbedder(source, backbone, image_size, batch_size, inference)
        batches = _in_process(todo, worker, batch_size)
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="embedding", unit="img", file=sys.stderr)
    pending: list[tuple[str, str, np.ndarray]] = []

    def flush(rows: int) -> None:
        nonlocal store
        while pending and len(pending) >= rows:
            part = pending[:shard_rows]
            vectors = np.stack([v for _, _, v in part])
            if store is None:
                store = EmbeddingStore.create(out, backbone, image_size, vectors.shape[1])
            store.append([r for r, _, _ in part], [h for _, h, _ in part], vectors)
            result.embedded += len(part)
            result.shards += 1
            del pending[: len(part)]

    try:
        for batch in batches:
            if not result.workers:
                result.startup_s = time.monotonic() - started
            result.workers.update(int(w) for w in batch["worker"])
            for ref, sha, vec, err in zip(
                batch["ref"], batch["sha"], batch["vector"], batch["error"], strict=True
            ):
                if err:
                    result.failed.append((str(ref), str(err)))
                else:
                    pending.append((str(ref), str(sha), np.asarray(vec, dtype=np.float32)))
            flush(shard_rows)
            if bar is not None:
                bar.update(len(batch["ref"]))
        flush(1)
        result.seconds = time.monotonic() - started
    finally:
        if bar is not None:
            bar.close()
    return result
