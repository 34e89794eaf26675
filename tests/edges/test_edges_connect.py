"""labelwheel.connect: a real Label Studio connected to the real backend app (served over HTTP)."""

from __future__ import annotations

import base64
import io
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from PIL import Image

from labelwheel.connect import (
    VIEW_TITLE,
    ConnectError,
    basic_auth_header,
    connect_command,
    connect_project,
    publish_version,
)
from labelwheel.label_config import image_classification_config, parse_classification_config
from labelwheel.ls_api import LabelStudioClient
from labelwheel.ls_local import LocalLabelStudio, free_port

CONFIG = image_classification_config(["red", "green"])
RED = [(250, 10, 10), (220, 40, 30), (200, 0, 20), (240, 60, 60)]
GREEN = [(10, 240, 10), (40, 200, 30), (0, 220, 50), (60, 250, 60)]


class _Backend:
    def __init__(self, url: str, user: str, password: str, app: Any, server: Any) -> None:
        self.url = url
        self.auth = (user, password)
        self.app = app
        self.server = server


@pytest.fixture(scope="module")
def backend(
    label_studio: LocalLabelStudio, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Backend]:
    """The real labelwheel backend app, served by werkzeug in a thread, with basic auth."""
    import torch
    from werkzeug.serving import make_server

    from labelwheel.ml_backend import create_app, get_service

    torch.set_num_threads(1)
    user, password = "lw-" + secrets.token_hex(3), secrets.token_urlsafe(16)
    app = create_app(
        {
            "MODEL_DIR": str(tmp_path_factory.mktemp("connect-model")),
            "LABELWHEEL_IMAGE_SIZE": "64",
            "LABELWHEEL_RETRAIN_EVERY": "0",
            "LABELWHEEL_PUBLISH": "false",
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": label_studio.token,
            "BASIC_AUTH_USER": user,
            "BASIC_AUTH_PASS": password,
            "LABELWHEEL_LOG_LEVEL": "WARNING",
        },
        environ={},
    )
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield _Backend(f"http://127.0.0.1:{server.server_port}", user, password, app, server)
    finally:
        server.shutdown()
        get_service(app).close()


def _data_uri(color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), color).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _project(client: LabelStudioClient, tmp_path: Path, n_files: int = 3) -> tuple[int, list[int]]:
    pid = int(client.create_project(f"connect {secrets.token_hex(3)}", CONFIG)["id"])
    paths = []
    for i in range(n_files):
        path = tmp_path / f"file{i}.png"
        Image.new("RGB", (24, 24), (RED + GREEN)[i]).save(path)
        paths.append(path)
    ids = client.import_files(pid, paths)
    ids += client.import_tasks(pid, [{"image": _data_uri(RED[3])}, {"image": _data_uri(GREEN[3])}])
    return pid, ids


def _counts(client: LabelStudioClient, pid: int) -> tuple[int, int, int]:
    return (
        len(client.list_ml_backends(pid)),
        len(client.list_webhooks(pid)),
        sum(1 for v in client.list_views(pid) if v["data"].get("title") == VIEW_TITLE),
    )


