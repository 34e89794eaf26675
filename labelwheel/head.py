"""The one classifier head: fit, calibrate, predict, cross-validate, save and load.

The ML backend, the simulator and the data-lead tools all train and predict through this module,
so that what the simulator measures is what the backend serves.

The head is a logistic regression on standardised embeddings (one-vs-rest binary regressions per
label for multi-label configs), :class:`LinearProbe`:

- **standardisation** uses the statistics of the whole pool when the caller has them
  (:class:`Scaling`, ``Scaling.of(pool_embeddings)``: in pool-based active learning the unlabelled
  embeddings are known, and a handful of labels gives poor estimates of 1,280 variances), else
  those of the labelled rows;
- **calibration** is temperature scaling: one temperature, fitted on out-of-fold logits (3 folds,
  warm-started from the full fit, so it costs little) once every class has
  :data:`CALIBRATE_MIN_PER_CLASS` labels. Dividing the logits by a temperature never changes the
  predicted class, so calibration moves the confidence annotators see, never the accuracy;
- **semi-supervised** (``HeadConfig.semi_supervised``; ``"none"`` in a bare ``HeadConfig``, while
  the backend, the simulator and the lead tools default to
  :data:`labelwheel.semisup.DEFAULT_SEMI`): given the pool's embeddings (``pool=``),
  pseudo-labelled pool rows join the regression (:mod:`labelwheel.semisup`); the temperature is
  still fitted on real labels only;
- with labels of fewer than two classes there is nothing to tell apart: :class:`NotEnoughLabels`.

The probe itself (:class:`LinearProbe`, :class:`HeadConfig`, :class:`Scaling`) lives in
:mod:`labelwheel.probe` and is re-exported here.

Artifacts are pickles written by :func:`save_head` and read by :func:`load_head`, only from the
backend's own ``MODEL_DIR`` (pickle is trusted there); artifacts of earlier releases still load.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from labelwheel.fsio import atomic_write_bytes
from labelwheel.probe import (
    CALIBRATE_MIN_PER_CLASS,
    DEFAULT_CONFIG,
    HeadConfig,
    LinearProbe,
    NotEnoughLabels,
    Scaling,
    TrainingError,
)

__all__ = [
    "CALIBRATE_MIN_PER_CLASS",
    "Head",
    "HeadConfig",
    "LinearProbe",
    "NotEnoughLabels",
    "Scaling",
    "TrainingError",
    "cv_accuracy",
    "cv_predictions",
    "fit_codes",
    "fit_head",
    "load_head",
    "save_head",
    "train_head",
]

CV_MAX_SAMPLES = 3000
"""Cross-validated accuracy is measured on at most this many labels (a random subset)."""
ARTIFACT_FORMAT = 2


@dataclass
class Head:
    """A trained head over embeddings for one label config; pickled as a version's artifact."""

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

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Single-label: the predicted label index per row. Multi-label: (n, labels) 0/1."""
        proba = self.predict_proba(x)
        if self.multi_label:
            return (proba >= 0.5).astype(np.int64)
        return np.argmax(proba, axis=1).astype(np.int64)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Accuracy (exact match for multi-label) against label indices / 0-1 rows ``y``."""
        pred = self.predict(x)
        y = np.asarray(y)
        hits = np.all(pred == y, axis=1) if self.multi_label else pred == y
        return float(np.mean(hits))

    @property
    def calibrated(self) -> bool:
        """Whether any of its estimators is calibrated."""
        return any(getattr(e, "calibrated", False) for e in self.estimators if e is not None)

    def can_prelabel(self) -> bool:
        """Pre-labels are given only once there are at least as many labels as classes."""
        return self.n_labels >= len(self.labels) and len(self.classes_seen) >= 2


def _check_x(x: np.ndarray, n: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"x must be an (n, d) array with one row per label set, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or inf")
    return x


