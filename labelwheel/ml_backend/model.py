"""The model of the ML backend: embedding cache, classifier head, and scoring over the pool.

One :class:`Model` per process, shared by every request thread and the training worker:

- images are embedded by the backbone once, ever: the embedding of an image is cached on disk by
  the SHA-256 of its bytes (``MODEL_DIR/embeddings/<backbone>-<size>/<sha256>.npy``); a
  ``/predict`` batch makes one backbone call for all the images not in the cache;
- the classifier head is a logistic regression on standardised embeddings (one-vs-rest per label
  for multi-label configs). Its probabilities are calibrated with ``CalibratedClassifierCV``
  (sigmoid, 3 folds) once every class has at least :data:`CALIBRATE_MIN_PER_CLASS` labels; below
  that a plain logistic regression is used, whose probabilities are already reasonable and which
  cannot be calibrated honestly on so few labels;
- the task-level score is the task's rank among the project's unlabelled pool under the
  configured selector, divided by the pool size: in ``[0, 1)``, **lower = label sooner**.
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import os
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from labelwheel.ml_backend.config import Settings
from labelwheel.ml_backend.store import Annotation, Store, Version, atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    from labelwheel.backbone import Backbone
    from labelwheel.label_config import ClassificationConfig

log = logging.getLogger("labelwheel.ml_backend")

COLD_START_VERSION = "v0"
COLD_START_STRATEGY = "typiclust"
CALIBRATE_MIN_PER_CLASS = 6
CV_MAX_SAMPLES = 3000
ARTIFACT_FORMAT = 1


class TrainingError(RuntimeError):
    """A training could not produce a model (the last good version keeps serving)."""


class NotEnoughLabels(TrainingError):
    """Too few labelled classes to fit a classifier yet (not a failure: cold start)."""


# -- embeddings --------------------------------------------------------------------------------


def content_hash(data: bytes) -> str:
    """SHA-256 hex digest of image bytes: the embedding cache key."""
    return hashlib.sha256(data).hexdigest()


class EmbeddingCache:
    """On-disk cache of embeddings by image content hash, with a small in-memory LRU in front."""

    def __init__(self, model_dir: Path, backbone: str, image_size: int, memory_items: int = 20000):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in backbone)
        self.dir = Path(model_dir) / "embeddings" / f"{safe}-{image_size}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memory_items = memory_items
        self._lock = threading.Lock()

    def _path(self, sha: str) -> Path:
        return self.dir / sha[:2] / f"{sha}.npy"

    def get(self, sha: str) -> np.ndarray | None:
        """The cached embedding, or None (a damaged file counts as missing)."""
        with self._lock:
            vec = self._memory.get(sha)
            if vec is not None:
                self._memory.move_to_end(sha)
                return vec
        path = self._path(sha)
        try:
            vec = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if vec.ndim != 1 or not np.all(np.isfinite(vec)):
            return None
        self._remember(sha, vec)
        return vec

    def put(self, sha: str, vec: np.ndarray) -> None:
        """Store an embedding atomically (temp file + rename; no fsync: a cache entry lost in a
        power cut is recomputed, and a damaged file fails :meth:`get`'s checks)."""
        buf = io.BytesIO()
        np.save(buf, np.asarray(vec, dtype=np.float32), allow_pickle=False)
        atomic_write_bytes(self._path(sha), buf.getvalue(), fsync=False)
        self._remember(sha, np.asarray(vec, dtype=np.float32))

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
        return self._path(sha).exists()


@dataclass
class Embedded:
    """Outcome of embedding a list of image references (aligned with the input)."""

    vectors: list[np.ndarray | None]
    hashes: list[str | None]
    errors: list[str | None]


# -- classifier head ------------------------------------------------------------------------


@dataclass
class Head:
    """A trained classifier head over embeddings; pickled as a version's artifact."""

    labels: tuple[str, ...]
    multi_label: bool
    n_labels: int
    classes_seen: tuple[str, ...]
    estimators: list[Any]  # single-label: [one estimator]; multi-label: one per label (or None)
    constant: list[float] = field(default_factory=list)  # multi-label: rate for constant labels
    format: int = ARTIFACT_FORMAT

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, len(labels)) probabilities; labels never seen in training get 0 (single-label)."""
        x = np.asarray(x, dtype=np.float32)
        out = np.zeros((x.shape[0], len(self.labels)), dtype=np.float64)
        if x.shape[0] == 0:
            return out
        if not self.multi_label:
            est = self.estimators[0]
            proba = est.predict_proba(x)
            for j, cls in enumerate(est.classes_):
                out[:, int(cls)] = proba[:, j]
            return out
        for j, est in enumerate(self.estimators):
            if est is None:
                out[:, j] = self.constant[j]
            else:
                proba = est.predict_proba(x)
                pos = list(est.classes_).index(1)
                out[:, j] = proba[:, pos]
        return out

    def can_prelabel(self) -> bool:
        """Pre-labels are given only once there are at least as many labels as classes."""
        return self.n_labels >= len(self.labels) and len(self.classes_seen) >= 2


def _base_estimator() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000))


def _maybe_calibrated(y: np.ndarray) -> Any:
    from sklearn.calibration import CalibratedClassifierCV

    _, counts = np.unique(y, return_counts=True)
    if counts.min() >= CALIBRATE_MIN_PER_CLASS:
        return CalibratedClassifierCV(_base_estimator(), method="sigmoid", cv=3)
    return _base_estimator()


def _cv_accuracy(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float | None:
    """Cross-validated accuracy of the plain head (on at most CV_MAX_SAMPLES labels)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        return None
    if len(y) > CV_MAX_SAMPLES:
        rng = np.random.default_rng(seed)
        keep = rng.choice(len(y), CV_MAX_SAMPLES, replace=False)
        x, y = x[keep], y[keep]
        _, counts = np.unique(y, return_counts=True)
        if len(counts) < 2 or counts.min() < 2:
            return None
    folds = int(min(5, counts.min()))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(_base_estimator(), x, y, cv=cv)))


