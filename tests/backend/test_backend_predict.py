"""/predict: one result per task, batched embedding, cache, cold start, bad images."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from backend_helpers import CONFIG_BOXES, CONFIG_SINGLE, data_uri

from labelwheel.ml_backend import get_service


class CountingBackbone:
    """The real backbone, counting its forward calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0
        self.images = 0
        self.name, self.image_size, self.dim = inner.name, inner.image_size, inner.dim

    def prepare(self, image: Any) -> Any:
        return self.inner.prepare(image)

    def forward(self, inputs: Any) -> Any:
        self.calls += 1
        self.images += len(inputs)
        return self.inner.forward(inputs)


def predict_body(refs: list[str | None], project: str = "1.1700000000", start: int = 1) -> dict:
    tasks = []
    for i, ref in enumerate(refs):
        data = {"image": ref} if ref is not None else {"text": "no image here"}
        tasks.append({"id": start + i, "data": data, "annotations": [], "predictions": []})
    return {"tasks": tasks, "project": project, "label_config": CONFIG_SINGLE, "params": {}}


def test_cold_start_gives_no_prelabel_but_ranks(make_app: Any, photos: dict[str, bytes]) -> None:
    client = make_app().test_client()
    refs = [data_uri(photos[name]) for name in ("astronaut", "chelsea", "coffee", "horse")]
    resp = client.post("/predict", json=predict_body(refs))
    assert resp.status_code == 200, resp.get_json()
    results = resp.get_json()["results"]
    assert len(results) == 4
    for r in results:
        assert r["result"] == []
        assert r["model_version"] == "v0"
        assert 0.0 <= r["score"] < 1.0
    # ranked within the batch (no Label Studio configured): ranks 0..3 over 4 tasks
    assert sorted(r["score"] for r in results) == [0.0, 0.25, 0.5, 0.75]


def test_one_forward_pass_per_batch_and_cache(
    make_app: Any, backbone: Any, photos: dict[str, bytes], tmp_path: Path
) -> None:
    counting = CountingBackbone(backbone)
    app = make_app(BACKBONE_LOADER=lambda: counting)
    client = app.test_client()
    names = ["astronaut", "camera", "chelsea", "coffee", "coins", "horse"]
    refs = [data_uri(photos[n]) for n in names]
    assert client.post("/predict", json=predict_body(refs)).status_code == 200
    assert counting.calls == 1 and counting.images == 6
    # the same images again (other task ids, one duplicate in the batch): nothing is embedded
    assert client.post("/predict", json=predict_body(refs + refs[:1], start=50)).status_code == 200
    assert counting.calls == 1
    # a new process on the same MODEL_DIR finds the embeddings on disk
    get_service(app).close()
    counting2 = CountingBackbone(backbone)
    client2 = make_app(BACKBONE_LOADER=lambda: counting2).test_client()
    assert client2.post("/predict", json=predict_body(refs)).status_code == 200
    assert counting2.calls == 0
    cached = list((tmp_path / "model_dir" / "embeddings").rglob("*.npy"))
    assert len(cached) == 6


def test_bad_images_get_empty_predictions_and_the_rest_succeed(
    make_app: Any, photos: dict[str, bytes], tmp_path: Path, caplog: Any
) -> None:
    root = tmp_path / "files"
    (root / "set").mkdir(parents=True)
    (root / "set" / "coins.png").write_bytes(photos["coins"])
    (tmp_path / "secret.png").write_bytes(photos["camera"])
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    app = make_app(
        LABELWHEEL_LOCAL_FILES_ROOT=str(root),
        LABELWHEEL_ALLOWED_HOSTS="127.0.0.1",
        LABELWHEEL_FETCH_TIMEOUT="2",
    )
    client = app.test_client()
    refs: list[str | None] = [
        data_uri(photos["chelsea"]),  # good
        data_uri(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20),  # corrupt image
        "/data/local-files/?d=set/coins.png",  # good local file under the root
        "/data/local-files/?d=../secret.png",  # traversal
        "https://images.example.com/cat.png",  # foreign host (not allowlisted)
        f"http://127.0.0.1:{closed_port}/img.png",  # unreachable
        None,  # no image under the config's data key
        data_uri(b"not an image at all"),  # not an image
    ]
    caplog.set_level(logging.WARNING, logger="labelwheel.ml_backend")
    resp = client.post("/predict", json=predict_body(refs))
    assert resp.status_code == 200, resp.get_json()
    results = resp.get_json()["results"]
    assert len(results) == len(refs)
    for r in results:
        assert r["result"] == [] and r["model_version"] == "v0"
        assert 0.0 <= r["score"] <= 1.0
    # the two good images were embedded and rank ahead of the failures
    good = [results[0]["score"], results[2]["score"]]
    bad = [r["score"] for i, r in enumerate(results) if i not in (0, 2)]
    assert max(good) < min(bad)
    model = get_service(app).model
    assert model.images_embedded == 2
    logged = " ".join(rec.getMessage() for rec in caplog.records)
    for task_id in (2, 4, 5, 6, 7, 8):
        assert f"task {task_id}: no prediction" in logged
    assert "secret" not in " ".join(str(p) for p in Path(tmp_path / "model_dir").rglob("*"))
    # six images failed; the two good ones are empty only because no model exists yet
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "labelwheel_prediction_image_failures_total 6\n" in metrics
    assert "labelwheel_predictions_total 8\n" in metrics