def fit_head(
    x: np.ndarray,
    label_sets: Sequence[Sequence[str]],
    labels: Sequence[str],
    multi_label: bool,
    *,
    config: HeadConfig = DEFAULT_CONFIG,
    scaling: Scaling | None = None,
    pool: np.ndarray | None = None,
) -> Head:
    """Fit a head on embeddings ``x`` and the chosen labels of each row.

    ``scaling``: the pool's statistics (:meth:`Scaling.of`); default: those of ``x``.
    ``pool``: the pool's embeddings, for ``config.semi_supervised`` (ignored when "none").
    Raises :class:`NotEnoughLabels` with fewer than two classes to tell apart.
    """
    labels = tuple(labels)
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted({n for s in label_sets for n in s if n not in index})
    if unknown:
        raise ValueError(f"labels {unknown} are not in the config's labels {list(labels)}")
    x = _check_x(x, len(label_sets))
    counts = {name: 0 for name in labels}
    for chosen in label_sets:
        for name in chosen:
            counts[name] += 1
    seen = tuple(name for name in labels if counts[name] > 0)
    if not multi_label:
        if any(len(chosen) != 1 for chosen in label_sets):
            raise ValueError("single-label heads need exactly one label per row")
        if len(seen) < 2:
            raise NotEnoughLabels(
                f"need labels of at least 2 classes to train, have {len(seen)} "
                f"({len(label_sets)} labels)"
            )
        y = np.array([index[chosen[0]] for chosen in label_sets], dtype=np.int64)
        probe = LinearProbe(config, scaling).fit(x, y, pool)
        return Head(labels, False, len(label_sets), seen, [probe])
    y_multi = _multi_hot(label_sets, index, len(labels))
    scaling = scaling or Scaling.of(x)
    estimators: list[Any] = []
    constant: list[float] = []
    for j in range(len(labels)):
        col = y_multi[:, j]
        constant.append(float((col.sum() + 0.5) / (len(col) + 1.0)))
        if col.min() == col.max():
            estimators.append(None)
            continue
        estimators.append(LinearProbe(config, scaling).fit(x, col, pool))
    if all(e is None for e in estimators) or len(seen) < 2:
        raise NotEnoughLabels(
            "need at least one label that is present on some images and absent on others, "
            f"and 2 labels in use; have {len(seen)} labels in use"
        )
    return Head(labels, True, len(label_sets), seen, estimators, constant)


def fit_codes(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    config: HeadConfig = DEFAULT_CONFIG,
    scaling: Scaling | None = None,
    pool: np.ndarray | None = None,
) -> Head:
    """:func:`fit_head` for integer classes ``y`` in ``0..n_classes-1`` (labels "0", "1", ...)."""
    names = tuple(str(i) for i in range(n_classes))
    y = np.asarray(y, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"classes must be in 0..{n_classes - 1}")
    sets = [(names[int(v)],) for v in y]
    return fit_head(x, sets, names, False, config=config, scaling=scaling, pool=pool)


def _multi_hot(label_sets: Sequence[Sequence[str]], index: dict[str, int], n: int) -> np.ndarray:
    y = np.zeros((len(label_sets), n), dtype=np.int64)
    for row, chosen in enumerate(label_sets):
        for name in chosen:
            y[row, index[name]] = 1
    return y


def train_head(
    x: np.ndarray,
    label_sets: Sequence[Sequence[str]],
    labels: Sequence[str],
    multi_label: bool,
    *,
    config: HeadConfig = DEFAULT_CONFIG,
    scaling: Scaling | None = None,
    pool: np.ndarray | None = None,
) -> tuple[Head, dict[str, Any]]:
    """:func:`fit_head` plus the metrics a model version records (cross-validated accuracy,
    labels per class, whether calibrated). What the backend's training process runs. The
    single-label head's cross-validation fits the same head as the version, semi-supervised
    over ``pool`` when ``config`` says so (the data-wide real accuracy,
    :func:`labelwheel.lead.honest.data_wide_accuracy`, reads it as the version's accuracy on
    its labelled share); the multi-label one cross-validates the plain probe."""
    head = fit_head(x, label_sets, labels, multi_label, config=config, scaling=scaling, pool=pool)
    labels = tuple(labels)
    counts = {name: sum(1 for s in label_sets if name in s) for name in labels}
    metrics: dict[str, Any] = {"n_labels": len(label_sets), "per_class": counts}
    metrics["calibrated"] = head.calibrated
    metrics["semi_supervised"] = config.semi_supervised if pool is not None else "none"
    index = {name: i for i, name in enumerate(labels)}
    x = np.asarray(x, dtype=np.float32)
    if multi_label:
        y = _multi_hot(label_sets, index, len(labels))
        metrics["cv_accuracy"] = _cv_subset_accuracy(x, y, config, scaling)
    else:
        codes = np.array([index[s[0]] for s in label_sets], dtype=np.int64)
        metrics["cv_accuracy"] = cv_accuracy(x, codes, config=config, scaling=scaling, pool=pool)
    return head, metrics


def _uncalibrated(config: HeadConfig) -> HeadConfig:
    return replace(config, calibrate=False)


