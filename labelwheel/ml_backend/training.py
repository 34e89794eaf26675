"""The training process: the head is fitted in a separate, lower-priority process.

The fit is CPU-bound Python and BLAS work: in the server process it would hold the GIL and the
cores that request threads need, and webhook acknowledgements would wait behind it.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from labelwheel.head import Head, HeadConfig, Scaling, TrainingError, train_head
from labelwheel.npyio import load_npy

__all__ = ["FitProcess", "fit_process_init"]


def fit_process_init() -> None:
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


class FitProcess:
    """One long-lived training process, started on first use, restarted if it dies."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def fit(
        self,
        x: np.ndarray,
        label_sets: Sequence[Sequence[str]],
        labels: Sequence[str],
        multi_label: bool,
        scaling: Scaling | None = None,
        *,
        semi_supervised: str = "none",
        pool: np.ndarray | Path | None = None,
    ) -> tuple[Head, dict[str, Any]]:
        """:func:`labelwheel.head.train_head` in the training process.

        ``semi_supervised`` (``LABELWHEEL_HEAD_SEMI``) with ``pool``, the project's pool
        embeddings: the semi-supervised head (:mod:`labelwheel.semisup`). A path (a ``.npy``
        file, what the backend passes) is memory-mapped by the training process: nothing of
        the pool is copied through the pipe. An array is pickled to it (N·d·4 bytes). A pool
        file that cannot be read gives the plain head, and says so in the metrics."""
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=fit_process_init,
                )
            executor = self._pool
        future = executor.submit(
            _train,
            x,
            [list(s) for s in label_sets],
            tuple(labels),
            multi_label,
            scaling,
            semi_supervised,
            pool,
        )
        try:
            return future.result()
        except BrokenProcessPool as exc:
            with self._lock:
                if self._pool is executor:
                    self._pool = None
            raise TrainingError("the training process died") from exc

    def close(self) -> None:
        """Stop the training process."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


def _train(
    x: np.ndarray,
    label_sets: list[list[str]],
    labels: tuple[str, ...],
    multi_label: bool,
    scaling: Scaling | None,
    semi_supervised: str = "none",
    pool: np.ndarray | Path | None = None,
) -> tuple[Head, dict[str, Any]]:
    config = HeadConfig(semi_supervised=semi_supervised)
    problem: str | None = None
    rows: np.ndarray | None = None
    if semi_supervised == "none":
        pass
    elif isinstance(pool, Path):
        try:
            rows = load_npy(pool, mmap_mode="r")
        except (OSError, ValueError) as exc:
            problem = f"the pool file cannot be read ({exc})"
        if rows is not None and (rows.ndim != 2 or rows.shape[1] != np.shape(x)[1]):
            problem = f"the pool file holds shape {rows.shape}, not (n, {np.shape(x)[1]})"
            rows = None
    elif pool is None:
        problem = "no pool embeddings yet (the pool has not been ranked)"
    else:
        rows = pool
    head, metrics = train_head(
        x, label_sets, labels, multi_label, config=config, scaling=scaling, pool=rows
    )
    if problem is not None:
        metrics["semi_supervised_skipped"] = problem
    return head, metrics
