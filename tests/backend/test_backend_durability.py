"""Durability: a real backend process is SIGKILLed mid-training and restarted.

Nothing acknowledged is lost, the interrupted run is recorded, the last good version serves, and
the next training includes every annotation. The training is held "mid-way" deterministically: it
fetches its images from a local HTTP server (an allowlisted host) that stalls on some of them.
"""

from __future__ import annotations

import base64
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from backend_helpers import CONFIG_SINGLE, annotation_event, data_uri
from backend_procs import Backend, ImageServer

pytestmark = pytest.mark.slow


@pytest.fixture
def image_server(digits: Any) -> Iterator[tuple[ImageServer, np.ndarray]]:
    images, target = digits
    server = ImageServer(images)
    yield server, target
    server.close()


def test_sigkill_mid_training_loses_nothing(
    tmp_path: Path, image_server: tuple[ImageServer, np.ndarray], digits: Any
) -> None:
    server, target = image_server
    images, _ = digits
    user, password = "lw-" + secrets.token_hex(3), secrets.token_urlsafe(12)
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LABELWHEEL_", "LABEL_STUDIO_"))
        },
        "MODEL_DIR": str(tmp_path / "state"),
        "BASIC_AUTH_USER": user,
        "BASIC_AUTH_PASS": password,
        "LABELWHEEL_IMAGE_SIZE": "64",
        "LABELWHEEL_RETRAIN_EVERY": "0",
        "LABELWHEEL_PUBLISH": "false",
        "LABELWHEEL_ALLOWED_HOSTS": "127.0.0.1",
        "OMP_NUM_THREADS": "1",
    }
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    headers = {"Authorization": auth}
    backend = Backend(env, tmp_path / "backend.log")
    acknowledged: set[int] = set()

    def annotate(ann_id: int, ref: str, label: str) -> None:
        event = annotation_event(ann_id, 10_000 + ann_id, ref, [label])
        resp = requests.post(backend.url + "/webhook", json=event, headers=headers, timeout=5)
        assert resp.status_code == 200, resp.text
        acknowledged.add(ann_id)

    def wait_for(predicate: Any, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = predicate()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError("timed out; log:\n" + (tmp_path / "backend.log").read_text()[-3000:])

    def get(path: str) -> Any:
        return requests.get(backend.url + path, headers=headers, timeout=30).json()

    zeros = np.flatnonzero(target == 0)
    ones = np.flatnonzero(target == 1)
    try:
        resp = requests.post(
            backend.url + "/setup",
            json={"project": "1.1", "schema": CONFIG_SINGLE},
            headers=headers,
            timeout=5,
        )
        assert resp.json() == {"model_version": "v0"}
        for k in range(5):
            annotate(1 + k, data_uri(images[zeros[k]]), "zero")
            annotate(101 + k, data_uri(images[ones[k]]), "one")
        requests.post(
            backend.url + "/webhook",
            json={"action": "START_TRAINING", "project": {"id": 1}},
            headers=headers,
            timeout=5,
        )
        wait_for(lambda: get("/versions")["versions"] == ["v1"])

        # second training: its images stall on the image server, so it is mid-way for sure
        base = f"http://127.0.0.1:{server.port}/slow"
        for k in range(5, 8):
            annotate(1 + k, f"{base}/{zeros[k]}.png", "zero")
            annotate(101 + k, f"{base}/{ones[k]}.png", "one")
        requests.post(
            backend.url + "/webhook",
            json={"action": "START_TRAINING", "project": {"id": 1}},
            headers=headers,
            timeout=5,
        )
        wait_for(lambda: get("/health")["training"] == [1] and server.slow_requests > 0)
        # annotations keep being acknowledged while the training runs ...
        for k in range(8, 11):
            annotate(1 + k, data_uri(images[zeros[k]]), "zero")
        backend.kill()  # ... and then the process dies at once
    finally:
        backend.stop()

    # straight from the database file: every acknowledged annotation is there
    with sqlite3.connect(tmp_path / "state" / "labelwheel.sqlite3") as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM annotations WHERE deleted = 0")}
    assert acknowledged <= stored
    assert len(acknowledged) == 19

    server.release.set()
    backend = Backend(env, tmp_path / "backend.log")
    try:
        # the interrupted training was acknowledged: it runs again by itself after the restart,
        # and sees everything that was acknowledged before the kill
        wait_for(lambda: get("/versions")["versions"] == ["v1", "v2"])
        v = get("/versions")
        assert v["details"][1]["n_labels"] == 19
        assert [r["status"] for r in v["runs"][:3]] == ["ok", "interrupted", "ok"]
        body = {
            "tasks": [{"id": 1, "data": {"image": data_uri(images[zeros[30]])}}],
            "project": "1.1",
        }
        resp = requests.post(backend.url + "/predict", json=body, headers=headers, timeout=60)
        (pred,) = resp.json()["results"]
        assert pred["model_version"] == "v2" and pred["result"]
    finally:
        backend.stop()
