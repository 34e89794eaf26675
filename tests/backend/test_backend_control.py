"""The random control slice end to end: a real Label Studio project, a trained version, its pool
ranking with control tasks recorded, and approvals on them moving the real-accuracy estimate in
``/versions`` and in ``labelwheel report --json`` (read-only on the backend's record)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from backend_helpers import CONFIG_SINGLE, IMAGE_SIZE, annotation_event, data_uri
from click.testing import CliRunner

from labelwheel.cli import cli
from labelwheel.ml_backend import get_service

pytestmark = [pytest.mark.e2e]

NAMES = {0: "zero", 1: "one"}
FRACTION = 0.25


def _honest(client: Any, project_id: int, version: str) -> dict[str, Any]:
    body = client.get(f"/versions?project={project_id}").get_json()
    (detail,) = [d for d in body["details"] if d["name"] == version]
    return detail["honest"]


def _annotate(
    client: Any, ann_id: int, task: dict[str, Any], pid: int, label: str, shown: str, version: str
) -> None:
    event = annotation_event(
        ann_id,
        int(task["id"]),
        task["data"]["image"],
        [label],
        project=pid,
        predicted=[shown],
        version=version,
    )
    resp = client.post("/webhook", json=event)
    assert resp.status_code == 200, resp.get_json()


def test_control_tasks_recorded_and_approvals_move_the_estimate(
    make_app: Any, label_studio: Any, ls_client: Any, digits: Any, tmp_path: Any
) -> None:
    app = make_app(
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        LABELWHEEL_ALLOWED_HOSTS="127.0.0.1",
        LABELWHEEL_CONTROL_FRACTION=str(FRACTION),
    )
    service = get_service(app)
    client = app.test_client()
    images, target = digits
    idx = [int(i) for c in (0, 1) for i in np.flatnonzero(target == c)[:24]]
    created = ls_client.create_project("labelwheel control slice", CONFIG_SINGLE)
    pid = int(created["id"])
    ids = ls_client.import_tasks(pid, [{"image": data_uri(images[i])} for i in idx])
    truth = {int(t): NAMES[int(target[i])] for t, i in zip(ids, idx, strict=True)}
    tasks = {int(t): ls_client.get_task(int(t)) for t in ids}

    # a first version from 6 labels per class (annotation ids far from Label Studio's)
    first = [t for t in ids if truth[t] == "zero"][:6] + [t for t in ids if truth[t] == "one"][:6]
    for k, t in enumerate(first):
        _annotate(client, 90_000 + k, tasks[t], pid, truth[t], truth[t], "cold")
    resp = client.post(
        "/webhook",
        json={"action": "START_TRAINING", "project": {"id": pid, "label_config": CONFIG_SINGLE}},
    )
    assert resp.status_code == 200
    assert service.worker.wait_idle(120)
    version = service.model.version_name(pid)
    assert version == "v1"

    config = service.config_for(pid)
    assert config is not None
    ranking = service.model.rank_pool(pid, config)
    assert ranking is not None and ranking.version == version
    pool = [t for t in ids if t not in first]
    assert set(ranking.scores) == set(pool)
    control = set(ranking.control)
    assert control and control < set(pool)
    assert service.store.control_task_ids(pid, version) == control
    # evenly interleaved: one queue position in 4 from a random start (0..3)
    position = {t: round(s * ranking.pool_size) for t, s in ranking.scores.items()}
    ctrl_pos = sorted(position[t] for t in control)
    assert ctrl_pos[0] < 4
    assert ctrl_pos[:3] == [ctrl_pos[0] + 4 * j for j in range(min(3, len(ctrl_pos)))]
    assert sum(1 for t in control if position[t] < 8) == min(2, len(control))
    # the served scores carry the queue position; the mark stays server-side
    some = sorted(control)[0]
    body = {"tasks": [tasks[some]], "project": f"{pid}.1", "label_config": CONFIG_SINGLE}
    (pred,) = client.post("/predict", json=body).get_json()["results"]
    assert pred["model_version"] == version
    assert pred["score"] == pytest.approx(ranking.scores[some])

    before = _honest(client, pid, version)
    assert before["control_n"] == 0 and before["real_accuracy"] is None
    assert before["control_fraction"] == FRACTION

    controls = sorted(control)
    selected = sorted(set(pool) - control)
    other = {"zero": "one", "one": "zero"}
    # an approval on a control task: real accuracy 1/1
    t = controls[0]
    _annotate(client, 91_000, tasks[t], pid, truth[t], truth[t], version)
    h = _honest(client, pid, version)
    assert (h["control_n"], h["control_correct"], h["real_accuracy"]) == (1, 1, 1.0)
    assert h["real_interval"][0] < 1.0
    # a correction on another control task (the pre-label shown was wrong): 1/2
    if len(controls) > 1:
        t = controls[1]
        _annotate(client, 91_001, tasks[t], pid, truth[t], other[truth[t]], version)
        h = _honest(client, pid, version)
        assert (h["control_n"], h["real_accuracy"]) == (2, 0.5)
    # corrections on selected tasks move only the biased accuracy, and the lift
    for k, t in enumerate(selected[:2]):
        _annotate(client, 92_000 + k, tasks[t], pid, truth[t], other[truth[t]], version)
    h2 = _honest(client, pid, version)
    assert (h2["control_n"], h2["real_accuracy"]) == (h["control_n"], h["real_accuracy"])
    assert (h2["selected_n"], h2["selected_accuracy"]) == (2, 0.0)
    assert h2["lift"] == pytest.approx(h["real_accuracy"])
    assert h2["lift_interval"][0] < h2["lift"] < h2["lift_interval"][1]

    # the data lead's report reads the same from the backend's record, read-only
    result = CliRunner().invoke(
        cli,
        [
            "report",
            "--project",
            str(pid),
            "--model-dir",
            str(service.settings.model_dir),
            "--image-size",
            str(IMAGE_SIZE),
            "--cache-dir",
            str(tmp_path / "lead-cache"),
            "--json",
            "--quiet",
        ],
        env={"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    (row,) = [r for r in report["honest"] if r["version"] == version]
    assert row["control_n"] == h2["control_n"] and row["selected_n"] == 2
    assert row["real_accuracy"] == h2["real_accuracy"]
    assert report["honest_all_versions"]["control_n"] == h2["control_n"]
