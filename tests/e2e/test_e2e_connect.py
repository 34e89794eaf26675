"""End-to-end: Label Studio connects the backend, and the backend pre-labels imported tasks.

Real Label Studio, real ``labelwheel serve`` process, real HTTP; checked through Label Studio's
own API (SDK and REST) and the backend's /metrics.
"""

from __future__ import annotations

import pytest
from e2e_helpers import (
    add_ml_backend,
    annotate,
    chosen_label,
    connect,
    create_project,
    predictions_by_task,
    train_and_wait,
)

from labelwheel.connect import ConnectError
from labelwheel.demo_data import image_data_uris
from labelwheel.label_config import parse_classification_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECTANGLES_ONLY = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image">
    <Label value="digit"/>
  </RectangleLabels>
</View>"""


def _requests(backend, endpoint: str, status: str = "200") -> float:
    return backend.metric("labelwheel_requests_total", endpoint=endpoint, status=status)


def test_e2e_connect_calls_health_and_setup(client, ls_sdk, backend, demo_images) -> None:
    pid = create_project(client, demo_images.labels)
    client.import_files(pid, demo_images.paths[:4])
    health0, setup0 = _requests(backend, "/health"), _requests(backend, "/setup")

    ml = add_ml_backend(ls_sdk, pid, backend)

    assert ml.id
    assert [m["id"] for m in client.list_ml_backends(pid)] == [ml.id]
    # Label Studio called /health and /setup, and /setup passed basic auth (status 200).
    assert _requests(backend, "/health") > health0
    assert _requests(backend, "/setup") > setup0
    assert _requests(backend, "/setup", "401") == 0
    # The backend knows the project's labels from the config /setup sent.
    resp = backend.post("/setup", json={"project": f"{pid}.0", "schema": _config(client, pid)})
    assert resp.status_code == 200, resp.text
    assert resp.json()["model_version"]


def test_e2e_connect_unservable_config_shows_clear_error(client, ls_sdk, backend) -> None:
    from label_studio_sdk.core.api_error import ApiError

    project = client.create_project("e2e rectangles only", RECTANGLES_ONLY)
    setup_400 = _requests(backend, "/setup", "400")

    with pytest.raises(ApiError) as info:
        add_ml_backend(ls_sdk, project["id"], backend)

    assert info.value.status_code == 400
    text = str(info.value.body)
    # Label Studio 1.23 shows the user that /setup refused the labeling configuration ...
    assert "/setup" in text and "incompatible with the current labeling configuration" in text
    assert _requests(backend, "/setup", "400") > setup_400
    assert client.list_ml_backends(project["id"]) == []
    # ... the backend's 400 says why ...
    resp = backend.post("/setup", json={"project": f"{project['id']}.0", "schema": RECTANGLES_ONLY})
    assert resp.status_code == 400
    assert "Choices" in resp.json()["message"], resp.text
    # ... and `labelwheel connect` reports that reason.
    with pytest.raises(ConnectError) as connect_info:
        connect(client, project["id"], backend)
    assert "Choices" in str(connect_info.value), str(connect_info.value)


def _config(client, pid: int) -> str:
    return str(client.get_project(pid)["label_config"])


def test_e2e_prelabel_uploaded_and_data_uri_tasks(client, ls_sdk, backend, demo_images) -> None:
    pid = create_project(client, demo_images.labels)
    uploaded = client.import_files(pid, demo_images.paths[:20])
    inline = client.import_tasks(
        pid, [{"image": uri} for uri in image_data_uris(demo_images.paths[20:28])]
    )
    tasks = {t["id"]: t for t in client.iter_tasks(pid)}
    assert len(tasks) == 28
    assert all(tasks[t]["data"]["image"].startswith("/data/upload/") for t in uploaded)
    assert all(tasks[t]["data"]["image"].startswith("data:image/png;base64,") for t in inline)
    config = parse_classification_config(_config(client, pid))

    ml = add_ml_backend(ls_sdk, pid, backend)
    predict0 = _requests(backend, "/predict")
    ls_sdk.actions.create(
        id="retrieve_tasks_predictions",
        project=pid,
        selected_items={"all": True, "excluded": []},
    )
    assert _requests(backend, "/predict") > predict0

    # Cold start: every task has a valid prediction of the version /setup reports, with an
    # informativeness score in [0, 1) and no invented label.
    version = backend.post("/setup", json={"project": f"{pid}.0", "schema": config.xml}).json()[
        "model_version"
    ]
    preds = predictions_by_task(client, pid, version)
    assert sorted(preds) == sorted(tasks)
    for p in preds.values():
        assert config.validate_prediction({"result": p["result"]}) == []
        assert 0.0 <= p["score"] < 1.0
    assert len({p["score"] for p in preds.values()}) == len(preds), "scores rank the pool"

    # Train on 12 answers; then every other task, uploaded or data: URI, gets a real pre-label
    # of the new version.
    result = connect(client, pid, backend, retrieve=False)
    assert result.ml_backend_id == ml.id
    labelled = uploaded[:12]
    for tid in labelled:
        annotate(client, tid, demo_images.label_of(tasks[tid]["data"]["image"]))
    new_version = train_and_wait(client, backend, pid, ml.id)
    assert new_version != version

    preds = predictions_by_task(client, pid, new_version)
    unlabelled = set(tasks) - set(labelled)
    assert unlabelled <= set(preds), "predictions re-requested for every unlabelled task"
    for tid in unlabelled:
        p = preds[tid]
        assert config.validate_prediction({"result": p["result"]}) == []
        assert chosen_label(p["result"]) in demo_images.labels, (tid, p)
        assert 0.0 < p["result"][0]["score"] <= 1.0
        assert 0.0 <= p["score"] < 1.0
    assert {tid for tid in inline} <= set(preds)
