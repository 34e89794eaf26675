"""End-to-end: the backend is SIGKILLed in the middle of a training and restarted.

No annotation Label Studio delivered (and the backend acknowledged) is lost, the interrupted run is
recorded, the backend never falls back to cold start, and the training acknowledged before the kill
runs by itself after the restart, with every annotation.

The training is held mid-way deterministically, not by timing: the annotations after the first
version are on tasks whose images live on a local HTTP server (an allowlisted host) that does not
answer until the test releases it, after the kill.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from e2e_helpers import annotate, connect, create_project, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _labels_known(backend, pid: int) -> float:
    return backend.metric("labelwheel_labels", project=pid)


class _StallingImages:
    """Serves ``images[i]`` at ``/img/<i>.png`` once ``release`` is set; until then it waits."""

    def __init__(self, images: list[bytes]) -> None:
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.release.wait(300)
                data = images[int(self.path.rsplit("/", 1)[-1].split(".")[0])]
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:  # the backend was killed mid-request
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stalling_images(demo_images) -> Iterator[tuple[_StallingImages, list[str]]]:
    chosen = demo_images.images[112:136]
    server = _StallingImages([im.path.read_bytes() for im in chosen])
    try:
        yield server, [im.label for im in chosen]
    finally:
        server.close()


def test_e2e_kill_during_training_loses_nothing(
    client, label_studio, backend_factory, demo_images, stalling_images
):
    server, slow_labels = stalling_images
    backend = backend_factory(
        label_studio.url,
        label_studio.token,
        LABELWHEEL_PUBLISH="false",
        LABELWHEEL_ALLOWED_HOSTS="127.0.0.1",
        LABELWHEEL_FETCH_TIMEOUT="280",
    )
    pid = create_project(client, demo_images.labels)
    ids = client.import_files(pid, demo_images.paths[100:112])
    result = connect(client, pid, backend, retrieve=False)
    images = {t["id"]: t["data"]["image"] for t in client.iter_tasks(pid)}

    # A first good version from 12 answers on uploaded images.
    for tid in ids:
        annotate(client, tid, demo_images.label_of(images[tid]))
    assert _labels_known(backend, pid) == 12
    client.train(result.ml_backend_id)
    good = wait_for(
        lambda: backend.serving_version(pid), 300, f"first version\n{backend.log_tail()}"
    )

    # 24 more answers, acknowledged by the backend, on tasks whose images do not arrive yet:
    # the next training cannot finish.
    slow_ids = client.import_tasks(
        pid, [{"image": f"{server.url}/img/{i}.png"} for i in range(len(slow_labels))]
    )
    for tid, label in zip(slow_ids, slow_labels, strict=True):
        annotate(client, tid, label)
    assert _labels_known(backend, pid) == 36
    runs_before = len(backend.versions(pid)["runs"])
    client.train(result.ml_backend_id)

    def training_now() -> bool:
        runs = backend.versions(pid)["runs"]
        return len(runs) > runs_before and runs[0]["status"] == "running"

    wait_for(training_now, 120, "the backend to be training", interval=0.2)
    backend.kill(signal.SIGKILL)
    assert backend.proc is not None and backend.proc.returncode == -signal.SIGKILL

    server.release.set()  # the images arrive from now on
    backend.start()
    assert _labels_known(backend, pid) == 36, "no acknowledged annotation is lost"
    info = backend.versions(pid)
    killed = [r for r in info["runs"] if r["status"] == "interrupted"]
    assert len(killed) == 1, info["runs"]
    # Never back to cold start: the last good version serves until the owed training publishes.
    serving = backend.serving_version(pid)
    assert serving is not None and int(serving.lstrip("v")) >= int(good.lstrip("v"))
    resp = backend.post(
        "/predict",
        json={
            "tasks": [client.get_task(ids[-1])],
            "project": f"{pid}.0",
            "label_config": client.get_project(pid)["label_config"],
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["results"][0]["model_version"] in {good, backend.serving_version(pid)}

    # The training acknowledged before the kill runs by itself after the restart (the queue is
    # durable): no new START_TRAINING, and it uses all 36 annotations.
    newer = wait_for(
        lambda: (v := backend.serving_version(pid)) != good and v,
        300,
        f"a version after the restart\n{backend.log_tail()}",
    )
    detail = next(d for d in backend.versions(pid)["details"] if d["name"] == newer)
    assert detail["n_labels"] == 36