def fit_head(
    x: np.ndarray, label_sets: Sequence[Sequence[str]], labels: Sequence[str], multi_label: bool
) -> tuple[Head, dict[str, Any]]:
    """Fit a head on embeddings ``x`` and the chosen labels of each row; returns (head, metrics).

    Raises :class:`NotEnoughLabels` with fewer than two classes to tell apart.
    """
    labels = tuple(labels)
    index = {name: i for i, name in enumerate(labels)}
    counts = {name: 0 for name in labels}
    for chosen in label_sets:
        for name in chosen:
            counts[name] += 1
    seen = tuple(name for name in labels if counts[name] > 0)
    metrics: dict[str, Any] = {"n_labels": len(label_sets), "per_class": counts}
    if not multi_label:
        y = np.array([index[chosen[0]] for chosen in label_sets], dtype=np.int64)
        if len(seen) < 2:
            raise NotEnoughLabels(
                f"need labels of at least 2 classes to train, have {len(seen)} "
                f"({len(label_sets)} labels)"
            )
        est = _maybe_calibrated(y)
        est.fit(x, y)
        metrics["calibrated"] = est.__class__.__name__ == "CalibratedClassifierCV"
        metrics["cv_accuracy"] = _cv_accuracy(x, y)
        head = Head(labels, False, len(label_sets), seen, [est])
        return head, metrics
    y_multi = np.zeros((len(label_sets), len(labels)), dtype=np.int64)
    for row, chosen in enumerate(label_sets):
        for name in chosen:
            y_multi[row, index[name]] = 1
    estimators: list[Any] = []
    constant: list[float] = []
    trainable = 0
    for j in range(len(labels)):
        col = y_multi[:, j]
        rate = (col.sum() + 0.5) / (len(col) + 1.0)
        constant.append(float(rate))
        if col.min() == col.max():
            estimators.append(None)
            continue
        est = _maybe_calibrated(col)
        est.fit(x, col)
        estimators.append(est)
        trainable += 1
    if trainable == 0 or len(seen) < 2:
        raise NotEnoughLabels(
            "need at least one label that is present on some images and absent on others, "
            f"and 2 labels in use; have {len(seen)} labels in use"
        )
    head = Head(labels, True, len(label_sets), seen, estimators, constant)
    metrics["calibrated"] = any(
        e is not None and e.__class__.__name__ == "CalibratedClassifierCV" for e in estimators
    )
    metrics["cv_accuracy"] = _cv_subset_accuracy(x, y_multi)
    return head, metrics


