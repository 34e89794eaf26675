"""The small classifier the lead tools measure with: logistic regression on embeddings."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def make_classifier(max_iter: int = 300) -> Pipeline:
    """A standardised logistic regression, the same kind of head the backend trains."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=1.0))


def encode_labels(labels: Sequence[str | None]) -> tuple[np.ndarray, list[str]]:
    """Map labels to class indices; unlabelled items become -1. Returns (codes, class names)."""
    classes = sorted({lab for lab in labels if lab is not None})
    index = {c: i for i, c in enumerate(classes)}
    codes = np.array([index[lab] if lab is not None else -1 for lab in labels], dtype=np.int64)
    return codes, classes


def usable_folds(y: np.ndarray, folds: int = 5) -> int:
    """How many stratified folds ``y`` supports (0 when cross-validation is impossible)."""
    if y.size == 0:
        return 0
    _, counts = np.unique(y, return_counts=True)
    if counts.size < 2:
        return 0
    return int(min(folds, counts.min())) if counts.min() >= 2 else 0


def cv_predictions(
    x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0
) -> np.ndarray | None:
    """Out-of-fold predicted class indices for every labelled row, or None if CV is impossible.

    Classes with a single example cannot be stratified; their rows are predicted by a model
    trained on all the other rows (so they count as errors unless the model generalises).
    """
    y = np.asarray(y)
    values, counts = np.unique(y, return_counts=True)
    rare = np.isin(y, values[counts < 2])
    keep = ~rare
    k = usable_folds(y[keep], folds)
    if k < 2:
        return None
    pred = np.full(y.shape, -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        pred[keep] = cross_val_predict(make_classifier(), x[keep], y[keep], cv=cv)
        if rare.any():
            model = make_classifier().fit(x[keep], y[keep])
            pred[rare] = model.predict(x[rare])
    return pred


def fit_probabilities(
    x_train: np.ndarray, y_train: np.ndarray, x_pool: np.ndarray, n_classes: int
) -> np.ndarray | None:
    """Train on the labelled rows and return ``(len(x_pool), n_classes)`` probabilities.

    None when fewer than two classes have labels (cold start: no model can be trained).
    """
    present = np.unique(y_train)
    if present.size < 2 or x_pool.shape[0] == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        model = make_classifier().fit(x_train, y_train)
    proba = np.zeros((x_pool.shape[0], n_classes), dtype=np.float64)
    proba[:, present] = model.predict_proba(x_pool)
    return proba