@pytest.mark.e2e
@pytest.mark.slow
def test_connect_project_and_rerun(
    ls_client: LabelStudioClient, backend: _Backend, tmp_path: Path
) -> None:
    pid, ids = _project(ls_client, tmp_path)
    result = connect_project(ls_client, pid, backend.url, basic_auth=backend.auth)
    assert result.project_id == pid
    assert result.tasks == len(ids) == 5
    assert result.predicted == 5
    assert result.model_version
    assert result.warnings == []
    assert ls_client.get_project(pid)["model_version"] == result.model_version

    (ml,) = ls_client.list_ml_backends(pid)
    assert ml["id"] == result.ml_backend_id
    assert ml["auth_method"] == "BASIC_AUTH" and ml["basic_auth_user"] == backend.auth[0]
    assert ml["url"] == backend.url
    (hook,) = ls_client.list_webhooks(pid)
    assert hook["url"] == f"{backend.url}/webhook"
    assert hook["headers"]["Authorization"] == basic_auth_header(*backend.auth)["Authorization"]
    assert hook["send_for_all_actions"] is True
    (view,) = [v for v in ls_client.list_views(pid) if v["data"].get("title") == VIEW_TITLE]
    assert view["id"] == result.view_id
    assert view["data"]["ordering"] == ["tasks:predictions_score"]

    cfg = parse_classification_config(CONFIG)
    for tid in ids:
        preds = ls_client.get_task(tid)["predictions"]
        assert len(preds) == 1
        (pred,) = preds
        assert pred["model_version"] == result.model_version
        assert 0.0 <= pred["score"] < 1.0
        assert cfg.validate_prediction({"result": pred["result"]}) == []

    # the queue is ordered by the backend's score, lowest first
    ordered = list(ls_client.iter_tasks(pid, view_id=result.view_id, fields="all"))
    scores = [t["predictions"][0]["score"] for t in ordered]
    assert scores == sorted(scores)

    # re-running repairs, never duplicates; no prediction is asked for twice
    again = connect_project(ls_client, pid, backend.url, basic_auth=backend.auth)
    assert (again.ml_backend_id, again.view_id) == (result.ml_backend_id, result.view_id)
    assert again.webhook_ids == result.webhook_ids
    assert _counts(ls_client, pid) == (1, 1, 1)
    assert sum(len(ls_client.get_task(t)["predictions"]) for t in ids) == 5
    assert "is connected to labelwheel" in again.summary(ls_client.url)


@pytest.mark.e2e
def test_connect_repairs_a_broken_webhook(
    ls_client: LabelStudioClient, backend: _Backend, tmp_path: Path
) -> None:
    pid, _ = _project(ls_client, tmp_path, n_files=1)
    connect_project(ls_client, pid, backend.url, basic_auth=backend.auth, retrieve=False)
    (hook,) = ls_client.list_webhooks(pid)
    ls_client.request("PATCH", f"/api/webhooks/{hook['id']}", json={"headers": {}})
    connect_project(ls_client, pid, backend.url, basic_auth=backend.auth, retrieve=False)
    (hook,) = ls_client.list_webhooks(pid)
    assert hook["headers"] == basic_auth_header(*backend.auth)
    assert _counts(ls_client, pid) == (1, 1, 1)


@pytest.mark.e2e
def test_connect_reports_unsupported_config(
    ls_client: LabelStudioClient, backend: _Backend
) -> None:
    boxes = (
        '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">'
        '<Label value="cat"/></RectangleLabels></View>'
    )
    pid = int(ls_client.create_project(f"boxes {secrets.token_hex(3)}", boxes)["id"])
    with pytest.raises(ConnectError) as e:
        connect_project(ls_client, pid, backend.url, basic_auth=backend.auth)
    message = str(e.value)
    assert "could not connect the ML backend" in message
    assert "/setup" in message  # Label Studio's own message
    assert "RectangleLabels" in message  # and why
    assert ls_client.list_ml_backends(pid) == []


@pytest.mark.e2e
def test_connect_reports_wrong_basic_auth(
    ls_client: LabelStudioClient, backend: _Backend, tmp_path: Path
) -> None:
    pid, _ = _project(ls_client, tmp_path, n_files=1)
    with pytest.raises(ConnectError, match="refused the basic-auth credentials"):
        connect_project(ls_client, pid, backend.url, basic_auth=(backend.auth[0], "wrong"))


def test_connect_reports_unreachable_backend() -> None:
    client = LabelStudioClient(f"http://127.0.0.1:{free_port()}", "a" * 40)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectError, match=f"backend at {url} is not reachable.*labelwheel serve"):
        connect_project(client, 1, url)


