"""Shared helpers of the benchmark scripts (run them from the repository root)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
TEST_SIZE = 0.25
SPLIT_SEED = 0

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def log(message: str) -> None:
    """Timestamped progress line on stdout (the benchmarks run under nohup)."""
    print(time.strftime("%H:%M:%S"), message, flush=True)


def features_for(dataset: str) -> tuple[str, int | None]:
    """The features each data set is benchmarked on, and the backbone input size.

    MNIST-5k: EfficientNet-Lite0 at 112 px (linear probe 0.95 on the test split).
    digits: raw standardised pixels; at 8×8 the backbone features are worse (0.956 vs 0.969
    on the test split, measured with the simulator's classifier), so pixels are what measures best.
    """
    if dataset == "digits":
        return "raw", None
    return "efficientnet-lite0", 112


def load_split(dataset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Pool/test split (75/25, stratified, fixed seed) of a data set's benchmark features."""
    from sklearn.model_selection import train_test_split

    from labelwheel.datasets import load_embeddings

    backbone, size = features_for(dataset)
    feats = load_embeddings(dataset, backbone=backbone, image_size=size, progress=True)
    X_pool, X_test, y_pool, y_test = train_test_split(
        feats.X, feats.y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=feats.y
    )
    meta = {
        "dataset": dataset,
        "features": "raw pixels (standardised)" if backbone == "raw" else backbone,
        "image_size": size,
        "test_size": TEST_SIZE,
        "split_seed": SPLIT_SEED,
        "dim": int(feats.X.shape[1]),
    }
    return X_pool, y_pool, X_test, y_test, meta


def selectors_fingerprint() -> str:
    """Short hash of the selectors' source, to tell which version a result was measured on."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "labelwheel" / "selectors").glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded beside every result."""
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "selectors_sha": selectors_fingerprint(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_default) + "\n")
    os.replace(tmp, path)


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for a markdown table, '-' for missing."""
    return "-" if value is None else f"{value:.{digits}f}"


def labels_to_target(labels: Any, accuracy: Any, target: float) -> dict[str, Any]:
    """Per seed (a row of ``accuracy``, one column per entry of ``labels``), the first number
    of labels at which accuracy reached ``target``; mean ± std over the seeds that reached it."""
    points = np.asarray(labels)
    per_seed: list[int | None] = []
    for row in np.asarray(accuracy):
        hit = np.flatnonzero(row >= target)
        per_seed.append(int(points[hit[0]]) if hit.size else None)
    got = [v for v in per_seed if v is not None]
    return {
        "per_seed": per_seed,
        "mean": float(np.mean(got)) if got else None,
        "std": float(np.std(got)) if got else None,
        "reached": len(got),
        "seeds": len(per_seed),
    }
