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


def _lead_report(pid: int, service: Any, label_studio: Any, tmp_path: Any) -> dict[str, Any]:
    """``labelwheel report --json`` on the backend's record (read-only), as a data lead runs it."""
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
    report: dict[str, Any] = json.loads(result.stdout)
    return report


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


def _first_version(
    app: Any,
    ls_client: Any,
    digits: Any,
    name: str,
    per_class: int,
    labelled_per_class: int,
    first_annotation_id: int,
) -> tuple[int, list[int], dict[int, str], dict[int, dict[str, Any]], list[int]]:
    """A Label Studio project of ``per_class`` digit images of 0 and of 1, the first
    ``labelled_per_class`` of each annotated through the webhook and a version trained on them:
    (project id, task ids, true label per task, the tasks as Label Studio serves them, the
    annotated task ids)."""
    service = get_service(app)
    client = app.test_client()
    images, target = digits
    idx = [int(i) for c in (0, 1) for i in np.flatnonzero(target == c)[:per_class]]
    pid = int(ls_client.create_project(name, CONFIG_SINGLE)["id"])
    ids = [
        int(t) for t in ls_client.import_tasks(pid, [{"image": data_uri(images[i])} for i in idx])
    ]
    truth = {t: NAMES[int(target[i])] for t, i in zip(ids, idx, strict=True)}
    tasks = {t: ls_client.get_task(t) for t in ids}
    k = labelled_per_class
    first = [t for t in ids if truth[t] == "zero"][:k] + [t for t in ids if truth[t] == "one"][:k]
    for n, t in enumerate(first):
        _annotate(client, first_annotation_id + n, tasks[t], pid, truth[t], truth[t], "cold")
    resp = client.post(
        "/webhook",
        json={"action": "START_TRAINING", "project": {"id": pid, "label_config": CONFIG_SINGLE}},
    )
    assert resp.status_code == 200
    assert service.worker.wait_idle(120)
    return pid, ids, truth, tasks, first


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
    # a first version from 6 labels per class (annotation ids far from Label Studio's)
    pid, ids, truth, tasks, first = _first_version(
        app, ls_client, digits, "labelwheel control slice", 24, 6, 90_000
    )
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
    report = _lead_report(pid, service, label_studio, tmp_path)
    (row,) = [r for r in report["honest"] if r["version"] == version]
    assert row["control_n"] == h2["control_n"] and row["selected_n"] == 2
    assert row["real_accuracy"] == h2["real_accuracy"]
    assert report["honest_all_versions"]["control_n"] == h2["control_n"]


