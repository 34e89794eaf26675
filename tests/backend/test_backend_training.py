"""Training from annotations: versions with metrics, approvals/corrections, deletion, failures."""

from __future__ import annotations

from typing import Any

import numpy as np
from backend_helpers import CONFIG_MULTI, CONFIG_SINGLE, annotation_event, data_uri

from labelwheel.ml_backend import get_service

NAMES = {0: "zero", 1: "one"}


def binary_digits(digits: Any, per_class: int, offset: int = 0) -> list[tuple[str, str]]:
    """(data URI, label) pairs of real 0s and 1s, ``per_class`` of each, from ``offset``."""
    images, target = digits
    out = []
    for cls in (0, 1):
        idx = np.flatnonzero(target == cls)[offset : offset + per_class]
        out.extend((data_uri(images[i]), NAMES[cls]) for i in idx)
    return out


def send_annotations(
    client: Any, pairs: list[tuple[str, str]], first_id: int = 1, **kw: Any
) -> None:
    for k, (uri, label) in enumerate(pairs):
        event = annotation_event(first_id + k, 1000 + first_id + k, uri, [label], **kw)
        resp = client.post("/webhook", json=event)
        assert resp.status_code == 200, resp.get_json()


def start_training(client: Any, project: int = 1, config: str = CONFIG_SINGLE) -> None:
    resp = client.post(
        "/webhook",
        json={"action": "START_TRAINING", "project": {"id": project, "label_config": config}},
    )
    assert resp.status_code == 200


def versions(client: Any) -> dict[str, Any]:
    resp = client.get("/versions")
    assert resp.status_code == 200
    return resp.get_json()


def test_train_v1_v2_with_metrics_and_prelabels(make_app: Any, digits: Any) -> None:
    app = make_app()
    service = get_service(app)
    client = app.test_client()
    send_annotations(client, binary_digits(digits, 8))
    start_training(client)
    assert service.worker.wait_idle(120)
    v = versions(client)
    assert v["versions"] == ["v1"]
    d1 = v["details"][0]
    assert d1["n_labels"] == 16 and d1["serving"]
    assert d1["metrics"]["per_class"] == {"zero": 8, "one": 8}
    assert d1["cv_accuracy"] is not None and d1["cv_accuracy"] >= 0.8

    # pre-labels on held-out real digits: valid, probabilities, mostly right
    held = binary_digits(digits, 10, offset=40)
    body = {
        "tasks": [{"id": 5000 + i, "data": {"image": u}} for i, (u, _) in enumerate(held)],
        "project": "1.1",
        "label_config": CONFIG_SINGLE,
    }
    results = client.post("/predict", json=body).get_json()["results"]
    assert len(results) == len(held)
    correct = 0
    for r, (_, label) in zip(results, held, strict=True):
        assert r["model_version"] == "v1"
        (item,) = r["result"]
        assert item["from_name"] == "choice" and item["to_name"] == "image"
        assert 0.5 <= item["score"] <= 1.0
        correct += item["value"]["choices"] == [label]
    assert correct >= 0.8 * len(held)

    send_annotations(client, binary_digits(digits, 4, offset=8), first_id=100)
    start_training(client)
    assert service.worker.wait_idle(120)
    v = versions(client)
    assert v["versions"] == ["v1", "v2"]
    assert v["details"][1]["n_labels"] == 24 and v["details"][1]["serving"]
    assert not v["details"][0]["serving"]
    # a restart resumes the latest version
    service.close()
    client2 = make_app().test_client()
    resp = client2.post("/setup", json={"project": "1.1", "schema": CONFIG_SINGLE})
    assert resp.get_json()["model_version"] == "v2"


def test_approvals_corrections_and_acceptance_rate(make_app: Any, digits: Any) -> None:
    app = make_app()
    client = app.test_client()
    pairs = binary_digits(digits, 3)
    # pre-labelled by v1: two approved unchanged, one corrected, one without pre-label
    send_annotations(client, pairs[:2], first_id=1, predicted=["zero"], version="v1")
    send_annotations(client, pairs[3:4], first_id=3, predicted=["zero"], version="v1")
    send_annotations(client, pairs[4:5], first_id=4)
    store = get_service(app).store
    assert store.get_annotation(1).feedback == "approval"
    assert store.get_annotation(3).feedback == "correction"
    assert store.get_annotation(4).feedback is None
    assert store.feedback_counts(1) == {(1, "v1"): {"approval": 2, "correction": 1}}
    # an update that changes the label turns an approval into a correction
    event = annotation_event(
        2, 1002, pairs[1][0], ["one"], predicted=["zero"], version="v1", action="ANNOTATION_UPDATED"
    )
    assert client.post("/webhook", json=event).status_code == 200
    assert store.feedback_counts(1) == {(1, "v1"): {"approval": 1, "correction": 2}}
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        'labelwheel_prelabel_acceptance_rate{project="1",version="v1"} 0.3333333333333333' in text
    )
    assert (
        'labelwheel_prelabel_feedback_total{project="1",version="v1",kind="correction"} 2' in text
    )
    # the version falls back to the project's model_version when the prediction has none
    event = annotation_event(9, 1009, pairs[5][0], ["one"], predicted=["one"], version=None)
    event["project"]["model_version"] = "v7"
    client.post("/webhook", json=event)
    assert store.get_annotation(9).prediction_version == "v7"