def _cv_subset_accuracy(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float | None:
    """Cross-validated exact-match accuracy of a multi-label head."""
    from sklearn.model_selection import KFold

    n = len(y)
    if n < 4:
        return None
    if n > CV_MAX_SAMPLES:
        keep = np.random.default_rng(seed).choice(n, CV_MAX_SAMPLES, replace=False)
        x, y, n = x[keep], y[keep], CV_MAX_SAMPLES
    hits = 0
    for train, test in KFold(n_splits=min(5, n // 2), shuffle=True, random_state=seed).split(x):
        pred = np.zeros((len(test), y.shape[1]), dtype=np.int64)
        for j in range(y.shape[1]):
            col = y[train, j]
            if col.min() == col.max():
                pred[:, j] = col[0]
            else:
                pred[:, j] = _base_estimator().fit(x[train], col).predict(x[test])
        hits += int(np.all(pred == y[test], axis=1).sum())
    return hits / n


def save_head(head: Head, path: Path) -> None:
    """Write a head atomically (pickle to a temp file, fsync, rename)."""
    atomic_write_bytes(path, pickle.dumps(head, protocol=pickle.HIGHEST_PROTOCOL))


def load_head(path: Path) -> Head:
    """Read a head written by :func:`save_head` (only from MODEL_DIR: pickle is trusted here)."""
    with open(path, "rb") as fh:
        head = pickle.load(fh)
    if not isinstance(head, Head):
        raise TrainingError(f"{path} is not a labelwheel model artifact")
    return head


# -- Label Studio link ------------------------------------------------------------------------


class LabelStudioLink:
    """Where Label Studio is and how to authenticate: env settings win over /setup values."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._setup_url: str | None = None
        self._setup_token: str | None = None
        self._client: Any = None
        self._client_key: tuple[str, str] | None = None
        self._fetcher: Any = None
        self._fetcher_key: tuple[str | None, int] | None = None
        self._lock = threading.Lock()

    def remember_setup(self, hostname: str | None, access_token: str | None) -> None:
        """Keep /setup's hostname and token (in memory only) for when the env has none."""
        with self._lock:
            if hostname:
                self._setup_url = hostname.rstrip("/")
            if access_token:
                self._setup_token = access_token

    @property
    def url(self) -> str | None:
        """Label Studio's base URL, if known."""
        return self.settings.label_studio_url or self._setup_url

    @property
    def api_key(self) -> str | None:
        """The API key to use, if known."""
        return self.settings.label_studio_api_key or self._setup_token

    def client(self) -> Any:
        """A ``LabelStudioClient``, or None when URL or key is unknown."""
        url, key = self.url, self.api_key
        if not url or not key:
            return None
        with self._lock:
            if self._client is None or self._client_key != (url, key):
                from labelwheel.ls_api import LabelStudioClient

                self._client = LabelStudioClient(url, key, timeout=self.settings.fetch_timeout)
                self._client_key = (url, key)
            return self._client

    def fetcher(self) -> Any:
        """An ``ImageFetcher`` with the current policy and Label Studio credentials."""
        client = self.client()
        key = (self.url, id(client))
        with self._lock:
            if self._fetcher is None or self._fetcher_key != key:
                from labelwheel.ml_backend.images import ImageFetcher, ImagePolicy

                s = self.settings
                policy = ImagePolicy(
                    ls_url=self.url,
                    local_files_root=s.local_files_root,
                    allowed_hosts=s.allowed_hosts,
                    max_bytes=s.max_image_bytes,
                    timeout=s.fetch_timeout,
                    max_pixels=s.max_image_pixels,
                )
                self._fetcher = ImageFetcher(
                    policy, client.auth_headers if client is not None else None
                )
                self._fetcher_key = key
            return self._fetcher


# -- the model ----------------------------------------------------------------------------------


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
        self.cache = EmbeddingCache(settings.model_dir, settings.backbone, settings.image_size)
        self._backbone: Backbone | None = None
        self._backbone_loader = backbone_loader
        self._backbone_lock = threading.Lock()
        self._forward_lock = threading.Lock()
        self._heads: dict[int, tuple[str, Head | None]] = {}
        self._heads_lock = threading.Lock()
        self._rankings: dict[int, PoolRanking] = {}
        self._epochs: dict[int, int] = {}
        self._rank_lock = threading.Lock()
        self._rank_compute_lock = threading.Lock()
        self._fetch_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="lw-fetch")
        self._fit_pool: ProcessPoolExecutor | None = None
        self._fit_lock = threading.Lock()
        self.images_embedded = 0

    # -- backbone ---------------------------------------------------------------------------

    def backbone(self) -> Backbone:
        """The backbone, loaded on first use (once per process)."""
        if self._backbone is None:
            with self._backbone_lock:
                if self._backbone is None:
                    if self._backbone_loader is not None:
                        self._backbone = self._backbone_loader()
                    else:
                        from labelwheel.backbone import load_backbone

                        s = self.settings
                        self._backbone = load_backbone(s.backbone, s.image_size, s.batch_size)
                    log.info(
                        "backbone %s loaded (%d px, %d dims)",
                        self._backbone.name,
                        self._backbone.image_size,
                        self._backbone.dim,
                    )
        return self._backbone

    @property
    def backbone_loaded(self) -> bool:
        """Whether the backbone has been loaded yet."""
        return self._backbone is not None

    def close(self) -> None:
        """Stop the fetch threads and the training process."""
        self._fetch_pool.shutdown(wait=False, cancel_futures=True)
        with self._fit_lock:
            if self._fit_pool is not None:
                self._fit_pool.shutdown(wait=False, cancel_futures=True)
                self._fit_pool = None

    def fit(
        self,
        x: np.ndarray,
        label_sets: Sequence[Sequence[str]],
        labels: Sequence[str],
        multi_label: bool,
    ) -> tuple[Head, dict[str, Any]]:
        """:func:`fit_head` in a separate, lower-priority process.

        The fit is CPU-bound Python and BLAS work: in this process it would hold the GIL and the
        cores that request threads need, and webhook acknowledgements would wait behind it.
        """
        with self._fit_lock:
            if self._fit_pool is None:
                self._fit_pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_fit_process_init,
                )
            pool = self._fit_pool
        future = pool.submit(fit_head, x, [list(s) for s in label_sets], tuple(labels), multi_label)
        try:
            return future.result()
        except BrokenProcessPool as exc:
            with self._fit_lock:
                if self._fit_pool is pool:
                    self._fit_pool = None
            raise TrainingError("the training process died") from exc

    # -- embedding ------------------------------------------------------------------------------

    def embed_refs(self, refs: Sequence[str | None]) -> Embedded:
        """Embed images by reference; per-image failures are reported, never raised.

        Images whose content hash is cached are not fetched again; all others are fetched in
        parallel and embedded with one backbone call.
        """
        n = len(refs)
        vectors: list[np.ndarray | None] = [None] * n
        hashes: list[str | None] = [None] * n
        errors: list[str | None] = [None] * n
        known = self.store.image_hashes([r for r in refs if isinstance(r, str)])
        to_fetch: list[int] = []
        for i, ref in enumerate(refs):
            if not isinstance(ref, str) or not ref:
                errors[i] = "task has no image reference for the config's data key"
                continue
            sha = known.get(ref)
            if sha is not None:
                vec = self.cache.get(sha)
                if vec is not None:
                    vectors[i], hashes[i] = vec, sha
                    continue
            to_fetch.append(i)
        if not to_fetch:
            return Embedded(vectors, hashes, errors)
        fetcher = self.link.fetcher()
        fetched = list(self._fetch_pool.map(lambda i: _fetch(fetcher, refs[i]), to_fetch))
        new_pairs: dict[str, str] = {}
        pending: dict[str, list[int]] = {}
        images: dict[str, Any] = {}
        from labelwheel.ml_backend.images import ImageError, decode_image

        for i, (data, err) in zip(to_fetch, fetched, strict=True):
            if data is None:
                errors[i] = err
                continue
            sha = content_hash(data)
            hashes[i] = sha
            vec = self.cache.get(sha)
            if vec is not None:
                vectors[i] = vec
                new_pairs[str(refs[i])] = sha
                continue
            if sha not in images:
                try:
                    images[sha] = decode_image(data, self.settings.max_image_pixels)
                except ImageError as exc:
                    errors[i] = f"image {_short(refs[i])}: {exc.reason}"
                    hashes[i] = None
                    continue
                except Exception as exc:  # a decoder bug must not fail the batch
                    errors[i] = f"image {_short(refs[i])}: cannot decode ({exc.__class__.__name__})"
                    hashes[i] = None
                    continue
            pending.setdefault(sha, []).append(i)
            new_pairs[str(refs[i])] = sha
        if pending:
            order = list(pending)
            embeddings = self.embed_images([images[sha] for sha in order])
            for sha, vec in zip(order, embeddings, strict=True):
                self.cache.put(sha, vec)
                for i in pending[sha]:
                    vectors[i] = vec
        self.store.remember_image_hashes(new_pairs)
        return Embedded(vectors, hashes, errors)

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        """One backbone call for a list of PIL images (serialised across threads)."""
        backbone = self.backbone()
        with self._forward_lock:
            out = backbone.embed(list(images))
        self.images_embedded += len(images)
        return out

    # -- heads ----------------------------------------------------------------------------------

    def current(self, project_id: int) -> tuple[str, Head | None]:
        """(version name, head) serving a project; the head is None at cold start."""
        with self._heads_lock:
            if project_id in self._heads:
                return self._heads[project_id]
        version = self.store.latest_version(project_id)
        entry: tuple[str, Head | None] = (COLD_START_VERSION, None)
        if version is not None:
            try:
                entry = (version.name, load_head(Path(version.artifact)))
            except Exception as exc:
                log.error(
                    "project %d: cannot load artifact of %s (%s); serving cold start",
                    project_id,
                    version.name,
                    exc,
                )
        with self._heads_lock:
            self._heads.setdefault(project_id, entry)
            return self._heads[project_id]

    def set_current(self, project_id: int, version: str, head: Head) -> None:
        """Serve a new version (atomic swap; requests in flight finish with the old one)."""
        with self._heads_lock:
            self._heads[project_id] = (version, head)
        self.invalidate_pool(project_id)

    def version_name(self, project_id: int) -> str:
        """The name of the version serving a project."""
        return self.current(project_id)[0]

    # -- training -------------------------------------------------------------------------------

    def train(self, project_id: int, config: ClassificationConfig) -> Version:
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
        embedded = self.embed_refs([ann.image_ref for ann in usable])
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
            head, metrics = self.fit(x, label_sets, config.labels, config.multi_label)
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
            project_id, number, len(label_sets), metrics.get("cv_accuracy"), metrics, str(path)
        )
        self.set_current(project_id, version.name, head)
        return version

    # -- scoring --------------------------------------------------------------------------------

    def invalidate_pool(self, project_id: int) -> None:
        """Forget the cached pool ranking of a project (new tasks, new version)."""
        with self._rank_lock:
            self._epochs[project_id] = self._epochs.get(project_id, 0) + 1
            self._rankings.pop(project_id, None)

    def cached_ranking(self, project_id: int) -> PoolRanking | None:
        """The cached pool ranking if it is still valid."""
        version = self.version_name(project_id)
        with self._rank_lock:
            ranking = self._rankings.get(project_id)
            epoch = self._epochs.get(project_id, 0)
        if ranking is not None and ranking.version == version and ranking.epoch == epoch:
            return ranking
        return None

    def rank_pool(self, project_id: int, config: ClassificationConfig) -> PoolRanking | None:
        """Rank the project's unlabelled pool (fetched from Label Studio); cached per version.

        Returns None when Label Studio is not reachable (no URL/key, or an API error).
        """
        cached = self.cached_ranking(project_id)
        if cached is not None:
            return cached
        with self._rank_compute_lock:
            cached = self.cached_ranking(project_id)
            if cached is not None:
                return cached
            with self._rank_lock:
                epoch = self._epochs.get(project_id, 0)
            client = self.link.client()
            if client is None:
                return None
            try:
                tasks = list(client.iter_tasks(project_id, page_size=500))
            except Exception as exc:
                log.warning("project %d: cannot fetch the task pool (%s)", project_id, exc)
                return None
            labelled = self.store.labelled_task_ids(project_id)
            pool = [
                t
                for t in tasks
                if isinstance(t, dict)
                and isinstance(t.get("id"), int)
                and t["id"] not in labelled
                and not t.get("total_annotations")
                and not t.get("cancelled_annotations")
                and not t.get("is_labeled")
            ]
            refs = [_task_ref(t, config.data_key) for t in pool]
            embedded = self.embed_refs(refs)
            ids = [int(t["id"]) for t in pool]
            version, _ = self.current(project_id)
            ranking = self._rank(project_id, ids, embedded.vectors, "pool")
            ranking.version, ranking.epoch = version, epoch
            with self._rank_lock:
                if self._epochs.get(project_id, 0) == epoch:
                    self._rankings[project_id] = ranking
            return ranking

    def rank_batch(self, project_id: int, task_ids: list[int], vectors: list[Any]) -> PoolRanking:
        """Fallback: rank the tasks of one request among themselves."""
        ranking = self._rank(project_id, task_ids, vectors, "batch")
        ranking.version = self.version_name(project_id)
        return ranking

    def _labelled_embeddings(self, project_id: int) -> np.ndarray | None:
        refs = [a.image_ref for a in self.store.training_set(project_id) if a.image_ref]
        hashes = self.store.image_hashes(refs)
        # In training-set order (annotation id), not the store's: the selectors' clustering
        # depends on row order, and the same labels must give the same ranking.
        found = (self.cache.get(hashes[r]) for r in refs if r in hashes)
        vecs = [v for v in found if v is not None]
        return np.vstack(vecs).astype(np.float32) if vecs else None

    def _first_batch(self) -> int:
        """How many tasks annotators label before the next retrain (at least 1)."""
        return self.settings.retrain_every or 10

    def _rank(
        self, project_id: int, task_ids: list[int], vectors: list[Any], source: str
    ) -> PoolRanking:
        """Scores rank/pool_size for ``task_ids``; tasks without an embedding rank last."""
        pool_size = len(task_ids)
        ok = [i for i, v in enumerate(vectors) if v is not None]
        scores: dict[int, float] = {}
        _, head = self.current(project_id)
        strategy = self.settings.strategy if head is not None else COLD_START_STRATEGY
        order: list[int] = []
        if ok:
            unl = np.vstack([vectors[i] for i in ok]).astype(np.float32)
            lab = self._labelled_embeddings(project_id)
            emb = unl if lab is None else np.vstack([unl, lab])
            mask = np.zeros(len(emb), dtype=bool)
            mask[len(unl) :] = True
            probs = head.predict_proba(emb) if head is not None else None
            n = min(len(ok), self.settings.rank_depth)
            picks = _staged_select(strategy, n, self._first_batch(), emb, probs, mask)
            if picks is None and strategy != COLD_START_STRATEGY:
                strategy = COLD_START_STRATEGY
                picks = _staged_select(strategy, n, self._first_batch(), emb, None, mask)
            if picks is None:
                strategy = "task order"
                picks = list(range(min(n, len(ok))))
            seen = set()
            for p in picks:
                if 0 <= p < len(ok) and p not in seen:
                    seen.add(p)
                    order.append(ok[p])
            order.extend(ok[i] for i in range(len(ok)) if i not in seen)
        order.extend(i for i in range(pool_size) if vectors[i] is None)
        for rank, i in enumerate(order):
            scores[task_ids[i]] = rank / max(pool_size, 1)
        return PoolRanking("", 0, scores, strategy, source, time.time(), pool_size)

    # -- prediction ----------------------------------------------------------------------------

    def predict(
        self, project_id: int, config: ClassificationConfig, tasks: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], int]:
        """One prediction per task, same order, and how many tasks' images failed (those get an
        empty result; so do all tasks while no model can pre-label yet)."""
        version, head = self.current(project_id)
        refs = [_task_ref(t, config.data_key) for t in tasks]
        embedded = self.embed_refs(refs)
        ids = [t.get("id") if isinstance(t.get("id"), int) else None for t in tasks]
        for task_id, err in zip(ids, embedded.errors, strict=True):
            if err is not None:
                log.warning("project %d task %s: no prediction: %s", project_id, task_id, err)
        probs: np.ndarray | None = None
        ok = [i for i, v in enumerate(embedded.vectors) if v is not None]
        if head is not None and head.can_prelabel() and ok:
            probs = np.zeros((len(tasks), len(config.labels)))
            x = np.vstack([_vec(embedded.vectors[i]) for i in ok])
            part = head.predict_proba(x)
            if tuple(head.labels) == tuple(config.labels):
                probs[ok] = part
            else:  # the config changed since training: map labels by name
                for j, name in enumerate(config.labels):
                    if name in head.labels:
                        probs[ok, j] = part[:, head.labels.index(name)]
        scores = self._scores(project_id, config, ids, embedded.vectors)
        out = []
        for i, task in enumerate(tasks):
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
        return out, sum(1 for err in embedded.errors if err is not None)

    def _scores(
        self,
        project_id: int,
        config: ClassificationConfig,
        ids: list[int | None],
        vectors: list[np.ndarray | None],
    ) -> list[float]:
        labelled = self.store.labelled_task_ids(project_id)
        ranking = self.rank_pool(project_id, config)
        if ranking is not None:
            missing = [
                t for t in ids if t is not None and t not in labelled and t not in ranking.scores
            ]
            if missing and time.time() - ranking.computed > 1.0:
                log.info(
                    "project %d: %d tasks not in the cached pool; re-ranking",
                    project_id,
                    len(missing),
                )
                self.invalidate_pool(project_id)
                ranking = self.rank_pool(project_id, config) or ranking
        batch: PoolRanking | None = None
        if ranking is None:
            log.info(
                "project %d: pool unavailable (no Label Studio URL/key or API error); "
                "ranking within the request batch",
                project_id,
            )
            pos = [i for i, t in enumerate(ids) if t is None or t not in labelled]
            batch = self.rank_batch(project_id, [i for i in pos], [vectors[i] for i in pos])
        scores = []
        for i, task_id in enumerate(ids):
            if task_id is not None and task_id in labelled:
                scores.append(1.0)  # labelled: not in the queue any more
            elif batch is not None:
                scores.append(float(batch.scores.get(i, 1.0)))
            elif ranking is not None and task_id is not None and task_id in ranking.scores:
                scores.append(float(ranking.scores[task_id]))
            else:
                scores.append(1.0)  # unknown to Label Studio's task list
        return scores


