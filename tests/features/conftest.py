"""Real images for the store and embed tests: tiles of scikit-image's bundled photographs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_photo_tiles(folder: Path, count: int, start: int = 0) -> list[Path]:
    """``count`` distinct 96-px tiles of real photographs, as PNG and JPEG files."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(start, start + count):
        photo = photos[n % len(photos)]
        h, w = photo.shape[:2]
        step = n // len(photos)
        y = (step * 37) % (h - 96)
        x = (step * 53) % (w - 96)
        tile = np.ascontiguousarray(photo[y : y + 96, x : x + 96, :3])
        ext = "png" if n % 2 else "jpg"
        path = folder / f"sub{n % 3}" / f"photo_{n:04d}.{ext}"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(tile).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def photo_tiles() -> Callable[..., list[Path]]:
    """:func:`write_photo_tiles`, for tests that add images to a folder."""
    return write_photo_tiles


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    write_photo_tiles(folder, 24)
    return folder