def test_predict_bad_requests(make_app: Any) -> None:
    client = make_app().test_client()
    body = predict_body(["data:image/png;base64,AAAA"])
    cases: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in body.items() if k != "tasks"}, "tasks"),
        ({**body, "tasks": {"id": 1}}, "tasks"),
        ({**body, "tasks": [1, 2]}, "tasks[0]"),
        ({k: v for k, v in body.items() if k != "project"}, "project"),
        ({**body, "project": "x.y"}, "project"),
        ({**body, "label_config": 5}, "label_config"),
        ({**body, "label_config": None, "project": "99.1"}, "label config"),
    ]
    for payload, word in cases:
        resp = client.post("/predict", json=payload)
        assert resp.status_code == 400, payload
        assert word in resp.get_json()["message"]
    resp = client.post("/predict", json={**body, "label_config": CONFIG_BOXES})
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "unsupported_label_config"


def test_predict_uses_the_stored_config_and_empty_batch(make_app: Any) -> None:
    client = make_app().test_client()
    assert (
        client.post("/setup", json={"project": "4.1", "schema": CONFIG_SINGLE}).status_code == 200
    )
    resp = client.post("/predict", json={"tasks": [], "project": "4.1"})
    assert resp.status_code == 200
    assert resp.get_json()["results"] == []


@pytest.mark.parametrize("size", [0, 3])
def test_predict_result_count_matches_tasks(
    make_app: Any, photos: dict[str, bytes], size: int
) -> None:
    client = make_app().test_client()
    refs = [data_uri(photos["rocket"])] * size
    resp = client.post("/predict", json=predict_body(refs))
    assert len(resp.get_json()["results"]) == size


def test_tasks_created_embeds_new_images_in_the_background(
    make_app: Any, backbone: Any, photos: dict[str, bytes]
) -> None:
    counting = CountingBackbone(backbone)
    app = make_app(BACKBONE_LOADER=lambda: counting)
    client = app.test_client()
    assert (
        client.post("/setup", json={"project": "1.1", "schema": CONFIG_SINGLE}).status_code == 200
    )
    refs = [data_uri(photos[n]) for n in ("coins", "horse")]
    tasks = [{"id": 10 + i, "data": {"image": r}} for i, r in enumerate(refs)]
    resp = client.post(
        "/webhook", json={"action": "TASKS_CREATED", "tasks": tasks, "project": {"id": 1}}
    )
    assert resp.status_code == 200 and resp.get_json()["tasks"] == 2
    assert get_service(app).worker.wait_idle(60)
    assert counting.images == 2
    # /predict then finds them in the cache
    assert client.post("/predict", json=predict_body(refs, project="1.1")).status_code == 200
    assert counting.images == 2


def test_local_images_are_read_by_a_thread_per_core_and_one(
    make_app: Any, photos: dict[str, bytes], tmp_path: Path
) -> None:
    """Local files and data: URIs cost decoding, not waiting: a request reads them on
    local_read_threads(), a request with a network reference on the fetch threads (8)."""
    import threading

    from labelwheel.features import local_read_threads

    root = tmp_path / "files"
    root.mkdir()
    names = list(photos)[:6]
    for i in range(24):
        (root / f"{i}.png").write_bytes(photos[names[i % len(names)]] + bytes([i]))  # distinct
    app = make_app(LABELWHEEL_LOCAL_FILES_ROOT=str(root), LABELWHEEL_FETCH_TIMEOUT="2")
    model = get_service(app).model
    readers: set[int] = set()
    real_read = model._read

    def read(ref: str) -> bytes:
        readers.add(threading.get_ident())
        threading.Event().wait(0.02)  # every thread of the call gets an image
        return real_read(ref)

    model._read = read
    client = app.test_client()
    local = [f"/data/local-files/?d={i}.png" for i in range(12)]
    resp = client.post("/predict", json=predict_body(local))
    assert resp.status_code == 200 and all(r["score"] < 1.0 for r in resp.get_json()["results"])
    assert 1 < len(readers) <= local_read_threads() < 8
    readers.clear()
    mixed = [f"/data/local-files/?d={i}.png" for i in range(12, 24)] + ["s3://bucket/x.png"]
    resp = client.post("/predict", json=predict_body(mixed, start=100))
    assert resp.status_code == 200
    assert len(readers) > local_read_threads()  # a network reference: the fetch threads