def test_cli_usage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    r = runner.invoke(connect_command, ["--project", "1"])
    assert r.exit_code == 2 and "LABEL_STUDIO_URL" in r.output
    r = runner.invoke(connect_command, ["--project", "1", "--url", "http://127.0.0.1:1"])
    assert r.exit_code == 2 and "LABEL_STUDIO_API_KEY" in r.output
    r = runner.invoke(
        connect_command,
        ["--project", "1", "--url", "http://127.0.0.1:1", "--api-key", "k"],
        env={"BASIC_AUTH_USER": "u"},
    )
    assert r.exit_code == 2 and "BASIC_AUTH_PASS" in r.output
    backend = f"http://127.0.0.1:{free_port()}"
    r = runner.invoke(
        connect_command,
        [
            "--project",
            "1",
            "--url",
            "http://127.0.0.1:1",
            "--api-key",
            "k",
            "--backend-url",
            backend,
        ],
    )
    assert r.exit_code == 1
    assert "not reachable" in r.output and "Traceback" not in r.output
    help_text = runner.invoke(connect_command, ["--help"]).output
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "LABELWHEEL_BACKEND_URL"):
        assert name in help_text


@pytest.mark.e2e
def test_cli_connect_from_environment(
    label_studio: LocalLabelStudio, ls_client: LabelStudioClient, backend: _Backend, tmp_path: Path
) -> None:
    pid, _ = _project(ls_client, tmp_path, n_files=1)
    env = {
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "LABELWHEEL_BACKEND_URL": backend.url,
        "BASIC_AUTH_USER": backend.auth[0],
        "BASIC_AUTH_PASS": backend.auth[1],
    }
    r = CliRunner().invoke(connect_command, ["--project", str(pid)], env=env)
    assert r.exit_code == 0, r.output
    assert f"project {pid}" in r.output and "3 of 3 tasks" in r.output
    assert VIEW_TITLE in r.output
    r = CliRunner().invoke(connect_command, ["--project", "987654"], env=env)
    assert r.exit_code == 1 and "cannot read project 987654" in r.output


def _wait_for_version(backend: _Backend, pid: int, timeout: float = 240.0) -> str:
    deadline = time.monotonic() + timeout
    headers = basic_auth_header(*backend.auth)
    while time.monotonic() < deadline:
        body = requests.get(
            f"{backend.url}/versions", params={"project": pid}, headers=headers, timeout=10
        ).json()
        serving = [d["name"] for d in body.get("details", []) if d.get("serving")]
        if serving:
            return str(serving[0])
        time.sleep(1)
    raise AssertionError(f"no trained version within {timeout} s: {body}")


@pytest.mark.e2e
@pytest.mark.slow
def test_publish_version_after_training(
    ls_client: LabelStudioClient, backend: _Backend, tmp_path: Path
) -> None:
    pid = int(ls_client.create_project(f"publish {secrets.token_hex(3)}", CONFIG)["id"])
    colors = RED + GREEN
    ids = ls_client.import_tasks(pid, [{"image": _data_uri(c)} for c in colors])
    first = connect_project(ls_client, pid, backend.url, basic_auth=backend.auth)
    assert first.predicted == len(ids)
    cfg = parse_classification_config(CONFIG)
    labelled = {ids[0]: "red", ids[1]: "red", ids[4]: "green", ids[5]: "green"}
    for tid, label in labelled.items():
        result = [
            {
                "from_name": cfg.from_name,
                "to_name": cfg.to_name,
                "type": "choices",
                "value": {"choices": [label]},
            }
        ]
        ls_client.create_annotation(tid, result)
    ls_client.train(first.ml_backend_id)  # START_TRAINING
    version = _wait_for_version(backend, pid)
    assert version != first.model_version

    asked = publish_version(ls_client, pid, version)
    unlabelled = [t for t in ids if t not in labelled]
    assert asked == len(unlabelled)
    assert ls_client.get_project(pid)["model_version"] == version
    for tid in ids:
        versions = [p["model_version"] for p in ls_client.get_task(tid)["predictions"]]
        assert (version in versions) == (tid in unlabelled)
    # the queue now ranks by the new version
    nxt = ls_client.next_task(pid, view_id=first.view_id)
    assert nxt is not None and nxt["id"] in unlabelled
    # nothing left to predict: nothing asked, version unchanged
    assert publish_version(ls_client, pid, "v-nothing", tasks=[]) == 0
    assert ls_client.get_project(pid)["model_version"] == version
