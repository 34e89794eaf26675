"""Pool ranking as background work, against a real Label Studio and a slow image server.

The pool's images come from a loopback HTTP server that holds every image for a while, so that
the project's pool job takes several seconds; meanwhile ``/predict`` must answer at once (with
provisional scores, replaced in Label Studio once the job is ready), progress must show in
``/versions`` and ``/metrics``, and another project's ``/predict`` must not wait for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from backend_helpers import CONFIG_SINGLE, data_uri
from werkzeug.serving import make_server

from labelwheel.ml_backend import get_service

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DELAY_S = 0.5  # per image; 4 fetches at once per host: 48 slow images take >= 6 s
N_SLOW = 48


class SlowImages:
    """A loopback image server that answers each GET after :data:`DELAY_S` seconds."""

    def __init__(self, images: list[bytes]) -> None:
        self.images = images
        self.hits = 0
        self.delay = DELAY_S
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.hits += 1
                time.sleep(owner.delay)
                try:
                    body = owner.images[int(self.path.rsplit("/", 1)[-1].split(".")[0])]
                except (ValueError, IndexError):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/img/{i}.png"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_images(digits: Any) -> Iterator[SlowImages]:
    images, _ = digits
    server = SlowImages(list(images[100 : 100 + N_SLOW]))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def served(make_app: Any, label_studio: Any) -> Iterator[tuple[Any, str]]:
    """The backend on a loopback port, talking to the session's Label Studio; /predict waits
    at most 0.3 s for a pool ranking."""
    app = make_app(
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        LABELWHEEL_PUBLISH="true",
        LABELWHEEL_ALLOWED_HOSTS="127.0.0.1",
        LABELWHEEL_PREDICT_POOL_WAIT="0.3",
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def _slow_project(ls_client: Any, digits: Any, slow: SlowImages) -> tuple[int, list[int]]:
    """48 tasks whose images are slow, then 3 whose images are data: URIs (ids returned)."""
    images, _ = digits
    created = ls_client.create_project("labelwheel slow pool", CONFIG_SINGLE)
    pid = int(created["id"])
    ls_client.import_tasks(pid, [{"image": slow.url(i)} for i in range(N_SLOW)])
    fast = ls_client.import_tasks(pid, [{"image": data_uri(images[i])} for i in (0, 1, 2)])
    return pid, fast


def _job(client: Any, project_id: int) -> dict[str, Any]:
    body = client.get(f"/versions?project={project_id}").get_json()
    jobs = [j for j in body["pool"] if j["project"] == project_id]
    assert len(jobs) == 1, body["pool"]
    return jobs[0]


def test_slow_pool_predict_answers_at_once_and_provisional_scores_are_replaced(
    served: tuple[Any, str], ls_client: Any, digits: Any, slow_images: SlowImages
) -> None:
    app, url = served
    service = get_service(app)
    client = app.test_client()
    project_id, fast = _slow_project(ls_client, digits, slow_images)
    ls_client.ensure_ml_backend(project_id, url, "labelwheel", None)
    tasks = [ls_client.get_task(t) for t in fast]

    # /predict straight away: the pool job starts, the answer does not wait for it
    started = time.monotonic()
    body = {"tasks": tasks[:1], "project": f"{project_id}.1", "label_config": CONFIG_SINGLE}
    resp = client.post("/predict", json=body)
    assert resp.status_code == 200
    assert time.monotonic() - started < 1.5
    assert service.model.cached_ranking(project_id) is None  # still working

    # Label Studio's "Retrieve predictions" for the three fast tasks: provisional scores
    started = time.monotonic()
    ls_client.retrieve_predictions(project_id, fast)
    assert time.monotonic() - started < 5.0
    provisional = {
        p["task"]: p["score"]
        for t in fast
        for p in ls_client.list_predictions(t)
        if p["model_version"] == "v0"
    }
    assert set(provisional) == set(fast)
    assert service.model.cached_ranking(project_id) is None

    # progress is visible while the job runs: embedding k of N in /versions, gauges in /metrics
    seen_embedding = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = _job(client, project_id)
        if job["state"] == "embedding" and 0 < job["done"] < job["total"]:
            seen_embedding = job
            break
        assert job["state"] in ("queued", "listing", "embedding"), job
        time.sleep(0.1)
    assert seen_embedding is not None
    assert seen_embedding["total"] == N_SLOW + 3
    assert seen_embedding["message"] == (
        f"embedding {seen_embedding['done']} of {seen_embedding['total']}"
    )
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'labelwheel_pool_job_state{{project="{project_id}"}} 2' in metrics
    assert f'labelwheel_pool_job_total{{project="{project_id}"}} {N_SLOW + 3}' in metrics
    assert f'labelwheel_pool_provisional_pending{{project="{project_id}"}} 3' in metrics

    # the job ends: ready, the provisional scores replaced in Label Studio, state published
    deadline = time.monotonic() + 120
    while _job(client, project_id)["state"] != "published" and time.monotonic() < deadline:
        assert _job(client, project_id)["state"] != "failed", _job(client, project_id)
        time.sleep(0.2)
    job = _job(client, project_id)
    assert job["state"] == "published", job
    assert job["provisional_replaced"] == 3 and job["provisional_pending"] == 0
    ranking = service.model.cached_ranking(project_id)
    assert ranking is not None and ranking.pool_size == N_SLOW + 3
    assert sorted(ranking.scores.values()) == [k / (N_SLOW + 3) for k in range(N_SLOW + 3)]
    for task_id in fast:
        preds = [p for p in ls_client.list_predictions(task_id) if p["model_version"] == "v0"]
        assert len(preds) == 1  # replaced in place, not duplicated
        assert preds[0]["score"] == pytest.approx(ranking.scores[task_id])
    # a provisional score was the rank within the batch of three: 1/3 and 2/3 are never a
    # pool rank k/51, so at least two of them changed
    changed = [t for t in fast if provisional[t] != pytest.approx(ranking.scores[t])]
    assert len(changed) >= 2
    # Label Studio orders the project by the replaced scores
    ls_client.set_project_model_version(project_id, "v0")
    listed = [
        t
        for t in ls_client.iter_tasks(
            project_id, fields="all", query={"ordering": ["tasks:predictions_score"]}
        )
        if t["id"] in fast
    ]
    assert [t["id"] for t in listed] == sorted(fast, key=lambda t: ranking.scores[t])
    for task in listed:
        assert task["predictions_score"] == pytest.approx(ranking.scores[task["id"]])

    # a later /predict answers from the ready ranking, without waiting
    started = time.monotonic()
    resp = client.post("/predict", json=body)
    assert time.monotonic() - started < 1.5
    assert resp.get_json()["results"][0]["score"] == ranking.scores[fast[0]]

    # incremental: ranking again (e.g. after a training) fetches and embeds nothing new
    hits, embedded = slow_images.hits, service.model.images_embedded
    service.model.invalidate_pool(project_id)
    config = service.config_for(project_id)
    assert config is not None
    again = service.model.rank_pool(project_id, config)
    assert again is not None and again.pool_size == N_SLOW + 3
    assert slow_images.hits == hits
    assert service.model.images_embedded == embedded

    # a new task costs one embedding: in its /predict; the pool job finds it in the cache
    images, _ = digits
    (new_id,) = ls_client.import_tasks(project_id, [{"image": data_uri(images[7])}])
    new_body = {
        "tasks": [ls_client.get_task(new_id)],
        "project": f"{project_id}.1",
        "label_config": CONFIG_SINGLE,
    }
    time.sleep(1.1)  # the ranking is older than a second: a task it lacks starts a new job
    assert client.post("/predict", json=new_body).status_code == 200
    deadline = time.monotonic() + 60
    while service.model.cached_ranking(project_id) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    ranking = service.model.cached_ranking(project_id)
    assert ranking is not None and ranking.pool_size == N_SLOW + 4 and new_id in ranking.scores
    assert service.model.images_embedded == embedded + 1
    assert slow_images.hits == hits


def test_one_projects_slow_pool_does_not_delay_another_projects_predict(
    served: tuple[Any, str], ls_client: Any, digits: Any, slow_images: SlowImages
) -> None:
    app, _ = served
    service = get_service(app)
    client = app.test_client()
    images, target = digits
    slow_id, fast = _slow_project(ls_client, digits, slow_images)
    slow_tasks = [ls_client.get_task(t) for t in fast[:1]]
    body = {"tasks": slow_tasks, "project": f"{slow_id}.1", "label_config": CONFIG_SINGLE}
    assert client.post("/predict", json=body).status_code == 200
    deadline = time.monotonic() + 60
    while _job(client, slow_id)["state"] != "embedding" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _job(client, slow_id)["state"] == "embedding"

    # another project, small and fast: its first /predict gets its real pool ranking
    idx = list(np.flatnonzero(target == 0)[:5]) + list(np.flatnonzero(target == 1)[:5])
    other = int(ls_client.create_project("labelwheel other project", CONFIG_SINGLE)["id"])
    ids = ls_client.import_tasks(other, [{"image": data_uri(images[i])} for i in idx])
    tasks = [ls_client.get_task(t) for t in ids[:2]]
    started = time.monotonic()
    resp = client.post(
        "/predict",
        json={"tasks": tasks, "project": f"{other}.1", "label_config": CONFIG_SINGLE},
    )
    elapsed = time.monotonic() - started
    assert resp.status_code == 200
    assert elapsed < 1.5, elapsed
    ranking = service.model.cached_ranking(other)
    if ranking is not None:  # ready within the wait: the real pool scores
        assert ranking.pool_size == 10
        scores = [r["score"] for r in resp.get_json()["results"]]
        assert scores == [ranking.scores[t] for t in ids[:2]]
    # the slow project was still at work the whole time
    assert _job(client, slow_id)["state"] == "embedding"
    assert service.model.cached_ranking(slow_id) is None
    deadline = time.monotonic() + 30
    while service.model.cached_ranking(other) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.model.cached_ranking(other) is not None
    assert _job(client, other)["state"] in ("ready", "published")


def test_one_projects_training_on_slow_images_does_not_delay_another_projects_predict(
    make_app: Any, digits: Any, slow_images: SlowImages
) -> None:
    """No Label Studio here: project 1 trains on 40 slow images (embedding them takes >= 5 s),
    project 2's /predict of fresh data: URI images answers meanwhile."""
    from backend_helpers import annotation_event

    app = make_app(LABELWHEEL_ALLOWED_HOSTS="127.0.0.1")
    service = get_service(app)
    client = app.test_client()
    images, target = digits
    labels = [int(target[100 + i]) % 2 for i in range(40)]
    for i in range(40):
        name = "zero" if labels[i] == 0 else "one"
        event = annotation_event(i + 1, i + 1, slow_images.url(i), [name], project=1)
        assert client.post("/webhook", json=event).status_code == 200
    start = {"action": "START_TRAINING", "project": {"id": 1, "label_config": CONFIG_SINGLE}}
    assert client.post("/webhook", json=start).status_code == 200
    deadline = time.monotonic() + 30
    while slow_images.hits == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slow_images.hits > 0 and 1 in service.worker.running  # training, fetching

    tasks = [{"id": 1000 + k, "data": {"image": data_uri(images[500 + k])}} for k in range(2)]
    started = time.monotonic()
    resp = client.post(
        "/predict", json={"tasks": tasks, "project": "2.1", "label_config": CONFIG_SINGLE}
    )
    elapsed = time.monotonic() - started
    assert resp.status_code == 200
    assert elapsed < 1.5, elapsed
    assert 1 in service.worker.running  # project 1 was training the whole time
    assert slow_images.hits < 40
    assert service.worker.wait_idle(120)
    assert [v["name"] for v in client.get("/versions?project=1").get_json()["details"]] == ["v1"]


