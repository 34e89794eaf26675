"""Webhooks applied in Label Studio's order: ``annotation.updated_at`` decides, not arrival.

Out-of-order and duplicate ANNOTATION_CREATED/UPDATED, deletions as tombstones, and the events
log: a summary per webhook (never a multi-MB ``data:`` image), under a retention rule. The last
test checks the payload fields against a real Label Studio 1.23.2.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from backend_helpers import CONFIG_SINGLE, annotation_event, data_uri
from werkzeug.serving import make_server

from labelwheel.ml_backend import get_service
from labelwheel.ml_backend.events import MAX_SUMMARY_BYTES, parse_ls_timestamp, summarize_event
from labelwheel.ml_backend.store import Store

IMAGE = "data:image/png;base64,AAAA"


def event(ann_id: int, labels: list[str], updated_at: str | None, **kw: Any) -> dict[str, Any]:
    body = annotation_event(ann_id, 100 + ann_id, IMAGE, labels, **kw)
    if updated_at is not None:
        body["annotation"]["updated_at"] = updated_at
        body["annotation"]["created_at"] = "2026-12-01T10:00:00.000001Z"
    return body


def post(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    resp = client.post("/webhook", json=body)
    assert resp.status_code == 200, resp.get_json()
    return dict(resp.get_json())


def pending(app: Any, project: int = 1) -> int:
    return int(get_service(app).store.get_project(project)["pending_changes"])


def test_parse_ls_timestamp() -> None:
    assert parse_ls_timestamp(None) is None
    us = parse_ls_timestamp("2026-12-01T10:00:00.000001Z")
    assert us == parse_ls_timestamp("2026-12-01T10:00:00.000001+00:00")
    assert us == parse_ls_timestamp("2026-12-01T11:00:00.000001+01:00")
    assert us == parse_ls_timestamp("2026-12-01T10:00:00.000001")  # no zone: UTC
    assert parse_ls_timestamp("2026-12-01T10:00:00.000002Z") == us + 1
    for bad in ("", "yesterday", 17, "2026-13-01T00:00:00Z", "9" * 100):
        with pytest.raises(ValueError, match="ISO 8601"):
            parse_ls_timestamp(bad)


def test_out_of_order_updates_apply_in_label_studio_order(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    store = get_service(app).store
    # the annotator picked "zero", then changed it to "one"; the update arrives first
    newer = event(1, ["one"], "2026-12-01T10:00:05.000000Z", action="ANNOTATION_UPDATED")
    assert post(client, newer)["status"] == "stored"
    late = event(1, ["zero"], "2026-12-01T10:00:00.000001Z", action="ANNOTATION_CREATED")
    assert post(client, late) == {"status": "ignored", "outcome": "stale", "project": 1}
    assert store.get_annotation(1).labels == ("one",)
    middle = event(1, ["zero"], "2026-12-01T10:00:03.000000Z", action="ANNOTATION_UPDATED")
    assert post(client, middle)["outcome"] == "stale"
    assert store.get_annotation(1).labels == ("one",)
    assert pending(app) == 1
    # a really newer state wins, by a microsecond
    newest = event(1, ["zero"], "2026-12-01T10:00:05.000001Z", action="ANNOTATION_UPDATED")
    assert post(client, newest)["status"] == "stored"
    assert store.get_annotation(1).labels == ("zero",)
    assert pending(app) == 2

    # two annotations of one task: the training set keeps Label Studio's newest, whatever
    # arrived last
    later = event(2, ["one"], "2026-12-01T10:00:09.000000Z")
    later["annotation"]["task"] = later["task"]["id"] = 101
    assert post(client, later)["status"] == "stored"
    assert post(client, event(3, ["zero"], "2026-12-01T10:00:01.000000Z"))["status"] == "stored"
    by_task = {a.task_id: a.id for a in store.training_set(1)}
    assert by_task[101] == 2


def test_duplicates_are_idempotent(make_app: Any) -> None:
    app = make_app(LABELWHEEL_RETRAIN_EVERY="2")
    client = app.test_client()
    service = get_service(app)
    service.worker.stop()  # keep the queue visible: nothing consumes it
    body = event(5, ["zero"], "2026-12-01T10:00:00.500000Z")
    assert post(client, body)["status"] == "stored"
    for _ in range(3):  # Label Studio retried (the 1 s webhook timeout) or sent it twice
        assert post(client, body) == {"status": "ignored", "outcome": "duplicate", "project": 1}
    assert pending(app) == 1  # a repeat is no change: it does not count toward retraining
    assert service.worker.status()["queued"] == []
    assert service.store.queued_trainings() == []
    # an older Label Studio sends no updated_at: an exact repeat is still recognised
    plain = event(6, ["one"], None)
    assert post(client, plain)["status"] == "stored"
    assert post(client, plain)["outcome"] == "duplicate"
    assert pending(app) == 2 and service.store.queued_trainings() == [(1, 0)]
    changed = event(6, ["zero"], None)
    assert post(client, changed)["status"] == "stored"
    # every webhook is in the log, with what happened to it
    outcomes = [e["payload"].get("outcome") for e in reversed(service.store.events())]
    dup = "duplicate"
    assert outcomes == ["stored", dup, dup, dup, "stored", dup, "stored"]


def test_deletions_are_tombstones(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    store = get_service(app).store
    assert post(client, event(7, ["one"], "2026-12-01T10:00:00.000000Z"))["status"] == "stored"
    deleted = post(
        client,
        {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 7}], "project": {"id": 1}},
    )
    assert deleted["deleted"] == 1
    # a late update of the deleted annotation does not bring it back
    late = event(7, ["zero"], "2026-12-01T10:00:09.000000Z", action="ANNOTATION_UPDATED")
    assert post(client, late) == {"status": "ignored", "outcome": "deleted", "project": 1}
    assert store.get_annotation(7).deleted and store.training_set(1) == []
    # the delete overtook the create: the create is ignored when it arrives
    early = post(
        client,
        {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 8}], "project": {"id": 1}},
    )
    assert early["deleted"] == 0
    assert post(client, event(8, ["one"], "2026-12-01T10:00:00Z"))["outcome"] == "deleted"
    assert store.get_annotation(8) is None and store.labelled_task_ids(1) == set()
    # deleting twice is harmless
    again = post(
        client,
        {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 7}], "project": {"id": 1}},
    )
    assert again["deleted"] == 0
    # and tombstones survive a restart
    get_service(app).close()
    client = make_app().test_client()
    assert post(client, event(7, ["one"], "2026-12-02T00:00:00Z"))["outcome"] == "deleted"


def test_bad_updated_at_is_a_400(make_app: Any) -> None:
    client = make_app().test_client()
    for bad in ("soon", 12, {"t": 1}, ""):
        body = event(9, ["one"], "2026-12-01T10:00:00Z")
        body["annotation"]["updated_at"] = bad
        resp = client.post("/webhook", json=body)
        assert resp.status_code == 400, bad
        assert "updated_at" in resp.get_json()["message"]


def test_a_5_mb_data_uri_does_not_make_a_5_mb_event_row(
    make_app: Any, tmp_path: Path, digits: Any
) -> None:
    app = make_app()
    client = app.test_client()
    images, _ = digits
    # a real PNG padded to 5 MB with a text chunk: a data: URI as Label Studio forwards it
    png = images[0]
    chunk = b"x" * (5 * 2**20)
    text = b"tEXt" + b"pad\x00" + chunk
    padded = png[:-12] + struct.pack(">I", len(text) - 4) + text
    padded += struct.pack(">I", zlib.crc32(text) & 0xFFFFFFFF) + png[-12:]
    uri = data_uri(padded)
    assert len(uri) > 5 * 2**20
    body = event(10, ["zero"], "2026-12-01T10:00:00Z")
    body["task"]["data"]["image"] = uri
    body["task"]["data"]["notes"] = "n" * 100_000
    assert post(client, body)["status"] == "stored"
    tasks = {
        "action": "TASKS_CREATED",
        "project": {"id": 1},
        "tasks": [{"id": 1, "data": {"text": uri}}],
    }
    assert post(client, tasks)["status"] == "embedding queued"
    updated = {"action": "PROJECT_UPDATED", "project": {"id": 1, "label_config": CONFIG_SINGLE}}
    updated["project"]["description"] = "d" * 1_000_000
    assert post(client, updated)["status"] == "config updated"
    db = sqlite3.connect(tmp_path / "model_dir" / "labelwheel.sqlite3")
    sizes = db.execute("SELECT action, length(CAST(payload AS BLOB)) FROM events").fetchall()
    assert [a for a, _ in sizes] == ["ANNOTATION_CREATED", "TASKS_CREATED", "PROJECT_UPDATED"]
    assert all(n <= MAX_SUMMARY_BYTES for _, n in sizes), sizes
    summary = json.loads(db.execute("SELECT payload FROM events LIMIT 1").fetchone()[0])
    assert summary["annotation"]["id"] == 10
    assert summary["annotation"]["updated_at"] == "2026-12-01T10:00:00Z"
    assert summary["task"]["id"] == 110 and summary["choices"] == ["zero"]
    # the annotation itself keeps its image reference: training needs it
    assert get_service(app).store.get_annotation(10).image_ref == uri


def test_summaries_of_odd_payloads_stay_small() -> None:
    many_keys = {f"k{i}" * 30: "v" * 200 for i in range(500)}
    for payload in (many_keys, {"annotation": many_keys}, [1, 2], None, {"annotations": "x"}):
        text = summarize_event("ANNOTATION_CREATED", payload, outcome="stored")
        assert len(text.encode()) <= MAX_SUMMARY_BYTES
        assert json.loads(text)["action"] == "ANNOTATION_CREATED"
    assert len(summarize_event("x" * 10_000, {}).encode()) <= MAX_SUMMARY_BYTES


def test_events_retention_rule(make_app: Any, tmp_path: Path) -> None:
    app = make_app(LABELWHEEL_EVENTS_MAX="20")
    client = app.test_client()
    service = get_service(app)
    for k in range(45):
        body = {"action": "PROJECT_UPDATED", "project": {"id": 1, "title": f"t{k}"}}
        assert client.post("/webhook", json=body).status_code == 200
    kept = service.store.events(100)
    assert len(kept) == 20 and service.store.event_count() == 20
    assert kept[0]["payload"]["project"]["title"] == "t44"  # the newest are kept
    assert kept[-1]["payload"]["project"]["title"] == "t25"
    service.close()
    # events older than LABELWHEEL_EVENTS_DAYS are deleted when the backend starts
    db = sqlite3.connect(tmp_path / "model_dir" / "labelwheel.sqlite3")
    old = time.time() - 40 * 86_400
    with db:
        db.execute("UPDATE events SET received = ? WHERE id <= 30", (old,))
    app = make_app(LABELWHEEL_EVENTS_MAX="20", LABELWHEEL_EVENTS_DAYS="30")
    assert get_service(app).store.event_count() == 15
    get_service(app).close()
    app = make_app(LABELWHEEL_EVENTS_MAX="0")  # no events log at all
    assert get_service(app).store.event_count() == 0
    client = app.test_client()
    assert post(client, event(1, ["one"], "2026-12-01T10:00:00Z"))["status"] == "stored"
    assert get_service(app).store.event_count() == 0


def test_raw_payloads_of_earlier_releases_are_compacted(make_app: Any, tmp_path: Path) -> None:
    Store(tmp_path / "model_dir").close()
    db = sqlite3.connect(tmp_path / "model_dir" / "labelwheel.sqlite3")
    raw = event(3, ["one"], "2026-12-01T10:00:00Z")
    raw["task"]["data"]["image"] = (
        "data:image/png;base64," + base64.b64encode(b"\0" * 300_000).decode()
    )
    with db:
        db.execute(
            "INSERT INTO events (received, action, project_id, payload) VALUES (?, ?, 1, ?)",
            (time.time(), "ANNOTATION_CREATED", json.dumps(raw)),
        )
    app = make_app()
    (row,) = get_service(app).store.events()
    assert row["payload"]["compacted"] is True and row["payload"]["annotation"]["id"] == 3
    assert len(json.dumps(row["payload"])) <= MAX_SUMMARY_BYTES


@pytest.mark.e2e
@pytest.mark.slow
def test_label_studio_webhooks_carry_updated_at(
    make_app: Any, label_studio: Any, ls_client: Any, digits: Any
) -> None:
    """Against a real Label Studio 1.23.2: its annotation webhooks carry ``updated_at``, the
    backend stores exactly that time, follows an update and keeps a deleted id deleted."""
    app = make_app(LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    store = get_service(app).store
    try:
        images, _ = digits
        project = ls_client.create_project("labelwheel webhook order", CONFIG_SINGLE)
        pid = int(project["id"])
        (task_id,) = ls_client.import_tasks(pid, [{"image": data_uri(images[0])}])
        ls_client.ensure_ml_backend(pid, f"http://127.0.0.1:{server.server_port}", "lw", None)

        def result(name: str) -> list[dict[str, Any]]:
            return [
                {
                    "from_name": "choice",
                    "to_name": "image",
                    "type": "choices",
                    "value": {"choices": [name]},
                }
            ]

        ann = ls_client.create_annotation(task_id, result("zero"))

        def stored_labels(want: tuple[str, ...]) -> Any:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                got = store.get_annotation(int(ann["id"]))
                if got is not None and got.labels == want:
                    return got
                time.sleep(0.1)
            raise AssertionError(f"annotation never stored with {want}")

        first = stored_labels(("zero",))
        assert first.ls_updated_us == parse_ls_timestamp(ann["updated_at"])
        ls_client.request("PATCH", f"/api/annotations/{ann['id']}/", json={"result": result("one")})
        second = stored_labels(("one",))
        now = ls_client.request("GET", f"/api/annotations/{ann['id']}/").json()
        assert second.ls_updated_us == parse_ls_timestamp(now["updated_at"])
        assert second.ls_updated_us > first.ls_updated_us
        ls_client.request("DELETE", f"/api/annotations/{ann['id']}/")
        deadline = time.monotonic() + 30
        while not store.get_annotation(int(ann["id"])).deleted and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.get_annotation(int(ann["id"])).deleted
        # a late copy of the update (Label Studio's own payload shape) does not resurrect it
        client = app.test_client()
        late = annotation_event(int(ann["id"]), task_id, data_uri(images[0]), ["one"], project=pid)
        late["annotation"]["updated_at"] = now["updated_at"]
        late["action"] = "ANNOTATION_UPDATED"
        assert post(client, late)["outcome"] == "deleted"
    finally:
        server.shutdown()
