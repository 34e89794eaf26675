"""Bad input is a 4xx with a JSON message, never a 500 (issue 10): deep JSON, ids out of range,
unicode digits, oversized /predict batches; /metrics labels stay bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from backend_helpers import CONFIG_SINGLE, annotation_event, data_uri, png_bytes
from backend_procs import Backend, serve_env

from labelwheel.ml_backend import get_service
from labelwheel.ml_backend.validate import MAX_ID, MAX_JSON_DEPTH

DEEP = 100_000
POST_ENDPOINTS = ("/setup", "/predict", "/webhook", "/train")
BAD_PROJECTS: list[Any] = [
    "²",  # a digit to str.isdigit(), not to int()
    "٣.1700000000",  # Arabic-Indic three: int() would take it
    "1" * 20,
    "9" * 20 + ".1700000000",
    str(2**63),
    -1,
    "-1",
    2**63,
    2**64,
    "",
    " . ",
    1.5,
    [1],
]


def deep_json(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + close * depth).encode()


def deep_object(depth: int) -> bytes:
    return ('{"a":' * depth + "1" + "}" * depth).encode()


def assert_4xx(resp: Any, status: int = 400, error: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    body = resp.get_json()
    assert set(body) == {"error", "message"} and body["message"], body
    assert "Traceback" not in body["message"]
    if error is not None:
        assert body["error"] == error, body
    return dict(body)


# --------------------------------------------------------------------------- deep JSON


@pytest.mark.parametrize("path", POST_ENDPOINTS)
def test_json_nested_100000_deep_is_a_400(make_app: Any, path: str) -> None:
    client = make_app().test_client()
    for raw in (deep_json(DEEP), deep_json(DEEP, '{"a":', "}"), deep_object(DEEP)):
        resp = client.post(path, data=raw, content_type="application/json")
        body = assert_4xx(resp)
        assert body["error"] in ("json_too_deep", "malformed_json")
    # nested within the parser's reach but deeper than the limit: refused before any handler
    wrapped = b'{"tasks": ' + deep_json(MAX_JSON_DEPTH + 5) + b"}"
    body = assert_4xx(client.post(path, data=wrapped, content_type="application/json"))
    assert body["error"] == "json_too_deep" and str(MAX_JSON_DEPTH) in body["message"]
    assert client.get("/health").status_code == 200


def test_label_studio_payloads_are_far_from_the_depth_limit(make_app: Any) -> None:
    client = make_app().test_client()
    event = annotation_event(1, 10, data_uri(png_bytes([[0, 255]])), ["one"])
    event["annotation"]["meta"] = {"a": {"b": {"c": {"d": [[[[{"e": 1}]]]]}}}}
    resp = client.post("/webhook", json=event)
    assert resp.status_code == 200, resp.get_json()


def test_a_real_process_answers_deep_json_with_400_and_stays_healthy(tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    backend = Backend(serve_env(tmp_path / "state"), log_path)
    url = backend.url
    try:
        headers = {"Content-Type": "application/json"}
        for path in POST_ENDPOINTS:
            for raw in (deep_json(DEEP), deep_object(DEEP)):
                resp = requests.post(url + path, data=raw, headers=headers, timeout=30)
                assert resp.status_code == 400, (path, resp.text[:300])
                assert resp.json()["error"] in ("json_too_deep", "malformed_json")
        health = requests.get(url + "/health", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "UP"
        setup = requests.post(
            url + "/setup", json={"project": "3.1", "schema": CONFIG_SINGLE}, timeout=30
        )
        assert setup.status_code == 200, setup.text
        assert backend.proc.poll() is None
    finally:
        backend.stop()
    text = log_path.read_text()
    assert "Traceback" not in text and "RecursionError" not in text


# --------------------------------------------------------------------------- ids


@pytest.mark.parametrize("project", BAD_PROJECTS, ids=repr)
def test_bad_project_ids_are_400_everywhere(make_app: Any, project: Any) -> None:
    client = make_app().test_client()
    image = data_uri(png_bytes([[0, 255]]))
    bodies = {
        "/setup": {"project": project, "schema": CONFIG_SINGLE},
        "/predict": {
            "project": project,
            "label_config": CONFIG_SINGLE,
            "tasks": [{"id": 1, "data": {"image": image}}],
        },
        "/train": {"project": project, "annotations": []},
    }
    for path, body in bodies.items():
        assert_4xx(client.post(path, json=body), error="bad_request")
    for action in ("START_TRAINING", "TASKS_CREATED", "PROJECT_UPDATED", "ANNOTATIONS_DELETED"):
        body = {"action": action, "project": project, "tasks": [], "annotations": []}
        assert_4xx(client.post("/webhook", json=body), error="bad_request")
        body["project"] = {"id": project, "label_config": CONFIG_SINGLE}
        assert_4xx(client.post("/webhook", json=body), error="bad_request")
    event = annotation_event(1, 1, image, ["one"])
    event["project"] = {"id": project, "label_config": CONFIG_SINGLE}
    event["annotation"]["project"] = project
    assert_4xx(client.post("/webhook", json=event), error="bad_request")
    if isinstance(project, (str, int)) and not isinstance(project, bool):
        resp = client.get("/versions", query_string={"project": str(project)})
        assert_4xx(resp, error="bad_request")
    assert client.get("/health").status_code == 200


def test_unicode_digit_message_names_the_field(make_app: Any) -> None:
    client = make_app().test_client()
    body = assert_4xx(client.post("/setup", json={"project": "²", "schema": CONFIG_SINGLE}))
    assert "project" in body["message"] and "0-9" in body["message"]
    body = assert_4xx(client.post("/setup", json={"project": "1" * 20, "schema": CONFIG_SINGLE}))
    assert "out of range" in body["message"] and str(MAX_ID) in body["message"]


def test_largest_sqlite_id_is_accepted(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    resp = client.post("/setup", json={"project": f"{MAX_ID}.1", "schema": CONFIG_SINGLE})
    assert resp.status_code == 200, resp.get_json()
    event = annotation_event(MAX_ID, MAX_ID, data_uri(png_bytes([[0, 255]])), ["one"])
    resp = client.post("/webhook", json=event)
    assert resp.status_code == 200, resp.get_json()
    assert get_service(app).store.get_project(1) is not None


@pytest.mark.parametrize("bad", [2**64, 2**63, -5, "7", True, None, 1.0], ids=repr)
def test_bad_annotation_and_task_ids_are_400(make_app: Any, bad: Any) -> None:
    client = make_app().test_client()
    image = data_uri(png_bytes([[0, 255]]))
    for where in ("annotation.id", "annotation.task", "task.id"):
        event = annotation_event(5, 6, image, ["one"])
        if where == "annotation.id":
            event["annotation"]["id"] = bad
        elif where == "annotation.task":
            event["annotation"]["task"] = bad
            event["task"] = {"id": bad, "data": {"image": image}}
        else:
            event["task"]["id"] = bad
            event["annotation"]["task"] = {"id": bad}
        body = assert_4xx(client.post("/webhook", json=event), error="bad_request")
        assert "id" in body["message"] or "task" in body["message"]
    deleted = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": bad}], "project": 1}
    assert_4xx(client.post("/webhook", json=deleted), error="bad_request")
    train = {"annotations": [{"id": bad, "task": 1, "project": 1, "result": []}], "project": 1}
    assert_4xx(client.post("/train", json=train), error="bad_request")
    if bad is not None:  # a task without id is allowed in /predict (nothing to cross-check)
        predict = {
            "project": 1,
            "label_config": CONFIG_SINGLE,
            "tasks": [{"id": bad, "data": {"image": image}}],
        }
        assert_4xx(client.post("/predict", json=predict), error="bad_request")
    assert client.get("/health").status_code == 200


# --------------------------------------------------------------------------- batch cap


def test_predict_over_the_task_cap_is_413_naming_the_setting(make_app: Any) -> None:
    client = make_app(LABELWHEEL_MAX_PREDICT_TASKS="3").test_client()
    image = data_uri(png_bytes([[0, 255]]))
    body = {
        "project": 1,
        "label_config": CONFIG_SINGLE,
        "tasks": [{"id": i, "data": {"image": image}} for i in range(4)],
    }
    resp = client.post("/predict", json=body)
    msg = assert_4xx(resp, status=413, error="too_many_tasks")["message"]
    assert "LABELWHEEL_MAX_PREDICT_TASKS" in msg and "3" in msg
    body["tasks"] = body["tasks"][:3]
    resp = client.post("/predict", json=body)
    assert resp.status_code == 200 and len(resp.get_json()["results"]) == 3


def test_task_cap_default_is_high() -> None:
    from labelwheel.ml_backend.config import ConfigError, Settings

    assert Settings.from_env({}).max_predict_tasks == 10_000
    with pytest.raises(ConfigError, match="LABELWHEEL_MAX_PREDICT_TASKS"):
        Settings.from_env({"LABELWHEEL_MAX_PREDICT_TASKS": "0"})


# --------------------------------------------------------------------------- /metrics labels


def _metric_lines(client: Any, name: str) -> list[str]:
    text = client.get("/metrics").get_data(as_text=True)
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_unknown_webhook_actions_share_one_metrics_label(make_app: Any) -> None:
    client = make_app().test_client()
    for i in range(50):
        resp = client.post("/webhook", json={"action": f"ATTACKER_{i}_" + "x" * 100})
        assert resp.status_code == 200 and resp.get_json()["status"] == "ignored"
    for action in ("TASKS_DELETED", "PROJECT_CREATED", "LABEL_LINK_CREATED"):
        assert client.post("/webhook", json={"action": action}).status_code == 200
    lines = _metric_lines(client, "labelwheel_webhook_events_total")
    assert 'labelwheel_webhook_events_total{action="other"} 50' in lines
    for action in ("TASKS_DELETED", "PROJECT_CREATED", "LABEL_LINK_CREATED"):
        assert f'labelwheel_webhook_events_total{{action="{action}"}} 1' in lines
    assert len(lines) == 4
    assert not any("ATTACKER" in line for line in lines)


def test_unknown_http_methods_share_one_metrics_label(make_app: Any) -> None:
    client = make_app().test_client()
    for i in range(20):
        client.open("/nowhere", method=f"BREW{i}")
    lines = _metric_lines(client, "labelwheel_requests_total")
    assert not any("BREW" in line for line in lines)
    assert any('method="other"' in line for line in lines)


def test_label_series_are_bounded_by_the_config(make_app: Any) -> None:
    client = make_app().test_client()
    image = data_uri(png_bytes([[0, 255]]))
    assert client.post("/webhook", json=annotation_event(1, 1, image, ["one"])).status_code == 200
    event = annotation_event(2, 2, image, ["one"])
    event["annotation"]["result"][0]["value"]["choices"] = ["one", "made-up"]
    assert client.post("/webhook", json=event).status_code == 200
    lines = _metric_lines(client, "labelwheel_labels")
    assert not any("made-up" in line for line in lines)
    assert 'labelwheel_labels{project="1",label="one"} 2' in lines