def _fit_process_init() -> None:
    """Set up a training process: lower CPU priority and one BLAS thread, so that it does not
    starve the request threads; exit as soon as the backend process is gone (even after a
    ``kill -9``), leaving no orphan."""
    try:
        os.nice(10)
    except OSError:  # pragma: no cover - not permitted
        pass
    try:  # one BLAS thread: the other cores stay free for the request threads
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        pass
    parent = os.getppid()

    def watch_parent() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch_parent, name="lw-parent-watch", daemon=True).start()


def _select(
    strategy: str,
    n: int,
    embeddings: np.ndarray,
    probabilities: np.ndarray | None,
    labeled: np.ndarray | None,
) -> list[int] | None:
    from labelwheel.selectors import select

    try:
        idx = select(
            strategy, n, embeddings=embeddings, probabilities=probabilities, labeled=labeled, seed=0
        )
    except ValueError as exc:
        log.warning("selector %s refused the pool (%s)", strategy, exc)
        return None
    return [int(i) for i in np.asarray(idx).ravel()]


def _staged_select(
    strategy: str,
    n: int,
    first: int,
    embeddings: np.ndarray,
    probabilities: np.ndarray | None,
    labeled: np.ndarray,
) -> list[int] | None:
    """Rank ``n`` samples in two stages: the first ``first`` are what ``select(first)`` picks
    (the batch annotators label before the next retrain, so it is chosen as a batch: for
    TypiClust, one typical sample from each of ``first`` clusters), then the remaining
    ``n - first`` with that batch counted as labelled. Ranking all ``n`` in one call would
    optimise a batch of ``n``, whose head is not a good batch of ``first``."""
    has_labels = bool(labeled.any())
    head = _select(
        strategy, min(first, n), embeddings, probabilities, labeled if has_labels else None
    )
    if head is None or len(head) >= n:
        return head
    taken = labeled.copy()
    taken[head] = True
    tail = _select(strategy, n - len(head), embeddings, probabilities, taken)
    return None if tail is None else head + tail


def _vec(value: np.ndarray | None) -> np.ndarray:
    assert value is not None
    return value


def _task_ref(task: dict[str, Any], data_key: str) -> str | None:
    data = task.get("data")
    if not isinstance(data, dict):
        return None
    ref = data.get(data_key)
    return ref if isinstance(ref, str) and ref else None


def _short(ref: str | None, limit: int = 80) -> str:
    text = str(ref)
    if text.startswith("data:"):
        return text[: text.find(",") + 1] + "..." if "," in text else "data:..."
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fetch(fetcher: Any, ref: str | None) -> tuple[bytes | None, str | None]:
    from labelwheel.ml_backend.images import ImageError

    try:
        return fetcher.fetch_bytes(ref), None
    except ImageError as exc:
        return None, f"image {_short(ref)}: {exc.reason}"
    except Exception as exc:  # network library surprises: report, don't fail the batch
        return None, f"image {_short(ref)}: fetch failed ({exc.__class__.__name__})"