def test_ppi_inputs_recorded_at_ranking_and_shown_in_versions(
    make_app: Any, label_studio: Any, ls_client: Any, digits: Any, tmp_path: Any
) -> None:
    """The ranking records each control task's confidence (the calibrated probability /predict
    serves with the pre-label) and the pool's N, mean and variance of it; ``/versions`` and
    ``labelwheel report`` show the prediction-powered estimate beside the plain one."""
    from labelwheel.lead.honest import (
        PPI_MIN_LABELS,
        ControlLabel,
        LabelledPart,
        PoolConfidence,
        data_wide_accuracy,
        ppi_accuracy,
    )
    from labelwheel.lead.lift import LIFT_MIN_CONTROL

    app = make_app(
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        LABELWHEEL_ALLOWED_HOSTS="127.0.0.1",
        LABELWHEEL_CONTROL_FRACTION="0.5",
    )
    service = get_service(app)
    client = app.test_client()
    pid, ids, truth, tasks, first = _first_version(
        app, ls_client, digits, "labelwheel control slice ppi", 26, 5, 80_000
    )
    version = service.model.version_name(pid)
    config = service.config_for(pid)
    assert version == "v1" and config is not None
    ranking = service.model.rank_pool(pid, config)
    assert ranking is not None and ranking.version == version
    pool = [t for t in ids if t not in first]
    control = sorted(ranking.control)
    assert len(control) >= PPI_MIN_LABELS + 2, "a 0.5 slice of 42 tasks"

    # the served pre-labels and their scores: the confidence c of every pool task
    body = {
        "tasks": [tasks[t] for t in pool],
        "project": f"{pid}.1",
        "label_config": CONFIG_SINGLE,
    }
    results = client.post("/predict", json=body).get_json()["results"]
    served: dict[int, tuple[str, float]] = {}
    for t, pred in zip(pool, results, strict=True):
        (choice,) = pred["result"]
        served[t] = (choice["value"]["choices"][0], float(choice["score"]))
    recorded = {
        int(r[0]): r[1]
        for r in service.store.query(
            "SELECT task_id, confidence FROM control_tasks WHERE project_id = ? AND version = ?",
            (pid, version),
        )
    }
    assert set(recorded) == set(control)
    for t in control:
        assert recorded[t] == pytest.approx(served[t][1], abs=1e-6)
    conf = np.array([served[t][1] for t in pool])
    (row,) = service.store.query(
        "SELECT n, mean, var FROM control_pools WHERE project_id = ? AND version = ?",
        (pid, version),
    )
    assert row[0] == len(pool)
    assert row[1] == pytest.approx(conf.mean(), abs=1e-6)
    assert row[2] == pytest.approx(conf.var(), abs=1e-6)

    # a plain estimate before the labels; PPI falls back to it
    h = _honest(client, pid, version)
    assert h["ppi"]["method"] == "plain" and h["ppi"]["n"] == 0

    # annotators on the control tasks: the truth; the 4 least confident pre-labels are
    # corrected (shown the other label), the rest approved when the model was right
    other = {"zero": "one", "one": "zero"}
    unsure = set(sorted(control, key=lambda t: served[t][1])[:4])
    labels = []
    for k, t in enumerate(control):
        shown = other[truth[t]] if t in unsure else served[t][0]
        _annotate(client, 81_000 + k, tasks[t], pid, truth[t], shown, version)
        labels.append(ControlLabel(version, shown == truth[t], served[t][1]))
    h = _honest(client, pid, version)
    assert h["control_n"] == len(control)
    ppi = h["ppi"]
    assert ppi["method"] == "ppi" and 0 < ppi["lam"] <= 1
    assert (ppi["n"], ppi["n_confidence"], ppi["pool_n"]) == (len(control), len(control), len(pool))
    # the same numbers from what /predict served, independently of the store
    expected = ppi_accuracy(labels, {version: PoolConfidence(len(pool), conf.mean(), conf.var())})
    assert ppi["estimate"] == pytest.approx(expected.estimate, abs=1e-6)
    assert ppi["interval"] == pytest.approx(list(expected.interval or ()), abs=1e-6)
    assert ppi["interval"][0] <= ppi["estimate"] <= ppi["interval"][1]
    assert h["real_interval"] is not None
    # the data-wide estimate: the same labels on the pool's share, the version's own CV
    # accuracy on its labelled share (both as /versions reports them)
    details = next(
        d
        for d in client.get(f"/versions?project={pid}").get_json()["details"]
        if d["name"] == version
    )
    assert details["cv_accuracy"] is not None
    wide = data_wide_accuracy(
        labels,
        {version: PoolConfidence(len(pool), conf.mean(), conf.var())},
        {version: LabelledPart(details["n_labels"], details["cv_accuracy"])},
    )
    dw = h["data_wide"]
    assert dw["estimate"] == pytest.approx(wide.estimate, abs=1e-6)
    assert dw["unlabelled_share"] == pytest.approx(len(pool) / (len(pool) + details["n_labels"]))
    assert (dw["n"], dw["n_pool_only"]) == (len(control), 0)

    # the data lead's report reads the same from the backend's record, read-only
    report = _lead_report(pid, service, label_studio, tmp_path)
    (row_v,) = [r for r in report["honest"] if r["version"] == version]
    assert row_v["ppi"]["estimate"] == pytest.approx(ppi["estimate"], abs=1e-9)
    pooled = report["honest_all_versions"]["ppi"]
    assert pooled["method"] == "ppi" and pooled["estimate"] == pytest.approx(ppi["estimate"])
    # active learning's lift: the labelling order splits the labels into the random arm (the
    # control labels) and the selected ones (here the first labels only: too few to compare)
    lift = report["al_lift"]
    assert (lift["n_control"], lift["n_selected"]) == (len(control), len(first))
    assert lift["lift"] is None
    if len(control) < LIFT_MIN_CONTROL:
        assert f"{len(control)} control labels" in lift["reason"]
    else:
        assert f"{len(first)} labels on selected tasks" in lift["reason"]

    # the text report: the PPI column beside the plain one
    args = ["report", "--project", str(pid), "--model-dir", str(service.settings.model_dir)]
    args += ["--image-size", str(IMAGE_SIZE), "--cache-dir", str(tmp_path / "lead-cache")]
    text = CliRunner().invoke(
        cli,
        [*args, "--quiet"],
        env={"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token},
        catch_exceptions=False,
    )
    assert text.exit_code == 0, text.stderr
    assert "real (PPI)" in text.stdout
    section = text.stdout.split("real accuracy per version", 1)[1]
    line = next(ln for ln in section.splitlines() if ln.strip().startswith(version + " "))
    assert f"{ppi['estimate']:.0%}" in line and f"{ppi['interval'][0]:.0%}.." in line
    assert "on data" in section and f"{dw['interval'][0]:.0%}..{dw['interval'][1]:.0%}" in line
    assert "active learning vs random picks" in text.stdout and "not measured" in text.stdout

    # the dashboard's summary: the PPI estimate beside the plain one, labelled
    page = client.get(f"/dashboard?project={pid}")
    assert page.status_code == 200, page.get_data(as_text=True)[:500]
    html = page.get_data(as_text=True)
    assert 'id="control-slice"' in html and 'id="control-slice-ppi"' in html
    ppi_box = html.split('id="control-slice-ppi"', 1)[1].split("</div>", 1)[0]
    assert "prediction-powered" in ppi_box
    assert f"{100 * ppi['estimate']:.1f}%" in ppi_box
    data_box = html.split('id="control-slice-data"', 1)[1].split("</div>", 1)[0]
    assert "whole data" in data_box and f"{dw['n']} labels" in data_box
    lift_box = html.split('id="al-lift"', 1)[1].split("</div>", 1)[0]
    assert "active learning vs random picks" in lift_box and "not measured yet" in lift_box