def test_one_projects_slow_publish_does_not_hold_another_projects_training(
    served: tuple[Any, str], ls_client: Any, digits: Any, slow_images: SlowImages
) -> None:
    """Project A's new version waits for its slow pool ranking before it is published; project
    B trains and publishes meanwhile (publishing runs in a thread per project, not in the
    training thread)."""
    from backend_helpers import annotation_event

    app, url = served
    service = get_service(app)
    client = app.test_client()
    images, target = digits
    slow_images.delay = 2.0  # A's pool of 40 slow images: >= 20 s
    a_id, _ = _slow_project(ls_client, digits, slow_images)
    a_tasks = [t["id"] for t in ls_client.iter_tasks(a_id)][:N_SLOW]
    idx = list(np.flatnonzero(target == 0)[:8]) + list(np.flatnonzero(target == 1)[:8])
    b_id = int(ls_client.create_project("labelwheel quick project", CONFIG_SINGLE)["id"])
    b_tasks = ls_client.import_tasks(b_id, [{"image": data_uri(images[i])} for i in idx])
    for pid in (a_id, b_id):
        ls_client.ensure_ml_backend(pid, url, "labelwheel", None)

    def annotate(pid: int, tasks: list[int], refs: list[str], names: list[str]) -> None:
        for k, (task_id, ref, name) in enumerate(zip(tasks, refs, names, strict=True)):
            event = annotation_event(pid * 1000 + k, task_id, ref, [name], project=pid)
            assert client.post("/webhook", json=event).status_code == 200
        start = {"action": "START_TRAINING", "project": {"id": pid, "label_config": CONFIG_SINGLE}}
        assert client.post("/webhook", json=start).status_code == 200

    names = ["zero"] * 4 + ["one"] * 4
    annotate(a_id, a_tasks[:8], [slow_images.url(i) for i in range(8)], names)
    b_refs = [data_uri(images[i]) for i in idx]
    annotate(b_id, b_tasks[:4] + b_tasks[8:12], b_refs[:4] + b_refs[8:12], names)

    deadline = time.monotonic() + 120
    while service.published.get(b_id) != "v1" and time.monotonic() < deadline:
        assert b_id not in service.publish_errors, service.publish_errors
        time.sleep(0.2)
    assert service.published.get(b_id) == "v1", service.worker.last_error
    assert ls_client.get_project(b_id)["model_version"] == "v1"
    # A trained first, but its publish is still waiting for its slow pool ranking
    assert [v["name"] for v in client.get(f"/versions?project={a_id}").get_json()["details"]] == [
        "v1"
    ]
    assert service.published.get(a_id) is None
    assert _job(client, a_id)["state"] in ("listing", "embedding", "ranking")


