"""Fixtures of the end-to-end tests: real Label Studio (``tests/conftest.py``), real backend
processes, real demo images with held-back answers.

- ``demo_images``: 300 MNIST-derived PNGs (112 px) and their answers, written once per session.
- ``backend``: one ``labelwheel serve`` process for the session, pointed at ``label_studio`` with
  its legacy token, basic auth on, retraining only on START_TRAINING; the selector picks the head
  of the queue as one batch of 10 (the backend's default when it does not retrain by count), and
  the tests label that many tasks between two trainings.
- ``backend_factory``: start more backends (own MODEL_DIR) for tests that kill or reconfigure one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import Backend, make_backend

from labelwheel.demo_data import DemoDataset, write_demo_images
from labelwheel.ls_api import LabelStudioClient
from labelwheel.ls_local import LocalLabelStudio


@pytest.fixture(scope="session")
def demo_images(tmp_path_factory: pytest.TempPathFactory) -> DemoDataset:
    """300 demo digits (30 per class), 112 px RGB PNGs, answers in ``ground_truth.csv``."""
    return write_demo_images(tmp_path_factory.mktemp("demo-images"), 300, size=112, seed=1)


@pytest.fixture(scope="session")
def backend(
    tmp_path_factory: pytest.TempPathFactory, label_studio: LocalLabelStudio
) -> Iterator[Backend]:
    """The session's backend process (legacy token, basic auth, explicit training)."""
    b = make_backend(
        tmp_path_factory.mktemp("backend"),
        label_studio.url,
        label_studio.token,
    )
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def backend_factory(tmp_path: Path) -> Iterator[Callable[..., Backend]]:
    """``factory(ls_url, api_key, **env) -> Backend`` (started); all stopped at teardown."""
    started: list[Backend] = []

    def factory(ls_url: str, api_key: str, start: bool = True, **env: str) -> Backend:
        b = make_backend(tmp_path / f"backend{len(started)}", ls_url, api_key, **env)
        started.append(b)
        return b.start() if start else b

    yield factory
    for b in started:
        b.stop()


@pytest.fixture
def ls_sdk(label_studio: LocalLabelStudio) -> Any:
    """The Label Studio SDK client (``LabelStudio(base_url, api_key)``), legacy token."""
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=label_studio.url, api_key=label_studio.token)


@pytest.fixture
def client(label_studio: LocalLabelStudio) -> LabelStudioClient:
    """labelwheel's REST client for the session's Label Studio (legacy token)."""
    return LabelStudioClient(label_studio.url, label_studio.token, timeout=120)