class SlowBackbone(CountingBackbone):
    """The real backbone, taking at least ``seconds`` per forward pass (a busy CPU)."""

    def __init__(self, inner: Any, seconds: float) -> None:
        super().__init__(inner)
        self.seconds = seconds

    def forward(self, inputs: Any) -> Any:
        import time

        time.sleep(self.seconds)
        return super().forward(inputs)


def test_a_request_past_its_budget_answers_what_is_done(
    make_app: Any, backbone: Any, photos: dict[str, bytes]
) -> None:
    slow = SlowBackbone(backbone, 0.3)
    app = make_app(
        BACKBONE_LOADER=lambda: slow,
        LABELWHEEL_BATCH_SIZE="2",
        LABELWHEEL_PREDICT_BUDGET="0.1",
    )
    client = app.test_client()
    names = ["astronaut", "camera", "chelsea", "coffee", "coins", "horse", "rocket"]
    refs = [data_uri(photos[n]) for n in names]
    resp = client.post("/predict", json=predict_body(refs))
    assert resp.status_code == 200, resp.get_json()
    results = resp.get_json()["results"]
    assert len(results) == 7  # one answer per task, as Label Studio requires
    # the first chunk (2 images) is always done; the rest is left for the next request as an
    # empty list, which Label Studio skips without an error
    assert all(isinstance(r, dict) and r["model_version"] == "v0" for r in results[:2])
    assert results[2:] == [[]] * 5
    assert slow.images == 2
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "labelwheel_predictions_deferred_total 5" in metrics
    assert "labelwheel_predictions_total 2" in metrics
    # asked again (Label Studio sends the tasks still without a prediction), each request
    # makes progress, and the tasks end up answered
    for _ in range(4):
        pending = [i for i, r in enumerate(results) if r == []]
        if not pending:
            break
        again = client.post("/predict", json=predict_body([refs[i] for i in pending], start=1))
        for i, r in zip(pending, again.get_json()["results"], strict=True):
            results[i] = r
    assert all(isinstance(r, dict) for r in results)
    assert slow.images == 7  # every image embedded once


def test_no_budget_answers_every_task(
    make_app: Any, backbone: Any, photos: dict[str, bytes]
) -> None:
    slow = SlowBackbone(backbone, 0.05)
    app = make_app(
        BACKBONE_LOADER=lambda: slow, LABELWHEEL_BATCH_SIZE="2", LABELWHEEL_PREDICT_BUDGET="0"
    )
    refs = [data_uri(photos[n]) for n in ("astronaut", "camera", "chelsea", "coffee", "coins")]
    results = app.test_client().post("/predict", json=predict_body(refs)).get_json()["results"]
    assert all(isinstance(r, dict) for r in results) and len(results) == 5


def test_connect_asks_again_for_the_tasks_left_for_later(
    make_app: Any, backbone: Any, photos: dict[str, bytes]
) -> None:
    """``labelwheel connect``'s predictor (real HTTP to a served app) gets every task's
    prediction from a backend whose budget answers a few per request."""
    import threading

    from werkzeug.serving import make_server

    from labelwheel.connect import backend_predictor

    slow = SlowBackbone(backbone, 0.3)
    app = make_app(
        BACKBONE_LOADER=lambda: slow, LABELWHEEL_BATCH_SIZE="2", LABELWHEEL_PREDICT_BUDGET="0.1"
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        predict = backend_predictor(f"http://127.0.0.1:{server.port}", 1, CONFIG_SINGLE, None)
        names = ["astronaut", "camera", "chelsea", "coffee", "coins", "horse", "rocket"]
        tasks = [{"id": i + 1, "data": {"image": data_uri(photos[n])}} for i, n in enumerate(names)]
        predictions = predict(tasks)
    finally:
        server.shutdown()
        thread.join(10)
    assert len(predictions) == 7
    assert all(p["model_version"] == "v0" and "result" in p for p in predictions)
    assert slow.images == 7  # asked again for the deferred ones: 4 requests of 2, 2, 2, 1
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert "labelwheel_predictions_deferred_total 9" in metrics  # 5 + 3 + 1 left for later
