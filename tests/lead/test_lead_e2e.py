"""The lead commands against a real Label Studio: the plan's view, bad input, report, tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from labelwheel.cli import cli
from labelwheel.label_config import image_classification_config
from labelwheel.ls_api import LabelStudioClient

torch.set_num_threads(1)
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def client(label_studio) -> LabelStudioClient:
    return LabelStudioClient(label_studio.url, label_studio.token)


@pytest.fixture(scope="module")
def project(make_ls_project) -> dict[str, Any]:
    """36 MNIST uploads (0, 1, 7), 15 annotated, one approval and one correction of v1."""
    return make_ls_project("lead e2e")


def run(args: list[str], ls, cache: Path, api_key: str | None = None) -> tuple[int, str, str]:
    env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": api_key or ls.token, "MODEL_DIR": ""}
    result = CliRunner().invoke(
        cli,
        [*args, "--image-size", "32", "--cache-dir", str(cache), "--quiet"],
        env=env,
        catch_exceptions=False,
    )
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lead-cache")


def _our_views(client, pid: int) -> list[dict[str, Any]]:
    return [v for v in client.list_views(pid) if v["data"]["title"].startswith("labelwheel: next")]


def _view_task_ids(client, pid: int, view_id: int) -> list[int]:
    return [t["id"] for t in client.iter_tasks(pid, view_id=view_id)]


def test_plan_writes_one_view_in_rank_order(client, project, label_studio, cache) -> None:
    pid = project["id"]
    code, out, err = run(
        ["plan", "--project", str(pid), "--budget", "6", "--strategy", "margin", "--json"],
        label_studio,
        cache,
    )
    assert code == 0, err
    data = json.loads(out)
    picks = [p["task_id"] for p in data["picks"]]
    assert len(picks) == 6 and not set(picks) & project["labelled"]
    views = _our_views(client, pid)
    assert [v["data"]["title"] for v in views] == ["labelwheel: next 6"]
    assert data["view"]["id"] == views[0]["id"]
    assert _view_task_ids(client, pid, views[0]["id"]) == picks
    # The labelling stream of that view serves the most informative task first.
    nxt = client.next_task(pid, view_id=views[0]["id"])
    assert nxt is not None and nxt["id"] == picks[0]

    # Re-running replaces the view (one view, new title, new tasks), and clears old ranks.
    code, out, err = run(
        ["plan", "--project", str(pid), "--budget", "3", "--strategy", "kcenter", "--json"],
        label_studio,
        cache,
    )
    assert code == 0, err
    picks2 = [p["task_id"] for p in json.loads(out)["picks"]]
    views = _our_views(client, pid)
    assert [v["data"]["title"] for v in views] == ["labelwheel: next 3"]
    assert _view_task_ids(client, pid, views[0]["id"]) == picks2
    ranked = {t["id"]: t["data"].get("labelwheel_rank") for t in client.iter_tasks(pid)}
    assert {tid for tid, r in ranked.items() if r is not None} == set(picks2)
    assert [ranked[t] for t in picks2] == [1, 2, 3]


def _snapshot(client, pid: int) -> tuple[list[Any], list[Any]]:
    tasks = sorted((t["id"], json.dumps(t["data"], sort_keys=True)) for t in client.iter_tasks(pid))
    views = sorted((v["id"], json.dumps(v["data"], sort_keys=True)) for v in client.list_views(pid))
    return tasks, views


def test_budget_larger_than_pool_writes_nothing(client, project, label_studio, cache) -> None:
    pid = project["id"]
    before = _snapshot(client, pid)
    code, _, err = run(["plan", "--project", str(pid), "--budget", "22"], label_studio, cache)
    assert code == 1 and "larger than the unlabelled pool (21 items)" in err
    assert _snapshot(client, pid) == before


def test_unknown_project(label_studio, cache) -> None:
    code, _, err = run(["plan", "--project", "987654", "--budget", "2"], label_studio, cache)
    assert code == 1 and "project 987654 not found" in err


def test_wrong_token(label_studio, cache) -> None:
    code, _, err = run(["report", "--project", "1"], label_studio, cache, api_key="0" * 40)
    assert code == 1 and "401" in err and "Traceback" not in err


def test_non_classification_config_writes_nothing(client, label_studio, cache, tmp_path) -> None:
    xml = (
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="box" toName="image"><Label value="car"/></RectangleLabels></View>'
    )
    p = client.create_project("boxes only", xml)
    path = tmp_path / "a.png"
    Image.new("RGB", (20, 20), "red").save(path)
    client.import_files(p["id"], [path])
    before = _snapshot(client, p["id"])
    code, _, err = run(["plan", "--project", str(p["id"]), "--budget", "1"], label_studio, cache)
    assert code == 1 and "Choices" in err
    assert _snapshot(client, p["id"]) == before


def test_project_without_tasks(client, label_studio, cache) -> None:
    p = client.create_project("empty one", image_classification_config(["a", "b"]))
    code, _, err = run(["coverage", "--project", str(p["id"])], label_studio, cache)
    assert code == 1 and "has no tasks" in err


def test_report_against_label_studio(project, label_studio, cache) -> None:
    code, out, err = run(
        ["report", "--project", str(project["id"]), "--json", "--cost-per-label", "1"],
        label_studio,
        cache,
    )
    assert code == 0, err
    rep = json.loads(out)
    assert rep["pool_size"] == 36 and rep["labeled"] == 15
    assert rep["class_balance"] == {"0": 5, "1": 5, "7": 5}
    # Acceptance from Label Studio's own records: one approval, one correction of v1.
    assert [(a["version"], a["approvals"], a["corrections"]) for a in rep["acceptance"]] == [
        ("v1", 1, 1)
    ]
    assert rep["acceptance"][0]["source"] == "label-studio"


def test_forecast_and_coverage_with_personal_access_token(
    client, project, label_studio, cache, tmp_path, personal_access_token
) -> None:
    pat = personal_access_token
    code, out, err = run(
        ["forecast", "--project", str(project["id"]), "--target", "0.99", "--json"],
        label_studio,
        cache,
        api_key=pat,
    )
    assert code == 0, err
    assert json.loads(out)["status"] in {
        "reachable",
        "reached",
        "out_of_reach",
        "too_little_history",
    }
    png = tmp_path / "cov.png"
    code, out, err = run(
        ["coverage", "--project", str(project["id"]), "--out", str(png)],
        label_studio,
        cache,
        api_key=pat,
    )
    assert code == 0, err
    assert "holes:" in out and png.read_bytes()[:4] == b"\x89PNG"


def test_history_and_acceptance_from_the_backend_store(
    project, label_studio, cache, tmp_path, digits
) -> None:
    """With MODEL_DIR, versions give the learning curve and the store gives acceptance."""
    import numpy as np

    from labelwheel.head import LinearProbe
    from labelwheel.ml_backend.store import Store

    pid = project["id"]
    store = Store(tmp_path / "model")
    x, y = digits  # a real learning curve stands in for the versions' cross-validated accuracy
    order = np.random.default_rng(0).permutation(len(y))
    test = order[1400:]
    for number, n in enumerate((20, 40, 80, 160, 320), start=1):
        idx = order[:n]
        acc = float(np.mean(LinearProbe().fit(x[idx], y[idx]).predict(x[test]) == y[test]))
        store.add_version(pid, number, n, acc, {"cv_accuracy": acc}, f"v{number}.joblib")
    for i, feedback in enumerate(["approval", "approval", "correction"]):
        store.apply_annotation(
            annotation_id=1000 + i,
            task_id=1000 + i,
            project_id=pid,
            labels=["1"],
            image_ref=None,
            was_cancelled=False,
            feedback=feedback,
            prediction_version="v2",
            action="ANNOTATION_CREATED",
            payload=None,
        )
    store.close()
    args = ["--project", str(pid), "--model-dir", str(tmp_path / "model"), "--json"]
    code, out, err = run(["forecast", *args, "--target", "0.97"], label_studio, cache)
    assert code == 0, err
    fc = json.loads(out)
    assert fc["history"] == "versions"
    assert [p["source"] for p in fc["points"]] == ["v1", "v2", "v3", "v4", "v5"]
    assert fc["status"] in {"reachable", "out_of_reach"} and fc["fit"] is not None
    code, out, err = run(["report", *args], label_studio, cache)
    assert code == 0, err
    acc = json.loads(out)["acceptance"]
    assert [(a["version"], a["approvals"], a["corrections"], a["source"]) for a in acc] == [
        ("v2", 2, 1, "backend")
    ]


def test_project_whose_images_cannot_be_read(client, label_studio, cache) -> None:
    p = client.create_project("foreign images", image_classification_config(["a", "b"]))
    client.import_tasks(p["id"], [{"image": "http://images.invalid/cat.png"}] * 2)
    before = _snapshot(client, p["id"])
    code, _, err = run(["plan", "--project", str(p["id"]), "--budget", "1"], label_studio, cache)
    assert code == 1 and "no readable images" in err
    assert _snapshot(client, p["id"]) == before
