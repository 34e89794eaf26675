"""Features for the simulator: a named real data set or an ``.npz`` file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labelwheel.npyio import load_npz


def load_features(
    dataset: str,
    features: str = "backbone",
    image_size: int | None = None,
    backbone: str = "efficientnet-lite0",
    cache_dir: Path | str | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Features ``(X, y, class_names)`` of a named data set or an ``.npz`` file.

    An ``.npz`` holds ``X`` and ``y`` (and optionally ``class_names``). A 2-D ``X`` is used as
    features as it is; a 3-D ``(n, h, w)`` or 4-D ``(n, h, w, 3)`` ``X`` holds images that are
    turned into features like the named sets (``features="raw"`` or ``"backbone"``).
    """
    from labelwheel import datasets

    if features not in ("backbone", "raw"):
        raise ValueError(f"features must be 'backbone' or 'raw', got {features!r}")
    if dataset in datasets.DATASETS:
        name = datasets.RAW if features == "raw" else backbone
        feats = datasets.load_embeddings(
            dataset, backbone=name, image_size=image_size, cache_dir=cache_dir, progress=progress
        )
        return feats.X, feats.y, feats.class_names
    path = Path(dataset)
    if path.suffix != ".npz":
        raise ValueError(
            f"unknown data set {dataset!r}: use one of {', '.join(datasets.DATASETS)} "
            "or a path to an .npz file with arrays X and y"
        )
    if not path.is_file():
        raise ValueError(f"no such file: {dataset}")
    try:
        arrays = load_npz(path, keys=("X", "y", "class_names"))
    except Exception as exc:
        raise ValueError(
            f"could not read {dataset} as an .npz file of numeric arrays (np.savez): {exc}"
        ) from exc
    if not isinstance(arrays, dict) or "X" not in arrays or "y" not in arrays:
        raise ValueError(f"{dataset} must contain arrays named 'X' and 'y'")
    X, y = arrays["X"], arrays["y"]
    names = tuple(str(c) for c in arrays["class_names"]) if "class_names" in arrays else ()
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"y must be 1-D with one label per row of X: X {X.shape}, y {y.shape}")
    if X.ndim == 2:
        if not np.issubdtype(X.dtype, np.number):
            raise ValueError(f"X must be numeric, got dtype {X.dtype}")
        X = X.astype(np.float32)
    elif X.ndim in (3, 4):
        images = np.clip(X, 0, 255).astype(np.uint8)
        if features == "raw":
            X = datasets.raw_features(images)
        else:
            from labelwheel.features import load_backbone

            size = image_size or 112
            X = load_backbone(backbone, image_size=size, batch_size=64).embed_arrays(images)
    else:
        raise ValueError(f"X must be 2-D features or 3-/4-D images, got shape {X.shape}")
    if not names:
        names = tuple(str(c) for c in np.unique(y))
    return X, y, names
