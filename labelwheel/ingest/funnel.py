"""The funnel's first pass: read each incoming image once and decide what is worth keeping.

For each source item, in order, in chunks of the backbone's batch size:

1. an item whose unchanged key the ledger maps to a content already imported or dropped is
   skipped without being read;
2. otherwise its bytes are read once (a worker thread per item of the chunk), hashed (SHA-256),
   decoded safely (:func:`labelwheel.media.decode_image`), turned into the near-duplicate
   descriptor and the backbone's input; the bytes and full-size pixels are freed at once, so at
   most one chunk of small arrays is alive;
3. then, in source order: ``unreadable`` / ``corrupt`` (the media layer's reason), ``exact
   duplicate`` (same hash as a project task or an earlier item), ``near duplicate`` (descriptor
   similarity ≥ the threshold, against the project's images and the items kept so far), else kept
   (a candidate for import, with its embedding);
4. the chunk's decisions are committed to the ledger in one transaction before the next chunk
   (an interrupted run resumes from there).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labelwheel.features import Embedder
from labelwheel.ingest.dedup import NearDuplicateIndex, descriptor
from labelwheel.ingest.project import ProjectContext
from labelwheel.ingest.sources import Source, SourceItem
from labelwheel.ingest.state import Ledger, LedgerItem, sha_of
from labelwheel.media import ImageError, decode_image

__all__ = ["Candidate", "FunnelPass", "Outcome", "run_funnel"]

#: Reasons an item is dropped.
DROP_REASONS = ("unreadable", "corrupt", "exact_duplicate", "near_duplicate")


@dataclass
class Outcome:
    """What happened to one source item that is not a candidate."""

    key: str
    status: str  # "dropped" or "skipped" (decided by an earlier run)
    reason: str
    detail: str | None = None
    sha: str | None = None
    duplicate_of: str | None = None
    similarity: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        out: dict[str, Any] = {"key": self.key, "reason": self.reason}
        for name in ("detail", "duplicate_of", "similarity", "sha"):
            value = getattr(self, name)
            if value is not None:
                out[name] = round(value, 5) if isinstance(value, float) else value
        return out


@dataclass
class Candidate:
    """An item that passed the funnel's checks."""

    item: SourceItem
    sha: str
    vector: np.ndarray


@dataclass
class FunnelPass:
    """Result of the first pass."""

    candidates: list[Candidate] = field(default_factory=list)
    dropped: list[Outcome] = field(default_factory=list)
    skipped: list[Outcome] = field(default_factory=list)
    landed: list[tuple[str, int]] = field(default_factory=list)  # (sha, task id) to complete
    listed: int = 0
    read: int = 0
    seconds: float = 0.0

    @property
    def throughput(self) -> float:
        """Images analysed per second (read, decoded, embedded, checked)."""
        return self.read / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Prepared:
    item: SourceItem
    sha: str | None = None
    error: tuple[str, str] | None = None  # (reason, detail)
    desc: np.ndarray | None = None
    vector: np.ndarray | None = None
    inputs: np.ndarray | None = None


def _prepare(item: SourceItem, source: Source, embedder: Embedder) -> _Prepared:
    """Read, hash, decode, describe and prepare one item (in a worker thread)."""
    out = _Prepared(item)
    try:
        data = source.read(item)
    except ImageError as exc:
        out.error = ("unreadable", exc.reason)
        return out
    except Exception as exc:  # a storage client surprise: report, don't fail the run
        out.error = ("unreadable", exc.__class__.__name__)
        return out
    out.sha = sha_of(data)
    try:
        image = decode_image(data, embedder.max_pixels)
    except ImageError as exc:
        out.error = ("corrupt", exc.reason)
        return out
    except Exception as exc:  # a decoder bug must not fail the run
        out.error = ("corrupt", exc.__class__.__name__)
        return out
    del data
    out.desc = descriptor(image)
    out.vector = embedder.cache.get(out.sha)
    if out.vector is None:
        out.inputs = embedder.backbone().prepare(image)
    return out


