"""End-to-end: the backend is SIGKILLed in the middle of a training and restarted.

No annotation Label Studio delivered (and the backend acknowledged) is lost, the interrupted run is
recorded, the last good version keeps serving, and the next training uses every annotation.
"""

from __future__ import annotations

import signal

import pytest
from e2e_helpers import annotate, connect, create_project, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _labels_known(backend, pid: int) -> float:
    return backend.metric("labelwheel_labels", project=pid)


def test_e2e_kill_during_training_loses_nothing(client, label_studio, backend_factory, demo_images):
    # Large input size so that embedding the images of a training takes seconds: time to kill.
    backend = backend_factory(
        label_studio.url,
        label_studio.token,
        LABELWHEEL_IMAGE_SIZE="384",
        LABELWHEEL_PUBLISH="false",
    )
    pid = create_project(client, demo_images.labels)
    ids = client.import_files(pid, demo_images.paths[100:140])
    result = connect(client, pid, backend, retrieve=False)
    images = {t["id"]: t["data"]["image"] for t in client.iter_tasks(pid)}

    # A first good version from 12 answers.
    for tid in ids[:12]:
        annotate(client, tid, demo_images.label_of(images[tid]))
    assert _labels_known(backend, pid) == 12
    client.train(result.ml_backend_id)
    good = wait_for(
        lambda: backend.serving_version(pid), 300, f"first version\n{backend.log_tail()}"
    )

    # 24 more answers, acknowledged by the backend, then a training that will not finish.
    for tid in ids[12:36]:
        annotate(client, tid, demo_images.label_of(images[tid]))
    assert _labels_known(backend, pid) == 36
    runs_before = len(backend.versions(pid)["runs"])
    client.train(result.ml_backend_id)

    def training_now() -> bool:
        runs = backend.versions(pid)["runs"]
        return len(runs) > runs_before and runs[0]["status"] == "running"

    wait_for(training_now, 60, "the backend to be training", interval=0.05)
    backend.kill(signal.SIGKILL)
    assert backend.proc is not None and backend.proc.returncode == -signal.SIGKILL

    backend.start()
    assert _labels_known(backend, pid) == 36, "no acknowledged annotation is lost"
    info = backend.versions(pid)
    assert backend.serving_version(pid) == good, "the last good version serves"
    assert [d["name"] for d in info["details"]] == [good]
    assert info["runs"][0]["status"] == "interrupted", info["runs"]
    assert all(r["status"] != "running" for r in info["runs"])
    # /predict answers with the last good version after the restart.
    resp = backend.post(
        "/predict",
        json={
            "tasks": [client.get_task(ids[-1])],
            "project": f"{pid}.0",
            "label_config": client.get_project(pid)["label_config"],
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["results"][0]["model_version"] == good

    # Training again (START_TRAINING through Label Studio) uses all 36 annotations.
    client.train(result.ml_backend_id)
    newer = wait_for(
        lambda: (v := backend.serving_version(pid)) != good and v,
        300,
        f"a version after the restart\n{backend.log_tail()}",
    )
    detail = next(d for d in backend.versions(pid)["details"] if d["name"] == newer)
    assert detail["n_labels"] == 36
