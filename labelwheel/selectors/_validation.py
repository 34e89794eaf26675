"""Input validation shared by every strategy and filter.

Every check raises :class:`ValueError` with a message that says what to pass instead. Large
arrays are checked in row chunks so validation never allocates a copy of the pool.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Rows per chunk when scanning big arrays (bounded temporary memory).
CHUNK_ROWS = 65_536

#: Tolerance on probability rows summing to one.
SUM_TOLERANCE = 1e-3


def check_n(n: Any) -> int:
    """``n`` as a Python int; ValueError unless it is a whole number ≥ 0."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise ValueError(
            f"n must be a whole number of samples to pick (an int >= 0), got {n!r} "
            f"of type {type(n).__name__}"
        )
    if n < 0:
        raise ValueError(f"n must be >= 0 (the number of samples to pick), got {n}")
    return int(n)


def check_seed(seed: Any) -> int:
    """``seed`` as a Python int; ValueError unless it is a whole number."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an int, got {seed!r} of type {type(seed).__name__}")
    return int(seed)


def _check_real_dtype(arr: np.ndarray, name: str) -> None:
    kind = arr.dtype.kind
    if kind not in "fiu":
        raise ValueError(
            f"{name} must be an array of real numbers (float32 or float64), got dtype "
            f"{arr.dtype}; convert it with np.asarray(x, dtype=np.float32)"
        )


def _check_finite(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind != "f":
        return
    rows = arr.reshape(arr.shape[0], -1) if arr.ndim >= 1 and arr.shape[0] else arr.reshape(1, -1)
    for start in range(0, rows.shape[0], CHUNK_ROWS):
        block = rows[start : start + CHUNK_ROWS]
        if not np.isfinite(block).all():
            bad = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise ValueError(
                f"{name} contains NaN or infinite values (first at row {bad}); "
                "remove or impute those rows before selecting"
            )


def as_embeddings(embeddings: Any, name: str = "embeddings") -> NDArray[np.floating]:
    """Validate an (N, d) array of finite real numbers; floats are not copied."""
    if embeddings is None:
        raise ValueError(f"{name} is required: pass an (N, d) float array, one row per sample")
    arr = np.asarray(embeddings)
    _check_real_dtype(arr, name)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (N, d), one row per sample; got shape {arr.shape}"
        )
    if arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature column; got shape {arr.shape}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    _check_finite(arr, name)
    return arr


def as_probabilities(
    probabilities: Any,
    n_samples: int | None,
    *,
    committee: bool = False,
    multi_label: bool = False,
) -> NDArray[np.float64]:
    """Validate class probabilities: (N, C), or (T, N, C) for a committee.

    Rows must lie in [0, 1] and (single-label) sum to 1 within ``SUM_TOLERANCE``.
    """
    want = "(T, N, C): T stochastic passes or committee members" if committee else "(N, C)"
    if probabilities is None:
        raise ValueError(f"probabilities are required: pass the model's class probabilities {want}")
    arr = np.asarray(probabilities)
    _check_real_dtype(arr, "probabilities")
    ndim = 3 if committee else 2
    if arr.ndim != ndim:
        hint = (
            "; for a single model use margin/entropy/least_confidence, or stack T passes"
            if committee
            else ""
        )
        raise ValueError(f"probabilities must have shape {want}; got shape {arr.shape}{hint}")
    if committee and arr.shape[0] < 1:
        raise ValueError("probabilities (T, N, C) need at least one pass/member (T >= 1)")
    if arr.shape[-1] < 2:
        raise ValueError(
            f"probabilities need at least 2 class columns (C >= 2); got shape {arr.shape}. "
            "For a binary model pass both columns [1 - p, p]"
        )
    if n_samples is not None and arr.shape[-2] != n_samples:
        raise ValueError(
            f"probabilities have {arr.shape[-2]} rows but embeddings have {n_samples}; "
            "pass one probability row per embedding row"
        )
    arr = np.asarray(arr, dtype=np.float64)
    _check_finite(arr.reshape(-1, arr.shape[-1]), "probabilities")
    if arr.size and (arr.min() < -1e-6 or arr.max() > 1 + 1e-6):
        raise ValueError(
            "probabilities must lie in [0, 1]; got values in "
            f"[{arr.min():.4g}, {arr.max():.4g}] (pass softmax outputs, not logits)"
        )
    if not multi_label and arr.size:
        sums = arr.sum(axis=-1)
        worst = float(np.abs(sums - 1.0).max())
        if worst > SUM_TOLERANCE:
            raise ValueError(
                "each row of probabilities must sum to 1 (single-label softmax output); "
                f"a row sums to {float(sums.flat[np.abs(sums - 1).argmax()]):.4g}. "
                "Normalise with p / p.sum(axis=-1, keepdims=True), or pass multi_label=True "
                "to least_confidence/margin/entropy for independent per-label probabilities"
            )
    return np.clip(arr, 0.0, 1.0)


def as_labeled(labeled: Any, n_samples: int) -> NDArray[np.bool_]:
    """Validate a boolean mask of length N (None = nothing labelled)."""
    if labeled is None:
        return np.zeros(n_samples, dtype=bool)
    arr = np.asarray(labeled)
    if arr.dtype != np.bool_:
        raise ValueError(
            f"labeled must be a boolean mask of shape ({n_samples},), got dtype {arr.dtype}; "
            "to turn indices into a mask use np.isin(np.arange(N), labelled_indices)"
        )
    if arr.shape != (n_samples,):
        raise ValueError(
            f"labeled must be a boolean mask of shape ({n_samples},) (one entry per sample), "
            f"got shape {arr.shape}"
        )
    return arr


def check_params(strategy: str, params: dict[str, Any], accepted: Iterable[str]) -> None:
    """ValueError naming the accepted parameters if ``params`` has any other key."""
    accepted = tuple(accepted)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        allowed = ", ".join(accepted) if accepted else "none"
        raise ValueError(
            f"strategy {strategy!r} got unknown parameter(s) {', '.join(unknown)}; "
            f"it accepts: {allowed}"
        )


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """ValueError unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """ValueError unless ``value`` is an int ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return int(value)


def check_fraction(name: str, value: Any, low: float = 0.0, high: float = 1.0) -> float:
    """ValueError unless ``value`` is a real number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{name} must be a number in [{low}, {high}]; got {value!r}")
    v = float(value)
    if not (low <= v <= high):
        raise ValueError(f"{name} must be in [{low}, {high}]; got {v}")
    return v


