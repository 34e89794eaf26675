"""Training time of the backend's classifier head vs number of labels (100, 1,000, 10,000).

What one training costs once the images are embedded (embeddings are cached, so a retrain never
re-embeds): fitting the head (logistic regression on standardised 1280-d embeddings, sigmoid
calibration with 3 folds once every class has >= 6 labels) plus its cross-validated accuracy
(stratified 5-fold on at most 3,000 labels). Data: synthetic clustered embeddings of
EfficientNet-Lite0's width (1280), 10 classes — a timing benchmark, not an accuracy claim.

    .venv/bin/python benchmarks/backend_training_time.py [--sizes 100 1000 10000]
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


def main() -> None:
    """Run the benchmark and write benchmarks/results/backend_training_time.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=10)
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
    result = {
        "benchmark": "backend_training_time",
        "dim": args.dim,
        "classes": args.classes,
        "data": "synthetic clustered embeddings (timing only)",
        "process": "spawned training process, nice 10, one BLAS thread (as in the backend)",
        "rows": rows,
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    fitter.close()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "backend_training_time.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