def test_deleted_annotations_leave_the_training_set(make_app: Any, digits: Any) -> None:
    app = make_app()
    service = get_service(app)
    client = app.test_client()
    send_annotations(client, binary_digits(digits, 6))
    resp = client.post(
        "/webhook",
        json={
            "action": "ANNOTATIONS_DELETED",
            "annotations": [{"id": 1}, {"id": 2}],
            "project": {"id": 1},
        },
    )
    assert resp.get_json()["deleted"] == 2
    assert {a.id for a in service.store.training_set(1)} == set(range(3, 13))
    start_training(client)
    assert service.worker.wait_idle(120)
    detail = versions(client)["details"][0]
    assert detail["n_labels"] == 10
    assert detail["metrics"]["per_class"] == {"zero": 4, "one": 6}


def test_failed_training_keeps_the_last_good_version(make_app: Any, digits: Any) -> None:
    app = make_app()
    service = get_service(app)
    client = app.test_client()
    send_annotations(client, binary_digits(digits, 5))
    start_training(client)
    assert service.worker.wait_idle(120)
    assert versions(client)["versions"] == ["v1"]
    # every good annotation is deleted; the only ones left have images that cannot be decoded
    client.post(
        "/webhook",
        json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": i} for i in range(1, 11)]},
    )
    broken = [(data_uri(b"\x89PNG broken" * 3), "zero"), (data_uri(b"nope"), "one")]
    send_annotations(client, broken, first_id=50)
    start_training(client)
    assert service.worker.wait_idle(120)
    v = versions(client)
    assert v["versions"] == ["v1"]
    assert v["runs"][0]["status"] == "failed"
    assert "could be fetched or decoded" in v["runs"][0]["error"]
    assert service.model.version_name(1) == "v1"
    text = client.get("/metrics").get_data(as_text=True)
    assert 'labelwheel_training_runs_total{status="failed"} 1' in text
    assert 'labelwheel_training_runs_total{status="ok"} 1' in text
    assert 'labelwheel_model_version_info{project="1",version="v1"' in text


def test_one_class_is_a_cold_start_not_a_failure(make_app: Any, digits: Any) -> None:
    app = make_app()
    client = app.test_client()
    send_annotations(client, [p for p in binary_digits(digits, 3) if p[1] == "zero"])
    start_training(client)
    assert get_service(app).worker.wait_idle(120)
    v = versions(client)
    assert v["versions"] == [] and v["runs"][0]["status"] == "skipped"


def test_retrain_every_k_annotations(make_app: Any, digits: Any) -> None:
    app = make_app(LABELWHEEL_RETRAIN_EVERY="4")
    service = get_service(app)
    client = app.test_client()
    pairs = binary_digits(digits, 2)  # zero, zero, one, one
    send_annotations(client, pairs[:3])
    assert service.worker.wait_idle(60)
    assert versions(client)["versions"] == []
    send_annotations(client, pairs[3:], first_id=4)
    assert service.worker.wait_idle(120)
    assert versions(client)["versions"] == ["v1"]


def test_training_requests_coalesce(make_app: Any) -> None:
    app = make_app()
    worker = get_service(app).worker
    worker.stop()  # nothing consumes the queue: requests stay queued
    assert worker.request_training(3) == "queued"
    assert worker.request_training(3) == "coalesced"
    assert worker.request_training(4) == "queued"
    assert worker.status()["queued"] == [3, 4]


def test_train_endpoint_for_older_label_studio(make_app: Any, digits: Any) -> None:
    app = make_app()
    client = app.test_client()
    anns = []
    for k, (uri, label) in enumerate(binary_digits(digits, 4)):
        result = [
            {
                "from_name": "choice",
                "to_name": "image",
                "type": "choices",
                "value": {"choices": [label]},
            }
        ]
        anns.append(
            {"id": 700 + k, "result": result, "task": {"id": 70 + k, "data": {"image": uri}}}
        )
    resp = client.post(
        "/train", json={"annotations": anns, "project": 2, "label_config": CONFIG_SINGLE}
    )
    assert resp.status_code == 200, resp.get_json()
    assert get_service(app).worker.wait_idle(120)
    detail = versions(client)["details"][0]
    assert detail["project"] == 2 and detail["n_labels"] == 8
    assert client.post("/train", json={"annotations": "x"}).status_code == 400
    assert client.post("/train", json={"annotations": [5]}).status_code == 400


def test_multi_label_training_and_prelabels(make_app: Any, photos: dict[str, bytes]) -> None:
    app = make_app()
    service = get_service(app)
    client = app.test_client()
    tags = {
        "coins": ["round", "dark"],
        "chelsea": ["round"],
        "camera": ["straight", "dark"],
        "rocket": ["straight"],
        "coffee": ["round"],
        "horse": ["straight", "dark"],
    }
    for k, (name, chosen) in enumerate(tags.items()):
        event = annotation_event(
            k + 1, k + 1, data_uri(photos[name]), chosen, config=CONFIG_MULTI, from_name="tags"
        )
        assert client.post("/webhook", json=event).status_code == 200
    start_training(client, config=CONFIG_MULTI)
    assert service.worker.wait_idle(120)
    v = versions(client)
    assert v["versions"] == ["v1"], v["runs"]
    body = {
        "tasks": [{"id": 90, "data": {"image": data_uri(photos["astronaut"])}}],
        "project": "1.1",
        "label_config": CONFIG_MULTI,
    }
    (result,) = client.post("/predict", json=body).get_json()["results"]
    assert result["model_version"] == "v1"
    for item in result["result"]:
        assert item["from_name"] == "tags" and item["type"] == "choices"
        assert set(item["value"]["choices"]) <= {"round", "straight", "dark"}