@dataclass(frozen=True)
class Pool:
    """The validated inputs a strategy works on."""

    n_samples: int
    embeddings: NDArray[np.floating] | None
    probabilities: NDArray[np.float64] | None
    labeled: NDArray[np.bool_]
    seed: int

    @property
    def unlabeled_idx(self) -> NDArray[np.int64]:
        """Indices of samples not yet labelled, ascending."""
        return np.flatnonzero(~self.labeled).astype(np.int64)

    @property
    def n_unlabeled(self) -> int:
        """Number of samples not yet labelled."""
        return int(self.n_samples - np.count_nonzero(self.labeled))

    def rng(self) -> np.random.Generator:
        """A fresh generator for this call's seed."""
        return np.random.default_rng(self.seed)

    def need_embeddings(self, strategy: str) -> NDArray[np.floating]:
        """The embeddings, or a ValueError naming the strategy."""
        if self.embeddings is None:
            raise ValueError(
                f"strategy {strategy!r} needs embeddings: pass embeddings=(N, d) float array"
            )
        return self.embeddings

    def need_probabilities(self, strategy: str) -> NDArray[np.float64]:
        """The probabilities, or a ValueError naming the strategy."""
        if self.probabilities is None:
            raise ValueError(
                f"strategy {strategy!r} needs the model's class probabilities: pass "
                "probabilities=(N, C) array (rows sum to 1); with no model yet use a cold-start "
                "strategy such as 'typiclust', 'kmeans', 'kcenter', 'probcover' or 'adaptive'"
            )
        return self.probabilities
