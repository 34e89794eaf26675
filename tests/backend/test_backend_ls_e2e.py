"""The backend against a real Label Studio: pool ranking from the API, training, publishing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from backend_helpers import CONFIG_SINGLE, data_uri
from werkzeug.serving import make_server

from labelwheel.ml_backend import get_service

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def project(ls_client: Any, digits: Any) -> tuple[int, list[int], list[int]]:
    """A project with 24 real digit images (12 zeros, 12 ones) as data: URI tasks."""
    images, target = digits
    idx = list(np.flatnonzero(target == 0)[:12]) + list(np.flatnonzero(target == 1)[:12])
    created = ls_client.create_project("labelwheel backend e2e", CONFIG_SINGLE)
    tasks = [{"image": data_uri(images[i])} for i in idx]
    ids = ls_client.import_tasks(int(created["id"]), tasks)
    return int(created["id"]), ids, [int(target[i]) for i in idx]


@pytest.fixture
def served(make_app: Any, label_studio: Any) -> Iterator[tuple[Any, str]]:
    """The backend on a real loopback HTTP port, talking to the session's Label Studio."""
    app = make_app(
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        LABELWHEEL_PUBLISH="true",
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def test_scores_rank_the_whole_unlabelled_pool(
    served: tuple[Any, str], project: tuple[int, list[int], list[int]], ls_client: Any
) -> None:
    app, _ = served
    project_id, ids, _ = project
    client = app.test_client()
    tasks = [ls_client.get_task(t) for t in ids]
    # ask for three tasks only: their scores are ranks among all 24 unlabelled tasks
    body = {"tasks": tasks[:3], "project": f"{project_id}.1", "label_config": CONFIG_SINGLE}
    results = client.post("/predict", json=body).get_json()["results"]
    ranking = get_service(app).model.cached_ranking(project_id)
    assert ranking is not None and ranking.source == "pool" and ranking.pool_size == 24
    assert ranking.strategy == "maxherding"  # cold start
    for r, task in zip(results, tasks[:3], strict=True):
        assert r["score"] == ranking.scores[task["id"]]
        assert r["result"] == [] and r["model_version"] == "v0"
    assert sorted(ranking.scores.values()) == [k / 24 for k in range(24)]


def test_training_publishes_a_new_version_to_label_studio(
    served: tuple[Any, str], project: tuple[int, list[int], list[int]], ls_client: Any
) -> None:
    app, url = served
    service = get_service(app)
    project_id, ids, labels = project
    ml = ls_client.ensure_ml_backend(project_id, url, "labelwheel", None)
    # annotate 4 zeros and 4 ones through Label Studio: it sends ANNOTATION_CREATED webhooks
    chosen = [0, 1, 2, 3, 12, 13, 14, 15]
    for k in chosen:
        name = "zero" if labels[k] == 0 else "one"
        result = [
            {
                "from_name": "choice",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": [name]},
            }
        ]
        ls_client.create_annotation(ids[k], result)
    deadline = time.monotonic() + 30
    while len(service.store.training_set(project_id)) < 8 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(service.store.training_set(project_id)) == 8
    ls_client.train(int(ml["id"]))  # "Start training" -> START_TRAINING
    deadline = time.monotonic() + 120
    while service.published.get(project_id) != "v1" and time.monotonic() < deadline:
        assert project_id not in service.publish_errors, service.publish_errors
        time.sleep(0.2)
    assert service.published.get(project_id) == "v1", service.worker.last_error
    assert ls_client.get_project(project_id)["model_version"] == "v1"
    preds = [
        p for p in ls_client.list_project_predictions(project_id) if p["model_version"] == "v1"
    ]
    unlabelled = {ids[k] for k in range(24) if k not in chosen}
    assert {p["task"] for p in preds} >= unlabelled
    scores = sorted(p["score"] for p in preds if p["task"] in unlabelled)
    assert scores == [k / 16 for k in range(16)]