def _subsample(
    x: np.ndarray, y: np.ndarray, limit: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if len(y) <= limit:
        return x, y
    keep = np.random.default_rng(seed).choice(len(y), limit, replace=False)
    return x[keep], y[keep]


def cv_accuracy(
    x: np.ndarray,
    y: np.ndarray,
    *,
    config: HeadConfig = DEFAULT_CONFIG,
    scaling: Scaling | None = None,
    seed: int = 0,
    max_samples: int = CV_MAX_SAMPLES,
    pool: np.ndarray | None = None,
) -> float | None:
    """Stratified cross-validated accuracy of the head on at most ``max_samples`` labels;
    None when some class has fewer than two labels. With ``pool`` and a semi-supervised
    ``config``, each fold's head is semi-supervised over the pool (the held-out fold's rows
    stay in the pool, unlabelled, as a new task would be)."""
    x, y = _subsample(np.asarray(x, dtype=np.float32), np.asarray(y), max_samples, seed)
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        return None
    pred = _oof(x, y, int(min(5, counts.min())), seed, _uncalibrated(config), scaling, pool)
    return float(np.mean(pred == y))


def _oof(
    x: np.ndarray,
    y: np.ndarray,
    folds: int,
    seed: int,
    config: HeadConfig,
    scaling: Scaling | None,
    pool: np.ndarray | None = None,
) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold

    pred = np.full(y.shape, -1, dtype=np.int64)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in cv.split(x, y):
        if len(np.unique(y[train])) < 2:
            continue
        probe = LinearProbe(config, scaling).fit(x[train], y[train], pool)
        pred[test] = probe.predict(x[test])
    return pred


def cv_predictions(
    x: np.ndarray,
    y: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    *,
    config: HeadConfig = DEFAULT_CONFIG,
    scaling: Scaling | None = None,
) -> np.ndarray | None:
    """Out-of-fold predicted class for every labelled row, or None if CV is impossible.

    Classes with a single example cannot be stratified; their rows are predicted by a head
    trained on all the other rows (so they count as errors unless the head generalises).
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    values, counts = np.unique(y, return_counts=True)
    rare = np.isin(y, values[counts < 2])
    keep = ~rare
    _, kept_counts = np.unique(y[keep], return_counts=True)
    if len(kept_counts) < 2 or kept_counts.min() < 2:
        return None
    k = int(min(folds, kept_counts.min()))
    config = _uncalibrated(config)
    pred = np.full(y.shape, -1, dtype=np.int64)
    pred[keep] = _oof(x[keep], y[keep], k, seed, config, scaling)
    if rare.any():
        pred[rare] = LinearProbe(config, scaling).fit(x[keep], y[keep]).predict(x[rare])
    return pred


def _cv_subset_accuracy(
    x: np.ndarray, y: np.ndarray, config: HeadConfig, scaling: Scaling | None, seed: int = 0
) -> float | None:
    """Cross-validated exact-match accuracy of a multi-label head."""
    from sklearn.model_selection import KFold

    x, y = _subsample(x, y, CV_MAX_SAMPLES, seed)
    n = len(y)
    if n < 4:
        return None
    config = _uncalibrated(config)
    hits = 0
    for train, test in KFold(n_splits=min(5, n // 2), shuffle=True, random_state=seed).split(x):
        pred = np.zeros((len(test), y.shape[1]), dtype=np.int64)
        for j in range(y.shape[1]):
            col = y[train, j]
            if col.min() == col.max():
                pred[:, j] = col[0]
            else:
                pred[:, j] = LinearProbe(config, scaling).fit(x[train], col).predict(x[test])
        hits += int(np.all(pred == y[test], axis=1).sum())
    return hits / n


# -- artifacts ------------------------------------------------------------------------------------

_MOVED = {("labelwheel.ml_backend.model", "Head"): ("labelwheel.head", "Head")}


class _Unpickler(pickle.Unpickler):
    """Reads artifacts of earlier releases, whose ``Head`` lived in the backend's model module."""

    def find_class(self, module: str, name: str) -> Any:
        module, name = _MOVED.get((module, name), (module, name))
        return super().find_class(module, name)


def save_head(head: Head, path: Path) -> None:
    """Write a head atomically (pickle to a temp file, fsync, rename, fsync the directory)."""
    atomic_write_bytes(Path(path), pickle.dumps(head, protocol=pickle.HIGHEST_PROTOCOL))


def load_head(path: Path) -> Head:
    """Read a head written by :func:`save_head`; raises :class:`TrainingError` if the file is
    not a readable labelwheel artifact."""
    try:
        data = Path(path).read_bytes()
        head = _Unpickler(io.BytesIO(data)).load()
    except Exception as exc:
        raise TrainingError(f"{path} is not a readable labelwheel model artifact ({exc})") from exc
    if not isinstance(head, Head):
        raise TrainingError(f"{path} is not a labelwheel model artifact")
    return head
