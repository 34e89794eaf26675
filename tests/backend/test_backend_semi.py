"""The semi-supervised head in the backend, against a real Label Studio.

A pool ranking saves the pool's embeddings (``pool.npy`` under the project's MODEL_DIR folder);
the training process memory-maps that file and fits the semi-supervised head, and the version's
metrics say which head it is.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backend_helpers import CONFIG_SINGLE, annotation_event, data_uri

from labelwheel.ml_backend import get_service

pytestmark = [pytest.mark.e2e]

N_TASKS = 40
N_LABELLED = 12


def _project(app: Any, ls_client: Any, digits: Any) -> int:
    """A project of digit images 0 and 1 with N_LABELLED annotations sent to the webhook."""
    images, target = digits
    rows = [i for i in range(len(target)) if target[i] in (0, 1)][:N_TASKS]
    pid = int(ls_client.create_project("labelwheel semi head", CONFIG_SINGLE)["id"])
    ids = ls_client.import_tasks(pid, [{"image": data_uri(images[i])} for i in rows])
    client = app.test_client()
    for k in range(N_LABELLED):
        name = "zero" if target[rows[k]] == 0 else "one"
        event = annotation_event(k + 1, int(ids[k]), data_uri(images[rows[k]]), [name], project=pid)
        assert client.post("/webhook", json=event).status_code == 200
    return pid


def _train(app: Any, pid: int) -> dict[str, Any]:
    client = app.test_client()
    start = {"action": "START_TRAINING", "project": {"id": pid, "label_config": CONFIG_SINGLE}}
    assert client.post("/webhook", json=start).status_code == 200
    assert get_service(app).worker.wait_idle(120)
    details = client.get(f"/versions?project={pid}").get_json()["details"]
    assert details, "no version was trained"
    return details[-1]


def _rank(app: Any, pid: int) -> None:
    model = get_service(app).model  # the ranking of the project's pool, in the background job
    deadline = time.monotonic() + 60
    body = {
        "tasks": [{"id": 0, "data": {"image": ""}}],
        "project": f"{pid}.1",
        "label_config": CONFIG_SINGLE,
    }
    app.test_client().post("/predict", json=body)
    while model.cached_ranking(pid) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert model.cached_ranking(pid) is not None


def _connected(make_app: Any, label_studio: Any, semi: str) -> Any:
    return make_app(
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        LABELWHEEL_HEAD_SEMI=semi,
    )


def test_ranked_pool_feeds_the_semi_supervised_head(
    make_app: Any, label_studio: Any, ls_client: Any, digits: Any
) -> None:
    app = _connected(make_app, label_studio, "spreading")
    pid = _project(app, ls_client, digits)
    first = _train(app, pid)  # before any ranking: no pool yet, the plain head, said so
    assert first["metrics"]["semi_supervised"] == "none"
    assert "not been ranked" in first["metrics"]["semi_supervised_skipped"]

    _rank(app, pid)
    service = get_service(app)
    path = service.model.rankings.pool_path(pid)
    assert (
        path is not None
        and path == Path(service.settings.model_dir) / "projects" / str(pid) / "pool.npy"
    )
    pool = np.load(path)
    # the unlabelled tasks' rows, then the labelled items' rows
    assert pool.shape == (N_TASKS, service.model.backbone().dim)
    assert pool.dtype == np.float32 and np.isfinite(pool).all()

    second = _train(app, pid)
    assert second["metrics"]["semi_supervised"] == "spreading"
    assert "semi_supervised_skipped" not in second["metrics"]
    assert second["metrics"]["n_labels"] == N_LABELLED


def test_plain_head_saves_no_pool(
    make_app: Any, label_studio: Any, ls_client: Any, digits: Any
) -> None:
    app = _connected(make_app, label_studio, "none")
    pid = _project(app, ls_client, digits)
    _train(app, pid)
    _rank(app, pid)
    assert get_service(app).model.rankings.pool_path(pid) is None
    assert _train(app, pid)["metrics"]["semi_supervised"] == "none"
