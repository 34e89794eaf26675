"""HTTP contract of the backend: health, setup, auth, errors, webhook events, versions, metrics."""

from __future__ import annotations

import base64
import time
from typing import Any

from backend_helpers import CONFIG_BOXES, CONFIG_SINGLE, annotation_event, data_uri

from labelwheel.ml_backend import get_service


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_health_is_up(make_app: Any) -> None:
    client = make_app().test_client()
    resp = client.get("/health")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "UP"
    assert body["model_class"]
    assert body["training"] == []


def test_setup_returns_cold_start_version_and_stores_config(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    resp = client.post(
        "/setup",
        json={
            "project": "7.1764547200",
            "schema": CONFIG_SINGLE,
            "hostname": "http://127.0.0.1:1",
            "access_token": "x" * 40,
            "extra_params": None,
        },
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"model_version": "v0"}
    service = get_service(app)
    assert service.config_for(7).labels == ("zero", "one")
    assert service.link.url == "http://127.0.0.1:1"  # /setup's host is used when env has none


def test_setup_refuses_a_config_it_cannot_serve(make_app: Any) -> None:
    client = make_app().test_client()
    resp = client.post("/setup", json={"project": "3.1", "schema": CONFIG_BOXES})
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["error"] == "unsupported_label_config"
    assert body["message"]


def test_setup_missing_or_wrong_fields(make_app: Any) -> None:
    client = make_app().test_client()
    for body in (
        {"project": "3.1"},
        {"schema": CONFIG_SINGLE},
        {"project": "abc", "schema": CONFIG_SINGLE},
        {"project": True, "schema": CONFIG_SINGLE},
        {"project": "3.1", "schema": 12},
    ):
        resp = client.post("/setup", json=body)
        assert resp.status_code == 400, body
        assert set(resp.get_json()) == {"error", "message"}


def test_malformed_and_non_object_bodies(make_app: Any) -> None:
    client = make_app().test_client()
    for path in ("/setup", "/predict", "/webhook", "/train"):
        resp = client.post(path, data=b"{not json", content_type="application/json")
        assert resp.status_code == 400
        assert resp.get_json()["error"] == "malformed_json"
        resp = client.post(path, json=[1, 2])
        assert resp.status_code == 400
        assert "JSON object" in resp.get_json()["message"]
        resp = client.post(path, data=b"", content_type="application/json")
        assert resp.status_code == 400


def test_unknown_route_wrong_method_and_too_large(make_app: Any) -> None:
    client = make_app(LABELWHEEL_MAX_REQUEST_BYTES="2048").test_client()
    resp = client.get("/nope")
    assert resp.status_code == 404 and resp.get_json()["error"] == "not_found"
    resp = client.get("/predict")
    assert resp.status_code == 405 and resp.get_json()["error"] == "method_not_allowed"
    resp = client.post("/webhook", data=b'{"a": "' + b"x" * 5000 + b'"}')
    assert resp.status_code == 413 and resp.get_json()["error"] == "payload_too_large"


def test_basic_auth_everywhere_but_health(make_app: Any, auth_pair: tuple[str, str]) -> None:
    user, password = auth_pair
    client = make_app(BASIC_AUTH_USER=user, BASIC_AUTH_PASS=password).test_client()
    assert client.get("/health").status_code == 200
    calls = [
        ("post", "/setup", {"project": "1.1", "schema": CONFIG_SINGLE}),
        ("post", "/predict", {"tasks": [], "project": "1.1", "label_config": CONFIG_SINGLE}),
        ("post", "/webhook", {"action": "PROJECT_CREATED", "project": {"id": 1}}),
        ("post", "/train", {"annotations": []}),
        ("get", "/versions", None),
        ("get", "/metrics", None),
    ]
    for method, path, body in calls:
        for headers in (
            {},
            basic(user, "wrong"),
            basic("other", password),
            {"Authorization": "Basic !!"},
        ):
            resp = getattr(client, method)(path, json=body, headers=headers)
            assert resp.status_code == 401, (path, headers)
            assert resp.get_json()["error"] == "unauthorized"
            assert resp.headers["WWW-Authenticate"].startswith("Basic")
        resp = getattr(client, method)(path, json=body, headers=basic(user, password))
        assert resp.status_code == 200, (path, resp.get_data(as_text=True))


def test_open_backend_warns_at_startup(make_app: Any, caplog: Any) -> None:
    caplog.set_level("WARNING", logger="labelwheel.ml_backend")
    make_app()
    assert any("OPEN" in rec.getMessage() for rec in caplog.records)


def test_webhook_requires_an_action_and_ignores_unknown_ones(make_app: Any) -> None:
    client = make_app().test_client()
    resp = client.post("/webhook", json={"project": {"id": 1}})
    assert resp.status_code == 400 and "action" in resp.get_json()["message"]
    resp = client.post("/webhook", json={"action": 5})
    assert resp.status_code == 400
    resp = client.post("/webhook", json={"action": "SOMETHING_NEW", "project": {"id": 1}})
    assert resp.status_code == 200
    assert resp.get_json()["status"] == "ignored"


def test_webhook_annotation_is_stored_before_ack(make_app: Any, digits: Any) -> None:
    app = make_app()
    client = app.test_client()
    images, _ = digits
    event = annotation_event(11, 101, data_uri(images[0]), ["zero"])
    started = time.perf_counter()
    resp = client.post("/webhook", json=event)
    elapsed = time.perf_counter() - started
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["status"] == "stored"
    assert elapsed < 0.5  # the hard requirement (50 ms) is measured by the benchmark
    ann = get_service(app).store.get_annotation(11)
    assert ann is not None
    assert ann.labels == ("zero",) and ann.task_id == 101 and ann.project_id == 1
    assert ann.image_ref == data_uri(images[0])
    assert get_service(app).store.event_count("ANNOTATION_CREATED") == 1


def test_webhook_annotation_bad_inputs(make_app: Any) -> None:
    client = make_app().test_client()
    good = annotation_event(1, 2, "data:image/png;base64,AAAA", ["zero"])
    cases = []
    missing = dict(good)
    del missing["annotation"]
    cases.append(missing)
    no_id = {**good, "annotation": {**good["annotation"], "id": "one"}}
    cases.append(no_id)
    bad_result = {**good, "annotation": {**good["annotation"], "result": "zero"}}
    cases.append(bad_result)
    not_obj = {**good, "annotation": [1]}
    cases.append(not_obj)
    no_task = {**good, "task": None, "annotation": {**good["annotation"], "task": None}}
    cases.append(no_task)
    for body in cases:
        resp = client.post("/webhook", json=body)
        assert resp.status_code == 400, body
        assert resp.get_json()["message"]


def test_webhook_deleted_start_training_tasks_created_project_updated(make_app: Any) -> None:
    app = make_app()
    service = get_service(app)
    client = app.test_client()
    client.post("/webhook", json=annotation_event(5, 50, "data:image/png;base64,AAAA", ["one"]))
    resp = client.post(
        "/webhook",
        json={
            "action": "ANNOTATIONS_DELETED",
            "annotations": [{"id": 5}, {"id": 99}],
            "project": {"id": 1},
        },
    )
    assert resp.status_code == 200
    assert resp.get_json()["deleted"] == 1
    assert service.store.get_annotation(5).deleted
    assert service.store.training_set(1) == []
    resp = client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "annotations": "5"})
    assert resp.status_code == 400

    resp = client.post(
        "/webhook",
        json={"action": "START_TRAINING", "project": {"id": 1, "label_config": CONFIG_SINGLE}},
    )
    assert resp.status_code == 200 and resp.get_json()["status"].startswith("training")
    assert client.post("/webhook", json={"action": "START_TRAINING"}).status_code == 400

    resp = client.post(
        "/webhook",
        json={
            "action": "TASKS_CREATED",
            "tasks": [{"id": 1, "data": {"image": "data:image/png;base64,AAAA"}}],
            "project": {"id": 1},
        },
    )
    assert resp.status_code == 200 and resp.get_json()["tasks"] == 1
    assert client.post("/webhook", json={"action": "TASKS_CREATED"}).status_code == 400

    new_config = CONFIG_SINGLE.replace(
        '<Choice value="one"/>', '<Choice value="one"/><Choice value="two"/>'
    )
    resp = client.post(
        "/webhook",
        json={"action": "PROJECT_UPDATED", "project": {"id": 1, "label_config": new_config}},
    )
    assert resp.status_code == 200 and resp.get_json()["status"] == "config updated"
    assert service.config_for(1).labels == ("zero", "one", "two")
    resp = client.post(
        "/webhook",
        json={"action": "PROJECT_UPDATED", "project": {"id": 1, "label_config": CONFIG_BOXES}},
    )
    assert resp.json["status"] == "config not supported"
    assert service.config_for(1).labels == ("zero", "one", "two")  # the usable one is kept
    assert (
        client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": 3}).status_code == 400
    )
    assert service.worker.wait_idle(60)


def test_versions_and_metrics_when_empty(make_app: Any) -> None:
    client = make_app().test_client()
    resp = client.get("/versions")
    assert resp.status_code == 200
    assert resp.get_json()["versions"] == []
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    text = resp.get_data(as_text=True)
    assert "labelwheel_requests_total" in text
    assert 'labelwheel_requests_total{endpoint="/versions",method="GET",status="200"} 1' in text
    assert "labelwheel_request_duration_seconds_bucket" in text
    assert client.get("/versions?project=abc").status_code == 400
