"""Hard crashes with real processes: ``kill -9`` at the named moments, then a restart.

- A training acknowledged (``START_TRAINING``, and the automatic every-N trigger) and not yet
  run, or running, when the process dies runs after the restart without being asked again.
- A second process on the same ``MODEL_DIR`` fails at once with a message naming it (exit 2
  for ``labelwheel serve``; a gunicorn with two workers does not come up); the lock goes with
  the process that held it, even after ``kill -9``.
- The newest model artifact unreadable: the backend serves the newest readable version.
"""

from __future__ import annotations

import logging
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from backend_helpers import CONFIG_SINGLE, annotation_event, data_uri
from backend_procs import Backend, ImageServer, backend_env, basic_auth, free_port, wait_for

from labelwheel.ml_backend import ModelDirInUse, get_service
from labelwheel.ml_backend.store import Store

pytestmark = pytest.mark.slow


def test_acknowledged_trainings_run_after_kill_9(tmp_path: Path, digits: Any) -> None:
    images, target = digits
    server = ImageServer(images)
    user, password = "lw-" + secrets.token_hex(3), secrets.token_urlsafe(12)
    # every 10 annotation changes retrain by themselves; fetches may wait long on /slow/
    env = backend_env(
        tmp_path / "state",
        user,
        password,
        LABELWHEEL_RETRAIN_EVERY="10",
        LABELWHEEL_FETCH_TIMEOUT="120",
    )
    headers = basic_auth(user, password)
    log_path = tmp_path / "backend.log"
    zeros, ones = np.flatnonzero(target == 0), np.flatnonzero(target == 1)
    backend = Backend(env, log_path)

    def post(path: str, body: dict[str, Any]) -> Any:
        resp = requests.post(backend.url + path, json=body, headers=headers, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def versions(project: int) -> list[str]:
        resp = requests.get(f"{backend.url}/versions?project={project}", headers=headers, timeout=5)
        return list(resp.json()["versions"])

    try:
        # project 1: ten annotations whose images stall on the image server; the tenth change
        # triggers the automatic training, which then waits on its first image fetch
        slow = f"http://127.0.0.1:{server.port}/slow"
        for k in range(5):
            post("/webhook", annotation_event(1 + k, 100 + k, f"{slow}/{zeros[k]}.png", ["zero"]))
            post("/webhook", annotation_event(11 + k, 110 + k, f"{slow}/{ones[k]}.png", ["one"]))
        wait_for(
            lambda: (
                server.slow_requests > 0
                and requests.get(backend.url + "/health", timeout=5).json()["training"] == [1]
            ),
            90,
            log_path,
        )
        # project 2: eight annotations and START_TRAINING; acknowledged, queued behind project 1
        for k in range(4):
            for ann, idx, label in ((21 + k, zeros[10 + k], "zero"), (31 + k, ones[10 + k], "one")):
                event = annotation_event(ann, 200 + ann, data_uri(images[idx]), [label], project=2)
                post("/webhook", event)
        answer = post(
            "/webhook",
            {"action": "START_TRAINING", "project": {"id": 2, "label_config": CONFIG_SINGLE}},
        )
        assert answer["status"] == "training queued"
        health = requests.get(backend.url + "/health", timeout=5).json()
        assert health["training"] == [1] and health["queued"] == [2]
        assert versions(1) == [] and versions(2) == []
        backend.kill()  # project 1 mid-training, project 2 acknowledged and not started
    finally:
        backend.stop()

    with sqlite3.connect(tmp_path / "state" / "labelwheel.sqlite3") as conn:
        owed = dict(conn.execute("SELECT project_id, attempts FROM training_queue").fetchall())
        runs = conn.execute("SELECT project_id, status FROM training_runs").fetchall()
    assert owed == {1: 1, 2: 0}
    assert runs == [(1, "running")]

    server.release.set()
    backend = Backend(env, log_path)
    try:
        # nobody asks again: both trainings run and each project gets its first version
        wait_for(lambda: versions(1) == ["v1"] and versions(2) == ["v1"], 180, log_path)
        details = requests.get(backend.url + "/versions", headers=headers, timeout=5).json()
        by_project = {d["project"]: d for d in details["details"]}
        assert by_project[1]["n_labels"] == 10 and by_project[2]["n_labels"] == 8
        statuses = [(r["project_id"], r["status"]) for r in details["runs"]]
        assert sorted(statuses) == [(1, "interrupted"), (1, "ok"), (2, "ok")]
        wait_for(
            lambda: requests.get(backend.url + "/health", timeout=5).json()["queued"] == [], 30
        )
        with sqlite3.connect(tmp_path / "state" / "labelwheel.sqlite3") as conn:
            assert conn.execute("SELECT COUNT(*) FROM training_queue").fetchone()[0] == 0
        assert "re-queued a training acknowledged before the restart" in log_path.read_text()
    finally:
        backend.stop()
        server.close()


def test_one_process_per_model_dir(tmp_path: Path) -> None:
    user, password = "lw-" + secrets.token_hex(3), secrets.token_urlsafe(12)
    model_dir = tmp_path / "state"
    env = backend_env(model_dir, user, password)
    first = Backend(env, tmp_path / "first.log")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "labelwheel.cli", "serve", "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr
        message = second.stderr.strip().splitlines()[-1]
        assert message.startswith("error: MODEL_DIR")
        assert str(model_dir) in message and f"pid {first.proc.pid}" in message
        assert "-w 1" in message
        # the first process is untouched by the attempt
        assert requests.get(first.url + "/health", timeout=5).status_code == 200

        first.kill()  # kill -9: the kernel drops the lock with the process
    finally:
        first.stop()
    again = Backend(env, tmp_path / "again.log")
    again.stop()


def test_the_loser_names_a_holder_that_has_not_written_its_pid_yet(tmp_path: Path) -> None:
    """The holder writes its pid just after taking the lock; a process that loses the race in
    between waits for it (under load, gunicorn's second worker read an empty file)."""
    import fcntl
    import os
    import threading

    from labelwheel.ml_backend.dirlock import LOCK_NAME, ModelDirLock

    tmp_path.mkdir(exist_ok=True)
    fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, pid not written yet
        writer = threading.Timer(0.2, lambda: os.pwrite(fd, b"4242 1700000000\n", 0))
        writer.start()
        with pytest.raises(ModelDirInUse, match=r"process \(pid 4242, since "):
            ModelDirLock(tmp_path).acquire()
        writer.join()
    finally:
        os.close(fd)


def gunicorn(port: int, *options: str) -> list[str]:
    """The command line of gunicorn serving the app factory on a loopback port."""
    gunicorn_bin = str(Path(sys.executable).with_name("gunicorn"))
    return [gunicorn_bin, *options, "-b", f"127.0.0.1:{port}", "labelwheel.ml_backend:create_app()"]


def test_gunicorn_two_workers_one_boots_the_other_fails(tmp_path: Path) -> None:
    """With a free MODEL_DIR, ``gunicorn -w 2``: one worker takes the lock, the other fails to
    boot with the clear message, and gunicorn stops (it does not serve half-configured)."""
    user, password = "lw-" + secrets.token_hex(3), secrets.token_urlsafe(12)
    env = backend_env(tmp_path / "state", user, password)
    port = free_port()
    proc = subprocess.run(
        gunicorn(port, "-w", "2"),
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 3  # gunicorn's "worker failed to boot"
    assert "Reason: Worker failed to boot." in proc.stderr
    assert re.search(r"is in use by another labelwheel backend process \(pid \d+", proc.stderr)
    assert str(tmp_path / "state") in proc.stderr


def train(client: Any, digits: Any, first: int, per_class: int) -> None:
    images, target = digits
    for cls, name in ((0, "zero"), (1, "one")):
        for k, idx in enumerate(np.flatnonzero(target == cls)[first : first + per_class]):
            ann = 1000 * (cls + 1) + first + k
            event = annotation_event(ann, ann, data_uri(images[idx]), [name])
            assert client.post("/webhook", json=event).status_code == 200
    resp = client.post(
        "/webhook",
        json={"action": "START_TRAINING", "project": {"id": 1, "label_config": CONFIG_SINGLE}},
    )
    assert resp.status_code == 200


def test_unreadable_newest_artifact_falls_back_to_the_newest_readable(
    make_app: Any, digits: Any, caplog: Any
) -> None:
    images, target = digits
    app = make_app()
    service = get_service(app)
    client = app.test_client()
    train(client, digits, 0, 4)
    assert service.worker.wait_idle(120)
    train(client, digits, 4, 4)
    assert service.worker.wait_idle(120)
    assert [v.name for v in service.store.versions(1)] == ["v1", "v2"]
    artifacts = {v.name: Path(v.artifact) for v in service.store.versions(1)}
    service.close()

    # a torn write of v2 (as after a crash on a file system without data journaling)
    data = artifacts["v2"].read_bytes()
    artifacts["v2"].write_bytes(data[: len(data) // 2])
    body = {
        "tasks": [{"id": 5, "data": {"image": data_uri(images[np.flatnonzero(target == 0)[40]])}}],
        "project": "1.1",
        "label_config": CONFIG_SINGLE,
    }
    with caplog.at_level(logging.WARNING, logger="labelwheel"):
        app = make_app()
        client = app.test_client()
        (pred,) = client.post("/predict", json=body).get_json()["results"]
    assert pred["model_version"] == "v1" and pred["result"]
    assert "artifact of v2 is unreadable" in caplog.text
    assert "serving v1, the newest readable version" in caplog.text
    # the next training gets a new number; it never reuses v2's
    service = get_service(app)
    train(client, digits, 8, 2)
    assert service.worker.wait_idle(120)
    assert service.model.version_name(1) == "v3"
    v3 = Path(service.store.latest_version(1).artifact)
    service.close()

    # nothing readable at all (v3 removed, v1 garbage): cold start, said so in the log
    artifacts["v1"].write_bytes(b"not a pickle")
    v3.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="labelwheel"):
        client = make_app().test_client()
        (pred,) = client.post("/predict", json=body).get_json()["results"]
    assert pred["model_version"] == "v0" and pred["result"] == []
    assert "no readable model artifact (v3, v2, v1); serving cold start" in caplog.text


def test_second_app_on_one_model_dir_is_refused(make_app: Any) -> None:
    make_app()
    with pytest.raises(ModelDirInUse, match=r"MODEL_DIR .* is in use by another labelwheel"):
        make_app()


def test_a_training_interrupted_again_and_again_is_given_up(make_app: Any, tmp_path: Path) -> None:
    """A training that kills its process each time (say, the OOM killer) ends the crash loop
    after three attempts: recorded as failed, with the way to try again."""
    store = Store(tmp_path / "model_dir")
    store.queue_training(4)
    for _ in range(3):  # three starts, none finished
        store.training_started(4)
    store.queue_training(5)
    store.training_started(5)  # one interrupted attempt: tried again
    store.close()
    service = get_service(make_app())
    service.worker.wait_idle(60)
    assert service.store.queued_trainings() == []
    (run,) = service.store.runs(4)
    assert run["status"] == "failed" and "3 attempts" in run["error"]
    assert "START_TRAINING" in run["error"]
    (run,) = service.store.runs(5)  # it ran again (and failed: no label config for project 5)
    assert run["status"] == "failed" and "no label config" in run["error"]


def test_gunicorn_preload_is_refused_with_the_reason(tmp_path: Path) -> None:
    """``gunicorn --preload`` builds the app in the master and forks it: the training thread
    and the MODEL_DIR lock stay in the master. Every request (health too) answers 503 naming
    the cause, and the log says it, instead of a backend that looks up and never trains."""
    user, password = "lw-" + secrets.token_hex(3), secrets.token_urlsafe(12)
    env = backend_env(tmp_path / "state", user, password)
    port = free_port()
    proc = subprocess.Popen(
        gunicorn(port, "--preload", "-w", "1"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        resp = None
        while time.monotonic() < deadline:
            try:
                resp = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.3)
        assert resp is not None, "gunicorn did not come up"
        assert resp.status_code == 503
        body = resp.json()
        assert body["error"] == "forked_app" and "--preload" in body["message"]
        predict = requests.post(
            f"http://127.0.0.1:{port}/predict",
            json={},
            headers=basic_auth(user, password),
            timeout=5,
        )
        assert predict.status_code == 503 and predict.json()["error"] == "forked_app"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert out.count("Run gunicorn without --preload") == 1  # logged once
