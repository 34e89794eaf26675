"""What the project already holds: its images' hashes, descriptors, embeddings and current head.

The project's tasks are loaded with :func:`labelwheel.pool.load_project_pool` (the same fetch
policy and embedding cache as the ML backend and the lead tools). Its images are fetched only when
something about them is not known yet: a task whose content hash is known (from its
``labelwheel_sha256`` data field, written by ``labelwheel ingest``, or from the ledger) and whose
embedding and descriptor are stored is not fetched again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labelwheel.features import Embedded, Embedder, content_hash
from labelwheel.ingest.dedup import DESCRIPTOR_DIM, descriptor
from labelwheel.ingest.state import Ledger
from labelwheel.media import ImageError, decode_image

__all__ = ["SHA_FIELD", "ProjectContext", "load_project_context"]

#: Task data field holding the image's content hash (written by ``labelwheel ingest``).
SHA_FIELD = "labelwheel_sha256"


@dataclass
class ProjectContext:
    """The project as the funnel compares against it."""

    project_id: int
    title: str
    data_key: str
    labels: tuple[str, ...]
    shas: dict[str, int] = field(default_factory=dict)  # content hash -> task id
    descriptors: np.ndarray = field(
        default_factory=lambda: np.zeros((0, DESCRIPTOR_DIM), dtype=np.float32)
    )
    descriptor_tasks: list[int] = field(default_factory=list)
    embeddings: np.ndarray | None = None  # (tasks with a readable image, d)
    head: Any = None  # labelwheel.head.Head fitted on the labelled tasks, or None
    n_tasks: int = 0
    n_labeled: int = 0
    unreadable: int = 0


def load_project_context(
    client: Any,
    project_id: int,
    embedder: Embedder,
    ledger: Ledger,
    *,
    max_pixels: int = 40_000_000,
    progress: bool = False,
) -> ProjectContext:
    """Load the project (raises ValueError for an unknown project or a config that is not image
    classification); an empty project gives an empty context."""
    from labelwheel.label_config import parse_classification_config
    from labelwheel.pool import get_project_or_fail, load_project_pool, project_reader

    project = get_project_or_fail(client, project_id)
    config = parse_classification_config(project.get("label_config") or "")
    ctx = ProjectContext(
        project_id=int(project_id),
        title=str(project.get("title") or ""),
        data_key=config.data_key,
        labels=tuple(config.labels),
    )
    tasks = list(client.iter_tasks(project_id, fields="all"))
    ctx.n_tasks = len(tasks)
    if not tasks:
        return ctx
    refs = [str((t.get("data") or {}).get(config.data_key) or "") for t in tasks]
    learnt = ledger.ref_shas()
    claimed: dict[str, str] = {}
    for task, ref in zip(tasks, refs, strict=True):
        sha = (task.get("data") or {}).get(SHA_FIELD) or learnt.get(ref)
        if isinstance(sha, str) and ref:
            claimed[ref] = sha
    stored = ledger.descriptors(claimed.values())
    known = {ref: sha for ref, sha in claimed.items() if sha in stored}
    fresh: dict[str, np.ndarray] = {}
    lock = threading.Lock()
    base_read = project_reader(client)

    def read(ref: str) -> bytes:
        data = base_read(ref)
        try:
            vec = descriptor(decode_image(data, max_pixels))
        except ImageError:
            return data  # the embedder reports the same failure
        with lock:
            fresh[content_hash(data)] = vec
        return data

    captured: dict[str, Embedded] = {}

    def embed(task_refs: list[str]) -> Embedded:
        out = embedder.embed_refs(
            task_refs, read, known=known, progress=progress, desc="project images"
        )
        captured["out"] = out
        return out

    try:
        pool = load_project_pool(client, project_id, tasks=tasks, embed=embed)
    except ValueError as exc:
        if "no readable images" not in str(exc):
            raise
        pool = None  # nothing readable: compare by the hashes the tasks declare
    embedded = captured["out"]
    descriptors = {**stored, **fresh}
    rows: list[np.ndarray] = []
    for task, sha in zip(tasks, embedded.hashes, strict=True):
        if sha is None:
            continue
        ctx.shas.setdefault(sha, int(task["id"]))
        vec = descriptors.get(sha)
        if vec is not None:
            rows.append(vec)
            ctx.descriptor_tasks.append(int(task["id"]))
    if rows:
        ctx.descriptors = np.stack(rows).astype(np.float32)
    task_of_ref = {ref: int(t["id"]) for t, ref in zip(tasks, refs, strict=True)}
    for ref, sha in claimed.items():  # declared by tasks whose image cannot be read now
        ctx.shas.setdefault(sha, task_of_ref[ref])
    ledger.remember_project(
        {ref: sha for ref, sha in zip(refs, embedded.hashes, strict=True) if sha and ref},
        {sha: v for sha, v in fresh.items() if sha in ctx.shas},
    )
    if pool is None:
        ctx.unreadable = len(tasks)
        return ctx
    ctx.unreadable = len(pool.skipped)
    ctx.embeddings = pool.embeddings
    ctx.n_labeled = pool.n_labeled
    ctx.head = _fit_head(pool)
    return ctx


def _fit_head(pool: Any) -> Any:
    """The project's current head: fitted on its labelled tasks as the backend fits it, or None
    with fewer than two classes labelled."""
    from labelwheel.head import NotEnoughLabels, Scaling, fit_head

    mask = pool.labeled_mask
    if mask.sum() < 2:
        return None
    sets = [pool.label_sets[i] for i in np.flatnonzero(mask)]
    try:
        return fit_head(
            pool.embeddings[mask],
            sets,
            pool.classes,
            pool.multi_label,
            scaling=Scaling.of(pool.embeddings),
        )
    except NotEnoughLabels:
        return None