def _chunks(items: Iterable[SourceItem], size: int) -> Iterable[list[SourceItem]]:
    chunk: list[SourceItem] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_funnel(
    source: Source,
    ctx: ProjectContext,
    embedder: Embedder,
    ledger: Ledger,
    *,
    near_threshold: float,
    threads: int = 4,
    progress: bool = False,
    on_chunk: Callable[[int], None] | None = None,
) -> FunnelPass:
    """Run the first pass over ``source`` (see the module doc)."""
    result = FunnelPass()
    index = NearDuplicateIndex(near_threshold)
    index.add(ctx.descriptors, [f"task {t}" for t in ctx.descriptor_tasks])
    seen: dict[str, str] = {}  # sha -> key of the first item with it (kept, or decided corrupt)
    started = time.perf_counter()
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="ingest", unit="img", file=sys.stderr)
    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="lw-ingest")
    try:
        for chunk in _chunks(source.items(), max(1, embedder.batch_size)):
            result.listed += len(chunk)
            todo: list[SourceItem] = []
            for item in chunk:
                sha = ledger.known_sha(item.key, item.size, item.version)
                earlier = ledger.get(sha) if sha else None
                if earlier is not None and earlier.status in ("dropped", "imported"):
                    result.skipped.append(_from_ledger(item, earlier))
                else:
                    todo.append(item)
            prepared = list(pool.map(lambda it: _prepare(it, source, embedder), todo))
            result.read += len(prepared)
            _embed(prepared, embedder)
            records, keys = _decide(prepared, ctx, ledger, index, seen, result)
            ledger.record(records, keys)
            if bar is not None:
                bar.update(len(chunk))
            if on_chunk is not None:
                on_chunk(result.listed)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - started
    return result


def _from_ledger(item: SourceItem, earlier: LedgerItem) -> Outcome:
    if earlier.status == "imported":
        return Outcome(
            item.key, "skipped", "already_imported", f"task {earlier.task_id}", earlier.sha
        )
    return Outcome(
        item.key, "skipped", f"already_dropped:{earlier.reason}", earlier.detail, earlier.sha
    )


def _embed(prepared: list[_Prepared], embedder: Embedder) -> None:
    """One backbone pass for the chunk's new contents; vectors go to the embedding cache."""
    by_sha: dict[str, list[_Prepared]] = {}
    for p in prepared:
        if p.inputs is not None and p.sha is not None:
            by_sha.setdefault(p.sha, []).append(p)
    if not by_sha:
        return
    order = list(by_sha)
    stacked = np.stack([by_sha[s][0].inputs for s in order])  # type: ignore[misc]
    vectors = embedder.forward(stacked)
    for sha, vec in zip(order, vectors, strict=True):
        vec = np.ascontiguousarray(vec)
        embedder.cache.put(sha, vec)
        for p in by_sha[sha]:
            p.vector, p.inputs = vec, None


def _decide(
    prepared: list[_Prepared],
    ctx: ProjectContext,
    ledger: Ledger,
    index: NearDuplicateIndex,
    seen: dict[str, str],
    result: FunnelPass,
) -> tuple[list[LedgerItem], list[tuple[str, int, str, str]]]:
    records: list[LedgerItem] = []
    keys: list[tuple[str, int, str, str]] = []
    for p in prepared:
        key = p.item.key
        if p.sha is not None:
            keys.append((key, p.item.size, p.item.version, p.sha))
        if p.error is not None and p.sha is None:
            result.dropped.append(Outcome(key, "dropped", p.error[0], p.error[1]))
            continue
        assert p.sha is not None
        if p.sha in seen:  # before the ledger: this run may have just recorded the first copy
            result.dropped.append(
                Outcome(key, "dropped", "exact_duplicate", None, p.sha, seen[p.sha])
            )
            continue
        earlier = ledger.get(p.sha)
        if earlier is not None and earlier.status in ("dropped", "imported"):
            result.skipped.append(_from_ledger(p.item, earlier))
            continue
        if p.sha in ctx.shas:
            task_id = ctx.shas[p.sha]
            if earlier is not None and earlier.status == "uploading":
                # the upload an interrupted run started did land: import nothing, complete its
                # task data (the caller does, then records it as imported)
                result.landed.append((p.sha, task_id))
                result.skipped.append(
                    Outcome(key, "skipped", "already_imported", f"task {task_id}", p.sha)
                )
                continue
            result.dropped.append(
                Outcome(key, "dropped", "exact_duplicate", None, p.sha, f"task {task_id}")
            )
            continue
        seen[p.sha] = key
        if p.error is not None:
            result.dropped.append(Outcome(key, "dropped", p.error[0], p.error[1], p.sha))
            records.append(LedgerItem(p.sha, key, "dropped", p.error[0], p.error[1]))
            continue
        assert p.desc is not None and p.vector is not None
        near = index.match(p.desc)
        if near is not None:
            owner, sim = near
            result.dropped.append(
                Outcome(key, "dropped", "near_duplicate", None, p.sha, owner, sim)
            )
            records.append(
                LedgerItem(p.sha, key, "dropped", "near_duplicate", f"of {owner} ({sim:.4f})")
            )
            continue
        index.add(p.desc[None, :], [key])
        result.candidates.append(Candidate(p.item, p.sha, p.vector))
        records.append(LedgerItem(p.sha, key, "passed"))
    return records, keys
