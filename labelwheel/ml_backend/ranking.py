"""Ranking orchestration: a project's queue positions, computed over its whole pool and cached.

The pool is the project's unlabelled tasks as Label Studio lists them plus the annotated images
the store holds; :func:`labelwheel.pool.queue_order` orders it. The ranking is cached per project
and model version and recomputed, in a background job per project
(:mod:`labelwheel.ml_backend.pool_jobs`), when the version changes or tasks appear. The
statistics of the pool's embeddings (:class:`~labelwheel.head.Scaling`) are kept beside it (in
memory and in ``MODEL_DIR/projects/<id>/scaling.npz``) so that training standardises as ranking
does, also after a restart; with the semi-supervised head the pool's embeddings are saved too
(``pool.npy``), for the training process to memory-map.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from labelwheel.fsio import atomic_save_array, atomic_write_bytes
from labelwheel.head import Head, Scaling
from labelwheel.media.storage import task_image_ref
from labelwheel.npyio import load_npz
from labelwheel.pool import COLD_START_STRATEGY, queue_order_stacked
from labelwheel.pool.confidence import confidence_from_proba, summarise
from labelwheel.pool.control import control_seed, interleave_control
from labelwheel.records import PoolConfidence

if TYPE_CHECKING:  # pragma: no cover
    from labelwheel.label_config import ClassificationConfig
    from labelwheel.ml_backend.config import Settings
    from labelwheel.ml_backend.link import LabelStudioLink
    from labelwheel.ml_backend.store import Store

log = logging.getLogger("labelwheel.ml_backend")

EmbedFn = Callable[[Sequence[str | None]], Any]  # refs -> labelwheel.features.Embedded
CurrentFn = Callable[[int], tuple[str, Head | None]]
ProgressFn = Callable[[str, int, int], None]  # (state, done, total)


@dataclass
class PoolRanking:
    """Scores of a project's unlabelled pool under one model version."""

    version: str
    epoch: int
    scores: dict[int, float]
    strategy: str
    source: str  # "pool" (Label Studio's task list) or "batch"
    computed: float
    pool_size: int
    control: frozenset[int] = field(default_factory=frozenset)
    """Task ids in the random control slice (``LABELWHEEL_CONTROL_FRACTION``)."""
    control_confidence: dict[int, float] = field(default_factory=dict)
    """Control task id -> the version's calibrated confidence in its pre-label."""
    pool_confidence: PoolConfidence | None = None
    """The version's confidence over the ranked unlabelled pool (with a control slice)."""


def task_ref(task: dict[str, Any], data_key: str) -> str | None:
    """The image reference of a task under a config's data key, or None. A cloud-storage URI
    (``s3://``, ``gs://``, ``azure-blob://`` ...) becomes the task's Label Studio resolve path
    (see :func:`labelwheel.media.storage.task_image_ref`)."""
    data = task.get("data")
    if not isinstance(data, dict):
        return None
    ref = data.get(data_key)
    if not isinstance(ref, str) or not ref.strip():
        return None
    return task_image_ref(ref, task.get("id"), task.get("project"))


def _unlabelled(tasks: list[Any], labelled: set[int]) -> list[dict[str, Any]]:
    return [
        t
        for t in tasks
        if isinstance(t, dict)
        and isinstance(t.get("id"), int)
        and t["id"] not in labelled
        and not t.get("total_annotations")
        and not t.get("cancelled_annotations")
        and not t.get("is_labeled")
    ]