def test_a_task_new_to_the_ranking_is_the_only_provisional_one(
    served: tuple[Any, str], ls_client: Any, digits: Any
) -> None:
    """One task the ranking has not seen must not make a whole batch provisional (a connect
    asks for 2,000 tasks at a time): the others keep their pool scores, the new one gets a
    provisional score and the pool is ranked again in the background."""
    app, _ = served
    client = app.test_client()
    images, _ = digits
    pid = int(ls_client.create_project("labelwheel new task", CONFIG_SINGLE)["id"])
    ids = ls_client.import_tasks(pid, [{"image": data_uri(images[i])} for i in range(8)])
    tasks = [{"id": int(t), "data": {"image": data_uri(images[i])}} for i, t in enumerate(ids)]
    body = {"tasks": tasks[:1], "project": f"{pid}.1", "label_config": CONFIG_SINGLE}
    client.post("/predict", json=body)
    model = get_service(app).model
    deadline = time.monotonic() + 60
    while model.cached_ranking(pid) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    ranking = model.cached_ranking(pid)
    assert ranking is not None and sorted(ranking.scores) == sorted(int(t) for t in ids)
    (new_id,) = ls_client.import_tasks(pid, [{"image": data_uri(images[8])}])
    time.sleep(1.2)  # the ranking is older than a second: a stranger means the pool changed
    batch = [*tasks, {"id": int(new_id), "data": {"image": data_uri(images[8])}}]
    body = {"tasks": batch, "project": f"{pid}.1", "label_config": CONFIG_SINGLE}
    results = client.post("/predict", json=body).get_json()["results"]
    got = [r["score"] for r in results]
    assert got[:-1] == [pytest.approx(ranking.scores[int(t)]) for t in ids]
    assert _job(client, pid)["provisional_pending"] <= 1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        again = model.cached_ranking(pid)
        if again is not None and int(new_id) in again.scores:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the pool was not ranked again with the new task")
