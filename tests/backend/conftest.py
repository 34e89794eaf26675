"""Fixtures of the ML backend tests: a real backbone (small input size), real images, an app."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backend_helpers import IMAGE_SIZE, png_bytes


@pytest.fixture(scope="session")
def digits() -> tuple[list[bytes], np.ndarray]:
    """Real handwritten digits (sklearn), upscaled to 32 px PNGs, with their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = []
    for img in d.images:
        arr = (img / 16.0 * 255.0).astype(np.uint8)
        images.append(png_bytes(np.kron(arr, np.ones((4, 4), dtype=np.uint8))))
    return images, d.target


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """A few real photos from scikit-image, as PNG bytes."""
    import skimage.data

    out = {}
    for name in ("astronaut", "camera", "chelsea", "coffee", "coins", "horse", "rocket"):
        out[name] = png_bytes(getattr(skimage.data, name)())
    return out


@pytest.fixture(scope="session")
def backbone() -> Any:
    """The real EfficientNet-Lite0 backbone at a small input size, loaded once per session."""
    import torch

    from labelwheel.features import load_backbone

    torch.set_num_threads(1)
    return load_backbone("efficientnet-lite0", IMAGE_SIZE, 32)


@pytest.fixture
def make_app(tmp_path: Path, backbone: Any) -> Iterator[Callable[..., Any]]:
    """Factory of backend apps sharing the session backbone; every app is closed afterwards."""
    from labelwheel.ml_backend import create_app, get_service

    apps = []

    def factory(**overrides: Any) -> Any:
        config: dict[str, Any] = {
            "TESTING": True,
            "MODEL_DIR": str(tmp_path / "model_dir"),
            "LABELWHEEL_IMAGE_SIZE": str(IMAGE_SIZE),
            "LABELWHEEL_RETRAIN_EVERY": "0",
            "LABELWHEEL_PUBLISH": "false",
            "LABEL_STUDIO_URL": "",
            "LABEL_STUDIO_API_KEY": "",
            "BASIC_AUTH_USER": "",
            "BASIC_AUTH_PASS": "",
            "LABELWHEEL_ALLOWED_HOSTS": "",
            "LABELWHEEL_LOCAL_FILES_ROOT": "",
            "BACKBONE_LOADER": lambda: backbone,
        }
        config.update(overrides)
        app = create_app(config, environ={})
        apps.append(app)
        return app

    yield factory
    for app in apps:
        get_service(app).close()


@pytest.fixture
def auth_pair() -> tuple[str, str]:
    """Generated basic-auth credentials."""
    return ("lw-" + secrets.token_hex(4), secrets.token_urlsafe(16))