class Rankings:
    """Per-project pool rankings and pool statistics (thread-safe)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        link: LabelStudioLink,
        embed: EmbedFn,
        current: CurrentFn,
        cached_vector: Callable[[str], np.ndarray | None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.link = link
        self._embed = embed
        self._current = current
        self._cached_vector = cached_vector
        self._rankings: dict[int, PoolRanking] = {}
        self._epochs: dict[int, int] = {}
        self._scalings: dict[int, Scaling] = {}
        self._last: dict[int, PoolRanking] = {}
        self._lock = threading.Lock()

    # -- pool statistics ----------------------------------------------------------------------

    def _scaling_path(self, project_id: int) -> Path:
        return self.settings.model_dir / "projects" / str(project_id) / "scaling.npz"

    def scaling(self, project_id: int) -> Scaling | None:
        """The statistics of the project's pool at its last ranking, if any."""
        with self._lock:
            if project_id in self._scalings:
                return self._scalings[project_id]
        try:
            npz = load_npz(self._scaling_path(project_id), keys=("mean", "scale"))
            found = Scaling(npz["mean"].astype(np.float32), npz["scale"].astype(np.float32))
        except (OSError, ValueError, KeyError):
            return None
        with self._lock:
            self._scalings.setdefault(project_id, found)
        return found

    def _remember_scaling(self, project_id: int, scaling: Scaling) -> None:
        with self._lock:
            self._scalings[project_id] = scaling
        buf = io.BytesIO()
        np.savez(buf, mean=scaling.mean, scale=scaling.scale)
        try:
            atomic_write_bytes(self._scaling_path(project_id), buf.getvalue())
        except OSError as exc:  # pragma: no cover - disk full: training falls back to labels
            log.warning("project %d: cannot save the pool statistics (%s)", project_id, exc)

    def pool_path(self, project_id: int) -> Path | None:
        """The project's pool embeddings at its last ranking (``pool.npy``: unlabelled rows,
        then the labelled ones), for the semi-supervised head; None when none was saved
        (``LABELWHEEL_HEAD_SEMI=none``, or no ranking yet)."""
        path = self._pool_path(project_id)
        return path if path.is_file() else None

    def _pool_path(self, project_id: int) -> Path:
        return self.settings.model_dir / "projects" / str(project_id) / "pool.npy"

    def _remember_pool(self, project_id: int, stacked: np.ndarray) -> None:
        """Save the ranked pool's matrix for the training process, which memory-maps it: the
        server keeps no copy of it (N·d·4 bytes on disk, 98 MiB at 20,000 × 1,280)."""
        try:
            atomic_save_array(self._pool_path(project_id), stacked)
        except OSError as exc:  # pragma: no cover - disk full: training falls back to plain
            log.warning("project %d: cannot save the pool's embeddings (%s)", project_id, exc)

    # -- cache --------------------------------------------------------------------------------

    def invalidate(self, project_id: int) -> None:
        """Forget the cached pool ranking of a project (new tasks, new version)."""
        with self._lock:
            self._epochs[project_id] = self._epochs.get(project_id, 0) + 1
            self._rankings.pop(project_id, None)

    def cached(self, project_id: int) -> PoolRanking | None:
        """The cached pool ranking if it is still valid."""
        version = self._current(project_id)[0]
        with self._lock:
            ranking = self._rankings.get(project_id)
            epoch = self._epochs.get(project_id, 0)
        if ranking is not None and ranking.version == version and ranking.epoch == epoch:
            return ranking
        return None

    # -- ranking ------------------------------------------------------------------------------

    def last(self, project_id: int) -> PoolRanking | None:
        """The project's most recent pool ranking, valid or not (provisional scores)."""
        with self._lock:
            return self._last.get(project_id)

    def compute(
        self,
        project_id: int,
        config: ClassificationConfig,
        progress: ProgressFn | None = None,
    ) -> PoolRanking | None:
        """Rank the project's unlabelled pool (listed from Label Studio) and cache the result.

        Runs in the project's pool job (:mod:`labelwheel.ml_backend.pool_jobs`), never in a
        request. Images are embedded in chunks of ``LABELWHEEL_BATCH_SIZE`` through the content-hash
        cache (a known image costs no backbone pass), and ``progress(state, done, total)`` is
        called after each. Memory is O(pool size): one vector per task. Returns None when Label
        Studio's URL/key are unknown; raises when Label Studio answers with an error.
        """
        report = progress or (lambda state, done, total: None)
        with self._lock:
            epoch = self._epochs.get(project_id, 0)
        version, _ = self._current(project_id)
        client = self.link.client()
        if client is None:
            return None
        tasks: list[Any] = []
        for task in client.iter_tasks(project_id, page_size=500):
            tasks.append(task)
            if len(tasks) % 500 == 0:
                report("listing", len(tasks), 0)
        pool = _unlabelled(tasks, self.store.labelled_task_ids(project_id))
        del tasks
        refs = [task_ref(t, config.data_key) for t in pool]
        ids = [int(t["id"]) for t in pool]
        del pool
        # One float32 matrix, filled as the pool is embedded, with the labelled items' rows
        # after the pool's: the selectors read it as it is (no stacked copy of the pool).
        lab = self._labelled_embeddings(project_id)
        n_lab = 0 if lab is None else len(lab)
        matrix: np.ndarray | None = None
        ok: list[int] = []
        report("embedding", 0, len(refs))
        chunk = max(1, self.settings.batch_size)
        for start in range(0, len(refs), chunk):
            embedded = self._embed(refs[start : start + chunk])
            for offset, vector in enumerate(embedded.vectors):
                if vector is None:
                    continue
                if matrix is None:
                    matrix = np.empty((len(refs) + n_lab, len(vector)), dtype=np.float32)
                matrix[len(ok)] = vector
                ok.append(start + offset)
            del embedded
            report("embedding", min(start + chunk, len(refs)), len(refs))
        report("ranking", len(refs), len(refs))
        stacked = None
        if matrix is not None:
            if lab is not None:
                matrix[len(ok) : len(ok) + n_lab] = lab
            stacked = matrix[: len(ok) + n_lab]
        ranking = self._rank(project_id, ids, ok, stacked, "pool", remember=True, version=version)
        ranking.version, ranking.epoch = version, epoch
        if ranking.control:
            self.store.record_control_tasks(
                project_id, version, sorted(ranking.control), ranking.control_confidence
            )
            if ranking.pool_confidence is not None and ranking.pool_confidence.n:
                self.store.record_control_pool(project_id, version, ranking.pool_confidence)
        with self._lock:
            self._last[project_id] = ranking
            if self._epochs.get(project_id, 0) == epoch:
                self._rankings[project_id] = ranking
        return ranking

    def rank_batch(
        self, project_id: int, task_ids: list[int], vectors: list[np.ndarray | None]
    ) -> PoolRanking:
        """Fallback: rank the tasks of one request among themselves."""
        ok = [i for i, v in enumerate(vectors) if v is not None]
        stacked = None
        if ok:
            lab = self._labelled_embeddings(project_id)
            rows: list[np.ndarray] = [v for v in vectors if v is not None]
            if lab is not None:
                rows.append(lab)
            stacked = np.vstack(rows).astype(np.float32)
        ranking = self._rank(project_id, task_ids, ok, stacked, "batch", remember=False)
        ranking.version = self._current(project_id)[0]
        return ranking

    def _labelled_embeddings(self, project_id: int) -> np.ndarray | None:
        refs = [a.image_ref for a in self.store.training_set(project_id) if a.image_ref]
        hashes = self.store.image_hashes(refs)
        # In training-set order (annotation id), not the store's: the selectors' clustering
        # depends on row order, and the same labels must give the same ranking.
        found = (self._cached_vector(hashes[r]) for r in refs if r in hashes)
        vecs = [v for v in found if v is not None]
        return np.vstack(vecs).astype(np.float32) if vecs else None

    def _rank(
        self,
        project_id: int,
        task_ids: list[int],
        ok: list[int],
        stacked: np.ndarray | None,
        source: str,
        remember: bool,
        version: str | None = None,
    ) -> PoolRanking:
        """Scores rank/pool_size for ``task_ids``; tasks without an embedding rank last.

        ``ok``: positions (in ``task_ids``) of the tasks with an embedding, in the order of the
        first ``len(ok)`` rows of ``stacked``; the labelled items' rows follow them.
        With ``version`` and a serving head, ``LABELWHEEL_CONTROL_FRACTION`` of the queue is the
        version's random control slice (:func:`labelwheel.pool.control.interleave_control`)."""
        pool_size = len(task_ids)
        _, head = self._current(project_id)
        strategy = self.settings.strategy if head is not None else COLD_START_STRATEGY
        order: list[int] = []
        probs: np.ndarray | None = None
        if ok and stacked is not None:
            if remember:
                self._remember_scaling(project_id, Scaling.of(stacked))
                if self.settings.head_semi != "none":
                    self._remember_pool(project_id, stacked)
            queue = queue_order_stacked(
                stacked,
                len(ok),
                strategy=self.settings.strategy,
                head=head,
                depth=self.settings.rank_depth,
                first_batch=self.settings.retrain_every or 10,
            )
            strategy, probs = queue.strategy, queue.probabilities
            order = [ok[p] for p in queue.order]
        has_vector = set(ok)
        order.extend(i for i in range(pool_size) if i not in has_vector)
        control: frozenset[int] = frozenset()
        fraction = self.settings.control_fraction
        if version is not None and head is not None and fraction > 0 and order:
            sliced = interleave_control(
                order,
                fraction,
                seed=control_seed(project_id, version),
                keys=task_ids,
            )
            order = sliced.order
            control = frozenset(task_ids[i] for i in sliced.control)
        scores = {task_ids[i]: rank / max(pool_size, 1) for rank, i in enumerate(order)}
        ranking = PoolRanking("", 0, scores, strategy, source, time.time(), pool_size, control)
        if control and head is not None and probs is not None:
            # the PPI estimate's inputs (labelwheel.lead.honest.ppi_accuracy): the version's
            # confidence in every unlabelled task's pre-label, from the probabilities the
            # ranking already computed
            conf = confidence_from_proba(probs[: len(ok)], head.multi_label)
            ranking.pool_confidence = summarise(conf)
            ranking.control_confidence = {
                task_ids[i]: float(conf[p]) for p, i in enumerate(ok) if task_ids[i] in control
            }
        return ranking
