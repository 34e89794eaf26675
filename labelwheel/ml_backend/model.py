"""The ML backend's model: heads per project, training, queue scores and predictions.

One :class:`Model` per process, shared by every request thread and the training worker. It is
the backend's façade over the lower floor:

- images are embedded by :class:`labelwheel.features.Embedder` (once, ever, by content hash;
  bounded memory per batch), read through the media layer's fetcher with Label Studio's
  credentials (:class:`~labelwheel.ml_backend.link.LabelStudioLink`);
- the head is :mod:`labelwheel.head`'s (the one the simulator and the lead tools use), fitted in
  a separate process (:mod:`labelwheel.ml_backend.training`) and stored as a version's artifact;
- the task-level score is the task's rank among the project's unlabelled pool under the
  configured selector, divided by the pool size (:mod:`labelwheel.ml_backend.ranking`): in
  ``[0, 1)``, **lower = label sooner**.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from labelwheel.features import Backbone, Embedded, Embedder
from labelwheel.head import Head, NotEnoughLabels, Scaling, TrainingError, load_head, save_head
from labelwheel.ml_backend.config import Settings
from labelwheel.ml_backend.deferred import DeferredPredictions
from labelwheel.ml_backend.pool_jobs import PoolJobs
from labelwheel.ml_backend.ranking import PoolRanking, Rankings, task_ref
from labelwheel.ml_backend.store import Annotation, Store, Version
from labelwheel.ml_backend.training import FitProcess

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from labelwheel.label_config import ClassificationConfig
    from labelwheel.ml_backend.link import LabelStudioLink

__all__ = ["COLD_START_VERSION", "Model", "NotEnoughLabels", "TrainingError"]

log = logging.getLogger("labelwheel.ml_backend")

COLD_START_VERSION = "v0"

POOL_FETCH_THREADS = 4
"""Fetch threads of the pool jobs' embedder (apart from the requests' 8)."""


class Model:
    """Embeddings, classifier heads per project and pool rankings: one per process."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        link: LabelStudioLink,
        backbone_loader: Callable[[], Backbone] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.link = link
        self.embedder = Embedder(
            settings.backbone,
            settings.image_size,
            settings.batch_size,
            cache_root=settings.model_dir,
            max_pixels=settings.max_image_pixels,
            loader=backbone_loader,
            inference=settings.inference,
        )
        self.cache = self.embedder.cache
        # Pool jobs embed with their own fetch threads and forward lock (same backbone object,
        # same cache), so a request's few images never queue behind a pool's chunk.
        self.pool_embedder = Embedder(
            settings.backbone,
            settings.image_size,
            settings.batch_size,
            cache_root=None,
            max_pixels=settings.max_image_pixels,
            loader=self.embedder.backbone,
            fetch_threads=POOL_FETCH_THREADS,
        )
        self.pool_embedder.cache = self.cache
        self._heads: dict[int, tuple[str, Head | None]] = {}
        self._heads_lock = threading.Lock()
        self.rankings = Rankings(
            settings, store, link, self.embed_pool_refs, self.current, self.cache.get
        )
        self.deferred = DeferredPredictions(
            link, self.embed_pool_refs, publish=settings.publish, pacing=settings.pacing
        )
        self.pool_jobs = PoolJobs(
            self.rankings,
            link,
            settings.pool_jobs,
            publish=settings.publish,
            pacing=settings.pacing,
            after_ready=self.deferred.retrieve,
        )
        self._fit_process = FitProcess()

    # -- backbone and embeddings ----------------------------------------------------------------

    def backbone(self) -> Backbone:
        """The backbone, loaded on first use (once per process)."""
        return self.embedder.backbone()

    @property
    def backbone_loaded(self) -> bool:
        """Whether the backbone has been loaded yet."""
        return self.embedder.backbone_loaded

    @property
    def images_embedded(self) -> int:
        """Images that went through the backbone since start."""
        return self.embedder.images_embedded + self.pool_embedder.images_embedded

    def close(self) -> None:
        """Stop the pool jobs, the fetch threads and the training process."""
        self.pool_jobs.close()
        self.pool_embedder.close()
        self.embedder.close()
        self._fit_process.close()

    def embed_refs(self, refs: Sequence[str | None], deadline: float | None = None) -> Embedded:
        """Embed images by reference; per-image failures are reported, never raised.

        Images whose content hash is known and cached are not fetched again; the others are
        fetched in parallel and embedded a few per backbone pass. When every read is local (files
        under the local-files root, ``data:`` URIs), decoding is the work: a chunk is decoded on
        as many threads as cores and one more, then embedded (overlapping two CPU-bound stages,
        or more threads, only take the backbone's cores); otherwise the fetch threads read ahead
        while the backbone runs. Past ``deadline`` (:func:`time.monotonic`), images not started
        are left undone (:attr:`Embedded.deferred`).
        """
        return self._embed(self.embedder, refs, deadline)

    def embed_pool_refs(self, refs: Sequence[str | None]) -> Embedded:
        """:meth:`embed_refs` for the background pool jobs (their own fetch threads)."""
        return self._embed(self.pool_embedder, refs)

    def _embed(
        self, embedder: Embedder, refs: Sequence[str | None], deadline: float | None = None
    ) -> Embedded:
        known = self.store.image_hashes([r for r in refs if isinstance(r, str)])
        fetcher = self.link.fetcher()
        local = all(fetcher.is_local(r) for r in refs if r)
        embedded = embedder.embed_refs(
            refs, self._read, known=known, local=local, deadline=deadline
        )
        if embedded.new_hashes:
            self.store.remember_image_hashes(embedded.new_hashes)
        return embedded

    def _read(self, ref: str) -> bytes:
        data: bytes = self.link.fetcher().fetch_bytes(ref)
        return data

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        """One backbone call for a list of PIL images (serialised across threads)."""
        return self.embedder.embed_images(images)

    def fit(
        self,
        x: np.ndarray,
        label_sets: Sequence[Sequence[str]],
        labels: Sequence[str],
        multi_label: bool,
        scaling: Scaling | None = None,
        pool: np.ndarray | Path | None = None,
    ) -> tuple[Head, dict[str, Any]]:
        """:func:`labelwheel.head.train_head` in the training process, with the head's use of
        the unlabelled ``pool`` (its embeddings, or the path of the ``.npy`` file a ranking
        saved) that ``LABELWHEEL_HEAD_SEMI`` says."""
        return self._fit_process.fit(
            x,
            label_sets,
            labels,
            multi_label,
            scaling,
            semi_supervised=self.settings.head_semi,
            pool=pool,
        )

    # -- heads ----------------------------------------------------------------------------------

    def current(self, project_id: int) -> tuple[str, Head | None]:
        """(version name, head) serving a project; the head is None at cold start."""
        with self._heads_lock:
            if project_id in self._heads:
                return self._heads[project_id]
        entry = self._load_newest_readable(project_id)
        with self._heads_lock:
            self._heads.setdefault(project_id, entry)
            return self._heads[project_id]

    def _load_newest_readable(self, project_id: int) -> tuple[str, Head | None]:
        """The newest version whose artifact loads; an unreadable one (truncated, corrupt,
        missing) is logged and the one before it is tried. Cold start only when none loads."""
        unreadable: list[str] = []
        for version in reversed(self.store.versions(project_id)):
            try:
                head = load_head(Path(version.artifact))
            except Exception as exc:
                unreadable.append(version.name)
                log.error(
                    "project %d: artifact of %s is unreadable (%s); trying the version before",
                    project_id,
                    version.name,
                    exc,
                )
                continue
            if unreadable:
                log.warning(
                    "project %d: serving %s, the newest readable version (unreadable: %s)",
                    project_id,
                    version.name,
                    ", ".join(unreadable),
                )
            return (version.name, head)
        if unreadable:
            log.error(
                "project %d: no readable model artifact (%s); serving cold start",
                project_id,
                ", ".join(unreadable),
            )
        return (COLD_START_VERSION, None)

    def set_current(self, project_id: int, version: str, head: Head) -> None:
        """Serve a new version (atomic swap; requests in flight finish with the old one)."""
        with self._heads_lock:
            self._heads[project_id] = (version, head)
        self.invalidate_pool(project_id)

    def version_name(self, project_id: int) -> str:
        """The name of the version serving a project."""
        return self.current(project_id)[0]

    # -- training -------------------------------------------------------------------------------

    def train(
        self, project_id: int, config: ClassificationConfig, run_id: int | None = None
    ) -> Version:
        """Train a new version on the project's current training set; store and serve it.

        Raises :class:`NotEnoughLabels` (cold start) or :class:`TrainingError`.
        """
        annotations = self.store.training_set(project_id)
        label_set = set(config.labels)
        usable: list[Annotation] = []
        for ann in annotations:
            chosen = [name for name in ann.labels if name in label_set]
            if not chosen or (not config.multi_label and len(chosen) != 1):
                continue
            usable.append(ann)
        if not usable:
            raise NotEnoughLabels(f"no usable annotations yet ({len(annotations)} stored)")
        embedded = self.embed_pool_refs([ann.image_ref for ann in usable])
        rows, label_sets = [], []
        failures = 0
        for ann, vec, err in zip(usable, embedded.vectors, embedded.errors, strict=True):
            if vec is None:
                failures += 1
                log.warning(
                    "project %d: annotation %d skipped in training: %s", project_id, ann.id, err
                )
                continue
            rows.append(vec)
            label_sets.append([name for name in ann.labels if name in label_set])
        if not rows:
            raise TrainingError(
                f"none of the {len(usable)} annotated images could be fetched or decoded"
            )
        x = np.vstack(rows).astype(np.float32)
        started = time.perf_counter()
        try:
            head, metrics = self.fit(
                x,
                label_sets,
                config.labels,
                config.multi_label,
                self.rankings.scaling(project_id),
                self.rankings.pool_path(project_id),
            )
        except NotEnoughLabels:
            raise
        except Exception as exc:
            raise TrainingError(f"fitting the classifier failed: {exc}") from exc
        metrics["fit_seconds"] = round(time.perf_counter() - started, 3)
        metrics["images_skipped"] = failures
        metrics["backbone"] = self.settings.backbone
        metrics["image_size"] = self.settings.image_size
        number = self.store.next_version_number(project_id)
        path = self.settings.model_dir / "projects" / str(project_id) / f"v{number}.pkl"
        save_head(head, path)  # artifact first, atomically ...
        version = self.store.add_version(  # ... then the row that makes it the latest
            project_id,
            number,
            len(label_sets),
            metrics.get("cv_accuracy"),
            metrics,
            str(path),
            run_id=run_id,
        )
        self.set_current(project_id, version.name, head)
        return version

    # -- queue scores -----------------------------------------------------------------------------

    def invalidate_pool(self, project_id: int) -> None:
        """Forget the cached pool ranking of a project (new tasks, new version)."""
        self.rankings.invalidate(project_id)

    def cached_ranking(self, project_id: int) -> PoolRanking | None:
        """The cached pool ranking if it is still valid."""
        return self.rankings.cached(project_id)

    def rank_pool(self, project_id: int, config: ClassificationConfig) -> PoolRanking | None:
        """The project's pool ranking, waiting for its background job to end (never call this
        in a request: see :meth:`pool_ranking`); None when Label Studio is not reachable."""
        if self.link.client() is None:
            return None
        return self.pool_jobs.rank_now(project_id, config)

    def pool_ranking(
        self, project_id: int, config: ClassificationConfig, wait: float
    ) -> PoolRanking | None:
        """The project's valid pool ranking, starting its background job if needed and waiting
        for it until ``wait`` seconds after the job was queued; None when it is not ready by
        then."""
        ranking = self.rankings.cached(project_id)
        if ranking is not None:
            return ranking
        if self.link.client() is None:
            return None
        self.pool_jobs.ensure(project_id, config)
        return self.pool_jobs.wait_budget(project_id, wait)

    def refresh_pool(self, project_id: int, config: ClassificationConfig | None) -> None:
        """The pool changed (new tasks): forget its ranking and start ranking it again in the
        background (when Label Studio can be listed), so that the next /predict finds it."""
        self.invalidate_pool(project_id)
        if config is not None and self.link.client() is not None:
            self.pool_jobs.ensure(project_id, config)

    def rank_batch(
        self, project_id: int, task_ids: list[int], vectors: list[np.ndarray | None]
    ) -> PoolRanking:
        """Fallback: rank the tasks of one request among themselves."""
        return self.rankings.rank_batch(project_id, task_ids, vectors)

    # -- prediction ----------------------------------------------------------------------------

    def predict(
        self,
        project_id: int,
        config: ClassificationConfig,
        tasks: list[dict[str, Any]],
        deadline: float | None = None,
    ) -> tuple[list[dict[str, Any] | list[Any]], int, int]:
        """One answer per task, same order; how many tasks' images failed (those get an empty
        result; so do all tasks while no model can pre-label yet); how many were deferred.

        Past ``deadline`` (:func:`time.monotonic`), tasks whose images were not started get an
        empty list instead of a prediction: Label Studio skips such an answer without an error.
        They are remembered (:mod:`labelwheel.ml_backend.deferred`) and, once their images are
        embedded, Label Studio is asked to retrieve their predictions."""
        version, head = self.current(project_id)
        refs = [task_ref(t, config.data_key) for t in tasks]
        embedded = self.embed_refs(refs, deadline)
        deferred = set(embedded.deferred)
        ids = [t.get("id") if isinstance(t.get("id"), int) else None for t in tasks]
        if deferred:  # before the pool job can end (it hands them to Label Studio when ready)
            owed = {tid: refs[i] for i in deferred if (tid := ids[i]) is not None}
            self.deferred.remember(project_id, owed)
        for task_id, err in zip(ids, embedded.errors, strict=True):
            if err is not None:
                log.warning("project %d task %s: no prediction: %s", project_id, task_id, err)
        probs: np.ndarray | None = None
        ok = [i for i, v in enumerate(embedded.vectors) if v is not None]
        if head is not None and head.can_prelabel() and ok:
            probs = np.zeros((len(tasks), len(config.labels)))
            x = np.vstack([v for v in embedded.vectors if v is not None])
            part = head.predict_proba(x)
            if tuple(head.labels) == tuple(config.labels):
                probs[ok] = part
            else:  # the config changed since training: map labels by name
                for j, name in enumerate(config.labels):
                    if name in head.labels:
                        probs[ok, j] = part[:, head.labels.index(name)]
        scores = self._scores(project_id, config, ids, embedded.vectors)
        out: list[dict[str, Any] | list[Any]] = []
        for i, task in enumerate(tasks):
            if i in deferred:
                out.append([])
                continue
            result: list[dict[str, Any]] = []
            if probs is not None and embedded.vectors[i] is not None:
                result = config.prediction_result([float(p) for p in probs[i]])
            prediction = {"result": result, "score": scores[i], "model_version": version}
            problems = config.validate_prediction(prediction)
            if problems:
                log.error(
                    "project %d task %s: invalid prediction dropped: %s",
                    project_id,
                    task.get("id"),
                    "; ".join(problems),
                )
                prediction = {"result": [], "score": scores[i], "model_version": version}
            out.append(prediction)
        if deferred:
            log.warning(
                "project %d: /predict answered %d of %d tasks within LABELWHEEL_PREDICT_BUDGET; "
                "the other %d are retrieved through Label Studio once embedded",
                project_id,
                len(tasks) - len(deferred),
                len(tasks),
                len(deferred),
            )
            if not self.pool_jobs.running(project_id):  # no job will hand them over
                self.deferred.retrieve_soon(project_id)
        failed = sum(1 for err in embedded.errors if err is not None)
        return out, failed, len(deferred)

    def _scores(
        self,
        project_id: int,
        config: ClassificationConfig,
        ids: list[int | None],
        vectors: list[np.ndarray | None],
    ) -> list[float]:
        """Queue scores: from the project's pool ranking when it is ready within
        ``LABELWHEEL_PREDICT_POOL_WAIT`` seconds; otherwise provisional (the last ranking's score
        for a task it knew, else the rank within this request), remembered so that the pool job
        replaces them in Label Studio when it is ready."""
        labelled = self.store.labelled_task_ids(project_id)
        wait = self.settings.predict_pool_wait
        ranking = self.pool_ranking(project_id, config, wait)
        if ranking is None:
            return self._provisional_scores(project_id, ids, vectors, labelled)
        scores = [
            1.0  # labelled: not in the queue any more; or unknown to Label Studio's list
            if task_id is None or task_id in labelled
            else float(ranking.scores.get(task_id, 1.0))
            for task_id in ids
        ]
        missing = [
            i
            for i, t in enumerate(ids)
            if t is not None and t not in labelled and t not in ranking.scores
        ]
        if missing and time.time() - ranking.computed > 1.0:
            # tasks the ranking has not seen (new, or listed as labelled and no longer): rank
            # the pool again in the background; meanwhile only these get provisional scores
            log.info(
                "project %d: %d tasks not in the pool ranking; ranking again",
                project_id,
                len(missing),
            )
            self.invalidate_pool(project_id)
            self.pool_ranking(project_id, config, 0.0)
            provisional = self._provisional_scores(
                project_id, [ids[i] for i in missing], [vectors[i] for i in missing], labelled
            )
            for i, score in zip(missing, provisional, strict=True):
                scores[i] = score
        return scores

    def _provisional_scores(
        self,
        project_id: int,
        ids: list[int | None],
        vectors: list[np.ndarray | None],
        labelled: set[int],
    ) -> list[float]:
        version = self.version_name(project_id)
        last = self.rankings.last(project_id)
        if self.link.client() is None:
            log.info(
                "project %d: pool unavailable (no Label Studio URL/key); "
                "ranking within the request batch",
                project_id,
            )
            last = None
        pos = [
            i
            for i, t in enumerate(ids)
            if (t is None or t not in labelled) and (last is None or t not in last.scores)
        ]
        batch = self.rank_batch(project_id, pos, [vectors[i] for i in pos]) if pos else None
        scores: list[float] = []
        owed: list[int] = []
        for i, task_id in enumerate(ids):
            if task_id is not None and task_id in labelled:
                scores.append(1.0)
                continue
            if last is not None and task_id is not None and task_id in last.scores:
                scores.append(float(last.scores[task_id]))
            else:
                scores.append(float(batch.scores.get(i, 1.0)) if batch is not None else 1.0)
            if task_id is not None:
                owed.append(task_id)
        if owed and self.link.client() is not None:
            log.info(
                "project %d: pool ranking not ready; %d provisional scores, replaced when it is",
                project_id,
                len(owed),
            )
            self.pool_jobs.remember_provisional(project_id, version, owed)
        return scores
