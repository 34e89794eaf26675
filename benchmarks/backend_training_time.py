"""Training time of the backend's classifier head vs number of labels (100, 1,000, 10,000).

What one training costs once the images are embedded (embeddings are cached, so a retrain never
re-embeds): fitting the head (logistic regression on standardised 1280-d embeddings, sigmoid
calibration with 3 folds once every class has >= 6 labels) plus its cross-validated accuracy
(stratified 5-fold on at most 3,000 labels). Data: synthetic clustered embeddings of
EfficientNet-Lite0's width (1280), 10 classes — a timing benchmark, not an accuracy claim.

With ``--pools`` it also times the semi-supervised head (``LABELWHEEL_HEAD_SEMI=spreading``, the
default) as the backend runs it: the pool's embeddings in a ``.npy`` file that the training
process memory-maps, at each pool size, with the training process's peak resident memory.

    .venv/bin/python benchmarks/backend_training_time.py [--sizes 100 1000 10000]
        [--pools 5000 20000 --pool-labels 100 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def clustered(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, list[list[str]]]:
    """Gaussian clusters, two per class, non-negative like pooled CNN features."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(2.0, 0.5, size=(classes * 2, dim)).astype(np.float32)
    which = rng.integers(0, classes * 2, n)
    x = centres[which] + rng.normal(0, 0.8, size=(n, dim)).astype(np.float32)
    x = np.maximum(x, 0)
    return x, [[f"c{w % classes}"] for w in which]


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def semi_row(args: argparse.Namespace, labels: list[str], pool_size: int, n: int) -> dict:
    """One semi-supervised training on ``n`` labels with a pool of ``pool_size`` rows, in a
    fresh training process (its peak memory is this training's)."""
    import tempfile

    from labelwheel.head import Scaling
    from labelwheel.ml_backend.training import FitProcess

    pool, _ = clustered(pool_size, args.dim, args.classes, seed=pool_size)
    x, y = clustered(n, args.dim, args.classes, seed=n)
    fitter = FitProcess()
    fitter.fit(x[:60], y[:60], labels, False)  # process start, imports
    worker = next(iter(fitter._pool._processes))  # type: ignore[union-attr]
    base = _peak_rss_mib(worker)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pool.npy"
        np.save(path, pool)
        scaling = Scaling.of(pool)
        del pool
        started = time.perf_counter()
        _, metrics = fitter.fit(
            x, y, labels, False, scaling, semi_supervised="spreading", pool=path
        )
        seconds = time.perf_counter() - started
        peak = _peak_rss_mib(worker)
        t0 = time.perf_counter()
        fitter.fit(x, y, labels, False, scaling, semi_supervised="none")
        plain = time.perf_counter() - t0
    fitter.close()
    row = {
        "pool": pool_size,
        "labels": n,
        "semi_train_seconds": round(seconds, 2),
        "plain_train_seconds": round(plain, 2),
        "semi_supervised": metrics["semi_supervised"],
        "training_process_peak_rss_mib": round(peak, 1),
        "training_process_rss_before_mib": round(base, 1),
    }
    print(row)
    return row


def main() -> None:
    """Run the benchmark and write benchmarks/results/backend_training_time.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--pools", type=int, nargs="*", default=[])
    parser.add_argument("--pool-labels", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()

    from labelwheel.ml_backend.training import FitProcess

    rows = []
    labels = [f"c{i}" for i in range(args.classes)]
    # the backend's own training process: spawned, niced, one BLAS thread
    fitter = FitProcess()
    x, y = clustered(60, args.dim, args.classes, seed=1)
    fitter.fit(x, y, labels, False)  # warm-up: process start, imports
    for n in args.sizes:
        x, y = clustered(n, args.dim, args.classes, seed=n)
        started = time.perf_counter()
        head, metrics = fitter.fit(x, y, labels, False)
        seconds = time.perf_counter() - started
        t0 = time.perf_counter()
        head.predict_proba(x[:1000])
        predict_ms = (time.perf_counter() - t0) * 1000 / min(n, 1000) * 1000
        row = {
            "labels": n,
            "train_seconds": round(seconds, 2),
            "calibrated": metrics["calibrated"],
            "cv_accuracy": None
            if metrics["cv_accuracy"] is None
            else round(metrics["cv_accuracy"], 3),
            "head_predict_ms_per_1000": round(predict_ms, 2),
        }
        rows.append(row)
        print(row)
    fitter.close()
    semi_rows = [semi_row(args, labels, p, n) for p in args.pools for n in args.pool_labels]
    result = {
        "benchmark": "backend_training_time",
        "dim": args.dim,
        "classes": args.classes,
        "data": "synthetic clustered embeddings (timing only)",
        "process": "spawned training process, nice 10, one BLAS thread (as in the backend)",
        "rows": rows,
        "semi_rows": semi_rows,
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "backend_training_time.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
