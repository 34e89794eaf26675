"""Image references in, embeddings out: fetch, decode, shrink, embed, cache, in bounded chunks.

:class:`Embedder` is the one path from an image reference to its embedding, used by the ML
backend, the data-lead tools and the demo alike:

- an image is embedded once per backbone and input size: vectors are cached by the SHA-256 of
  the image bytes (:class:`~labelwheel.features.cache.EmbeddingCache`), and a caller that knows
  a reference's hash (``known``) does not even fetch it again;
- decoding overlaps inference (``pipelined``, the default): worker threads of the call fetch,
  decode and shrink the next images while the current pass runs through the backbone
  (:func:`labelwheel.features.pipeline.ordered_map`; Pillow, hashing and ONNX Runtime release
  the GIL). At most ``max(fetch_threads, 2 * passes)`` images are started ahead of the backbone,
  so at most two passes' inputs wait, decoded. ``pipelined=False`` is the sequential path:
  a chunk of ``batch_size`` images is read and decoded, then embedded, then the next chunk.
  With local files on a 2-core machine both stages are CPU-bound and the backbone already
  uses every core, so the overlap does not pay (0.91-0.95x the sequential rate on photos,
  0.97-1.01x on small PNGs: medians of 24 paired runs in each of four benchmark runs,
  ``benchmarks/results/embed_throughput.md``): local reads (``embed_refs(local=True)``) go
  sequential, on :func:`local_read_threads` threads; the overlap pays where reads wait on a
  network;
- memory does not grow with the number of references or their resolution: each image is
  fetched, decoded (JPEGs at reduced size by Pillow's ``draft``, others reduced right after
  decoding) and shrunk to the backbone's small float32 input array by one worker thread, and
  its bytes and full-size pixels are freed at once. Full-size decodes share the process's pixel
  budget (:data:`labelwheel.media.decode.DECODE_BUDGET`), so a batch of 25-megapixel images
  decodes one at a time whatever ``fetch_threads`` is; at most ``fetch_threads`` fetched files
  wait;
- the backbone sees at most :data:`FORWARD_PIXELS` input pixels per pass (4 images at 224 px,
  16 at 112): a pass holds activations that grow with its batch (EfficientNet-Lite0 at 224 px,
  PyTorch on CPU: about 90 MB for 4 images, 160 MB for 8, 600 MB for 32), and on CPU more than a
  few images per pass gain little speed;
- per-image failures are reported in :attr:`Embedded.errors`, never raised.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelwheel.features.backbone import Backbone, load_backbone
from labelwheel.features.cache import EmbeddingCache, content_hash
from labelwheel.features.pipeline import ProcessPool, ordered_map
from labelwheel.features.runtime import inference_threads
from labelwheel.media import ImageError, decode_image

__all__ = ["Embedded", "Embedder", "local_read_threads", "short_ref"]

log = logging.getLogger("labelwheel.features")

FORWARD_PIXELS = 4 * 224 * 224
"""Most input pixels in one backbone pass (bounds the activations' memory)."""


@functools.cache
def local_read_threads() -> int:
    """Threads for a call whose reads touch only local disk or memory (files, ``data:`` URIs):
    one per lane of the backbone's pass (:func:`labelwheel.features.runtime.inference_threads`:
    the physical cores, or ``OMP_NUM_THREADS`` as Ray sets it for an actor) and one more.

    Such reads are CPU-bound (decoding): more threads only take the cores from the backbone's
    pass and from each other. Measured on 2 cores (medians of 24 paired runs in each of four
    benchmark runs, ``benchmarks/results/embed_throughput.md``): 3 threads 1.05-1.08x the rate
    of 8 on photos, 1.01-1.05x on small PNGs. Reads over a network wait, and keep the
    Embedder's ``fetch_threads``. Counted once per process (it reads ``/sys``: 0.4 ms)."""
    return inference_threads() + 1


Reader = Callable[[str], bytes]
"""Reads the bytes behind an image reference; raises ImageError (or anything) on failure."""


@dataclass
class Embedded:
    """Outcome of embedding a list of image references (aligned with the input)."""

    vectors: list[np.ndarray | None]
    hashes: list[str | None]
    errors: list[str | None]
    new_hashes: dict[str, str] = field(default_factory=dict)  # ref -> hash learnt by fetching
    # positions not attempted because the call's deadline passed (no vector and no error)
    deferred: list[int] = field(default_factory=list)

    @property
    def ok(self) -> list[int]:
        """Positions that have a vector."""
        return [i for i, v in enumerate(self.vectors) if v is not None]


def short_ref(ref: object, limit: int = 80) -> str:
    """A reference shortened for logs (a ``data:`` URI shows only its header)."""
    text = str(ref)
    if text.startswith("data:"):
        return text[: text.find(",") + 1] + "..." if "," in text else "data:..."
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Embedder:
    """Embeds images by reference with one backbone, loaded on first use (thread-safe)."""

    def __init__(
        self,
        backbone: str,
        image_size: int,
        batch_size: int = 32,
        *,
        cache_root: Path | str | None = None,
        max_pixels: int = 40_000_000,
        loader: Callable[[], Backbone] | None = None,
        fetch_threads: int = 8,
        inference: str | None = None,
        pipelined: bool = True,
    ) -> None:
        if fetch_threads < 1:
            raise ValueError(f"fetch_threads must be at least 1, got {fetch_threads}")
        self.backbone_name = backbone
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.forward_batch = max(1, min(self.batch_size, FORWARD_PIXELS // self.image_size**2))
        self.max_pixels = int(max_pixels)
        self.cache = EmbeddingCache(cache_root, backbone, image_size)
        self._loader = loader
        self._inference = inference  # auto / torch / onnx; None: $LABELWHEEL_INFERENCE
        self._backbone: Backbone | None = None
        self._backbone_lock = threading.Lock()
        self._forward_lock = threading.Lock()
        self._fetch_threads = fetch_threads
        self._writer = ProcessPool(1, "lw-cache")  # writes the cache's files
        self.pipelined = bool(pipelined)
        self.images_embedded = 0

    # -- backbone -------------------------------------------------------------------------------

    def backbone(self) -> Backbone:
        """The backbone, loaded on first use (once per embedder)."""
        if self._backbone is None:
            with self._backbone_lock:
                if self._backbone is None:
                    if self._loader is not None:
                        net = self._loader()
                    else:
                        # The weights package prints a line on stdout: keep stdout for output.
                        with contextlib.redirect_stdout(sys.stderr):
                            net = load_backbone(
                                self.backbone_name,
                                self.image_size,
                                self.batch_size,
                                inference=self._inference,
                            )
                    log.info(
                        "backbone %s loaded (%d px, %d dims)", net.name, net.image_size, net.dim
                    )
                    self._backbone = net
        return self._backbone

    @property
    def backbone_loaded(self) -> bool:
        """Whether the backbone has been loaded yet."""
        return self._backbone is not None

    def close(self) -> None:
        """Nothing to stop: fetch threads belong to a call while it reads (each call has its
        own, so one caller's slow images never queue another caller's fetches), then wait idle
        for the next call and end on their own (:mod:`labelwheel.features.pipeline`)."""

    # -- embedding ------------------------------------------------------------------------------

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        """One backbone call for a list of PIL images (serialised across threads)."""
        net = self.backbone()
        return self.forward(np.stack([net.prepare(im) for im in images]) if images else None)

    def forward(self, inputs: np.ndarray | None) -> np.ndarray:
        """Embed prepared backbone inputs (serialised across threads)."""
        net = self.backbone()
        if inputs is None or len(inputs) == 0:
            return np.zeros((0, net.dim), dtype=np.float32)
        step = self.forward_batch
        with self._forward_lock:
            parts = [net.forward(inputs[i : i + step]) for i in range(0, len(inputs), step)]
        self.images_embedded += len(inputs)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def embed_refs(
        self,
        refs: Sequence[str | None],
        read: Reader,
        *,
        known: Mapping[str, str] | None = None,
        progress: bool = False,
        desc: str = "embedding",
        local: bool = False,
        threads: int | None = None,
        pipelined: bool | None = None,
        deadline: float | None = None,
    ) -> Embedded:
        """Embed every reference; see the module doc. ``known`` maps references to the content
        hashes learnt earlier (their cached vectors are used without fetching).

        ``local``: every read touches only local disk or memory (files, ``data:`` URIs). Then
        decoding is the work: the call reads on at most :func:`local_read_threads` threads and
        goes sequential (both stages are CPU-bound; overlapping them measured 0.91-0.95x the
        rate on photos, 0.97-1.01x on small PNGs). Otherwise it reads on ``fetch_threads``
        threads, pipelined or not as :attr:`pipelined` says. ``threads`` and ``pipelined``
        override this call's choice.

        ``deadline`` (a :func:`time.monotonic` value): images not started by then are left
        undone, their positions listed in :attr:`Embedded.deferred`. The first chunk (sequential)
        or backbone pass's worth of images (pipelined) is always done, so every call progresses."""
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if threads is not None:
            workers = int(threads)
        elif local:
            workers = min(self._fetch_threads, local_read_threads())
        else:
            workers = self._fetch_threads
        if pipelined is None:
            pipelined = self.pipelined and not local
        n = len(refs)
        out = Embedded([None] * n, [None] * n, [None] * n)
        known = known or {}
        todo: list[int] = []
        for i, ref in enumerate(refs):
            if not isinstance(ref, str) or not ref:
                out.errors[i] = "task has no image reference for the config's data key"
                continue
            sha = known.get(ref) or self.cache.hash_of(ref)
            vec = self.cache.get(sha) if sha is not None else None
            if vec is not None:
                out.vectors[i], out.hashes[i] = vec, sha
            else:
                todo.append(i)
        bar: Any = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n, initial=n - len(todo), desc=desc, unit="img", file=sys.stderr)
        keep = _Keep(self.cache, self._writer.get() if todo and self.cache.dir else None)
        try:
            if pipelined:
                self._embed_stream(refs, todo, read, out, workers, keep, bar, deadline)
            else:
                chunk = max(1, self.batch_size)
                for start in range(0, len(todo), chunk):
                    if start and deadline is not None and time.monotonic() > deadline:
                        out.deferred.extend(todo[start:])
                        break
                    self._embed_chunk(refs, todo[start : start + chunk], read, out, workers, keep)
                    if bar is not None:
                        bar.update(len(todo[start : start + chunk]))
        finally:
            keep.wait()  # the call's cache files exist when it returns
            if bar is not None:
                bar.close()
        return out

    def _embed_stream(
        self,
        refs: Sequence[str | None],
        positions: list[int],
        read: Reader,
        out: Embedded,
        threads: int,
        keep: _Keep,
        bar: Any = None,
        deadline: float | None = None,
    ) -> None:
        """The pipelined path: images are prepared ahead on this call's threads (bounded, in
        order) while the backbone embeds the current pass; each content is embedded once. Past
        ``deadline`` (after one pass's worth), the images not yet taken are deferred."""
        if not positions:
            return
        # Threads of this call only (see _embed_chunk); a request whose images sit on a slow
        # host never queues another request's fetches.
        workers = min(threads, len(positions))
        step = self.forward_batch
        ahead = max(workers, 2 * step)
        batch: list[np.ndarray] = []  # inputs of the next pass, one per distinct content
        batch_shas: list[str] = []
        waiting: dict[str, list[int]] = {}  # content -> positions waiting for its vector
        done: dict[str, np.ndarray] = {}  # content -> vector embedded by this call
        taken = 0

        def flush() -> None:
            nonlocal taken
            vectors = keep(batch_shas, self.forward(np.stack(batch)))
            batch.clear()
            for sha, vec in zip(batch_shas, vectors, strict=True):
                done[sha] = vec
                for i in waiting.pop(sha):
                    out.vectors[i] = vec
            batch_shas.clear()
            if bar is not None:
                bar.update(taken)
            taken = 0

        prepared = ordered_map(
            lambda i: self._prepare(str(refs[i]), read),
            positions,
            workers=workers,
            ahead=ahead,
            thread_name_prefix="lw-fetch",
        )
        try:
            for k, i in enumerate(positions):
                if k >= step and deadline is not None and time.monotonic() > deadline:
                    out.deferred.extend(positions[k:])
                    break  # what is gathered is embedded below; read-ahead is dropped
                sha, item, err = next(prepared)
                taken += 1
                if err is not None:
                    out.errors[i] = err
                    continue
                assert sha is not None and item is not None
                out.hashes[i] = sha
                out.new_hashes[str(refs[i])] = sha
                if item.ndim == 1:  # already cached under this content
                    out.vectors[i] = item
                elif sha in done:
                    out.vectors[i] = done[sha]
                elif sha in waiting:  # the same content is in the pass being gathered
                    waiting[sha].append(i)
                else:
                    waiting[sha] = [i]
                    batch.append(item)
                    batch_shas.append(sha)
                    if len(batch) >= step:
                        flush()
                del item
            if batch:
                flush()
            elif bar is not None and taken:
                bar.update(taken)
        finally:
            prepared.close()

    def _embed_chunk(
        self,
        refs: Sequence[str | None],
        positions: list[int],
        read: Reader,
        out: Embedded,
        threads: int,
        keep: _Keep,
    ) -> None:
        # Threads of this call only: with one pool shared by every caller, a request whose images
        # sit on a slow host would fill its FIFO queue and every other request would wait behind
        # it. Connections per host are bounded by the fetcher, memory by the decode budget.
        workers = min(threads, len(positions))
        if workers <= 1:
            results = [self._prepare(str(refs[i]), read) for i in positions]
        else:  # the whole chunk is read and decoded before it is embedded
            results = list(
                ordered_map(
                    lambda i: self._prepare(str(refs[i]), read),
                    positions,
                    workers=workers,
                    ahead=len(positions),
                    thread_name_prefix="lw-fetch",
                )
            )
        inputs: dict[str, np.ndarray] = {}
        waiting: dict[str, list[int]] = {}
        for i, (sha, item, err) in zip(positions, results, strict=True):
            ref = str(refs[i])
            if err is not None:
                out.errors[i] = err
                continue
            assert sha is not None and item is not None
            out.hashes[i] = sha
            out.new_hashes[ref] = sha
            if item.ndim == 1:  # already cached under this content
                out.vectors[i] = item
                continue
            inputs.setdefault(sha, item)
            waiting.setdefault(sha, []).append(i)
        del results  # the prepared inputs are referenced by ``inputs`` only, freed as used
        order = list(inputs)
        step = self.forward_batch
        for start in range(0, len(order), step):
            part = order[start : start + step]
            vectors = keep(part, self.forward(np.stack([inputs.pop(sha) for sha in part])))
            for sha, vec in zip(part, vectors, strict=True):
                for i in waiting[sha]:
                    out.vectors[i] = vec

    def _prepare(self, ref: str, read: Reader) -> tuple[str | None, np.ndarray | None, str | None]:
        """(hash, cached vector or prepared input, error) for one reference; the image's bytes
        and pixels live only inside this call."""
        try:
            data = read(ref)
        except ImageError as exc:
            return None, None, f"image {short_ref(ref)}: {exc.reason}"
        except Exception as exc:  # network library surprises: report, don't fail the batch
            return None, None, f"image {short_ref(ref)}: fetch failed ({exc.__class__.__name__})"
        sha = content_hash(data)
        vec = self.cache.get(sha)
        if vec is not None:
            return sha, vec, None
        try:
            image = decode_image(data, self.max_pixels, min_size=self.image_size)
            del data
            return sha, self.backbone().prepare(image), None
        except ImageError as exc:
            return None, None, f"image {short_ref(ref)}: {exc.reason}"
        except Exception as exc:  # a decoder bug must not fail the batch
            return None, None, f"image {short_ref(ref)}: cannot decode ({exc.__class__.__name__})"


class _Keep:
    """A call's new embeddings: kept in the cache's memory at once, their files written by the
    embedder's writer thread while the call's next passes run (not between them, with a core
    idle), one job per pass, and waited for when the call ends (:meth:`wait`)."""

    def __init__(self, cache: EmbeddingCache, writer: ThreadPoolExecutor | None) -> None:
        self.cache = cache
        self.writer = writer
        self.writes: list[Future[None]] = []

    def __call__(self, shas: Sequence[str], vectors: np.ndarray) -> list[np.ndarray]:
        """Keep a pass's vectors (by content hash); returns them as the cache holds them."""
        kept = [self.cache.remember(sha, vec) for sha, vec in zip(shas, vectors, strict=True)]
        pairs = list(zip(shas, kept, strict=True))
        if self.writer is None:
            self._write(pairs)
        else:
            self.writes.append(self.writer.submit(self._write, pairs))
        return kept

    def _write(self, pairs: list[tuple[str, np.ndarray]]) -> None:
        for sha, vec in pairs:
            self.cache.write(sha, vec)

    def wait(self) -> None:
        for write in self.writes:
            write.result()  # write() logs its own failures and never raises
        self.writes.clear()
