"""``labelwheel doctor`` against a real Label Studio and real backend processes: one healthy
setup where every check passes, and deliberately broken ones (wrong token, backend down, webhook
without the auth header, unreadable storage and images, unservable config), each failing the
check it should with the fix, and exiting 1."""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from e2e_helpers import Backend, connect, create_project, wait_for
from test_e2e_s3_storage import S3_KEY_ID, S3_SECRET, moto_s3  # noqa: F401 (a fixture)

from labelwheel.cli import cli
from labelwheel.demo_data import image_data_uris
from labelwheel.ls_api import LabelStudioClient
from labelwheel.ls_local import LocalLabelStudio

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RECTANGLES_ONLY = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image"><Label value="digit"/></RectangleLabels>
</View>"""


def doctor(
    ls: LocalLabelStudio,
    project_id: int,
    *extra: str,
    api_key: str | None = None,
    backend: Backend | None = None,
    local_files: bool = True,
    extra_env: dict[str, str] | None = None,
) -> tuple[int, dict[str, dict[str, Any]], str]:
    """Run ``labelwheel doctor --json``; (exit code, checks by name, output)."""
    env: dict[str, str | None] = {
        **(extra_env or {}),
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": api_key or ls.token,
        "LABELWHEEL_BACKEND_URL": None,
        "LABELWHEEL_ALLOWED_HOSTS": None,
        "BASIC_AUTH_USER": backend.user if backend else None,
        "BASIC_AUTH_PASS": backend.password if backend else None,
        "LABELWHEEL_LOCAL_FILES_ROOT": str(ls.local_files_root) if local_files else None,
    }
    args = ["doctor", "--project", str(project_id), "--timeout", "30", *extra]
    result = CliRunner().invoke(cli, args, env=env)
    if "--json" not in extra:
        return result.exit_code, {}, result.output
    assert result.output.strip().startswith("{"), result.output
    body = json.loads(result.output)
    assert body["ok"] is (result.exit_code == 0)
    return result.exit_code, {c["name"]: c for c in body["checks"]}, result.output


def statuses(checks: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: c["status"] for name, c in checks.items()}


def local_storage(
    client: LabelStudioClient, ls: LocalLabelStudio, pid: int, images: list[Path]
) -> tuple[int, Path]:
    """A Local Files storage of the project over a new folder holding ``images``, synced."""
    assert ls.local_files_root is not None
    folder = ls.local_files_root / f"doctor-{secrets.token_hex(4)}"
    folder.mkdir()
    for path in images:
        shutil.copy(path, folder / path.name)
    storage = client.request(
        "POST",
        "/api/storages/localfiles",
        json={
            "project": pid,
            "path": str(folder),
            "title": "doctor folder",
            "use_blob_urls": True,
            "regex_filter": r".*\.png",
        },
    ).json()
    client.request("POST", f"/api/storages/localfiles/{storage['id']}/sync")
    wait_for(
        lambda: sum(1 for _ in client.iter_tasks(pid)) >= len(images),
        60,
        "the local storage's tasks",
    )
    return int(storage["id"]), folder


@pytest.fixture(scope="module")
def healthy(label_studio: LocalLabelStudio, backend: Backend, demo_images: Any) -> dict[str, Any]:
    """A project with uploads, data: URIs and a Local Files storage, connected to the backend."""
    client = LabelStudioClient(label_studio.url, label_studio.token, timeout=120)
    pid = create_project(client, demo_images.labels, title="doctor healthy")
    client.import_files(pid, demo_images.paths[:3])
    client.import_tasks(pid, [{"image": u} for u in image_data_uris(demo_images.paths[3:5])])
    storage_id, _folder = local_storage(client, label_studio, pid, list(demo_images.paths[5:8]))
    connect(client, pid, backend, retrieve=False)
    return {"pid": pid, "storage": storage_id, "client": client}


def test_doctor_healthy_setup_passes_every_check(
    label_studio: LocalLabelStudio, backend: Backend, healthy: dict[str, Any]
) -> None:
    pid = healthy["pid"]
    code, checks, out = doctor(label_studio, pid, "--json", backend=backend)

    assert code == 0, out
    expected = {
        "label_studio",
        "token",
        "project",
        "label_config",
        "ml_backend",
        "backend_from_label_studio",
        "backend_from_here",
        "webhook",
        f"storage:localfiles:{healthy['storage']}",
        "media:upload",
        "media:data-uri",
        "media:local-files",
    }
    assert set(checks) == expected, out
    assert set(statuses(checks).values()) == {"pass"}, out
    assert checks["label_studio"]["details"]["version"] == "1.23.2"
    assert checks["token"]["details"]["kind"] == "legacy"
    assert checks["backend_from_label_studio"]["details"]["state"] == "connected"
    assert checks["backend_from_here"]["message"].endswith("basic auth accepted")
    assert checks["webhook"]["details"]["backend_status_with_webhook_headers"] == 200
    assert checks["media:upload"]["details"]["width"] == 112
    assert checks["media:local-files"]["details"]["tasks_sampled"] == 3
    storage = checks[f"storage:localfiles:{healthy['storage']}"]
    assert "/data/local-files/?d=doctor-" in storage["details"]["ref"]

    # the text form: one line per check, a summary, exit 0
    code, _, text = doctor(label_studio, pid, backend=backend)
    assert code == 0
    lines = text.strip().splitlines()
    assert len(lines) == len(expected) + 1
    assert all(line.startswith("[PASS] ") for line in lines[:-1]), text
    assert lines[-1].startswith("all checks passed: 12 passed")

    # a --backend-url that is not the registered one: said so, with the registered URL
    code, checks, out = doctor(
        label_studio, pid, "--json", "--backend-url", "http://127.0.0.1:9", backend=backend
    )
    assert code == 1
    assert checks["ml_backend"]["status"] == "fail"
    assert checks["ml_backend"]["details"]["registered"] == [backend.url]
    assert checks["backend_from_label_studio"]["status"] == "skip"
    assert checks["backend_from_here"]["status"] == "fail"
    assert checks["media:upload"]["status"] == "pass"


def test_doctor_reports_the_image_proxy(
    label_studio: LocalLabelStudio, backend: Backend, healthy: dict[str, Any]
) -> None:
    pid = healthy["pid"]
    # Label Studio is http://: an HTTPS_PROXY is not used for it, but the image fetcher reads it
    code, checks, out = doctor(
        label_studio,
        pid,
        "--json",
        backend=backend,
        extra_env={"HTTPS_PROXY": "socks5://ops:hunter2@proxy.corp:1080"},
    )
    assert code == 1, out
    proxy = checks["proxy"]
    assert proxy["status"] == "fail"
    assert "HTTPS_PROXY" in proxy["message"] and "only http:// proxies" in proxy["message"]
    assert "hunter2" not in out
    assert "http://[user:password@]host:port" in proxy["fix"]

    code, checks, out = doctor(
        label_studio,
        pid,
        "--json",
        backend=backend,
        extra_env={"HTTPS_PROXY": "http://ops:hunter2@proxy.corp:3128"},
    )
    assert code == 0, out
    assert checks["proxy"]["status"] == "pass"
    assert "https=http://proxy.corp:3128" in checks["proxy"]["message"]
    assert "hunter2" not in out
    assert checks["media:upload"]["status"] == "pass"  # http:// Label Studio: not proxied


def test_doctor_personal_access_token_refreshes(
    label_studio: LocalLabelStudio,
    backend: Backend,
    healthy: dict[str, Any],
    personal_access_token: str,
) -> None:
    pat = personal_access_token
    code, checks, out = doctor(label_studio, healthy["pid"], "--json", api_key=pat, backend=backend)
    assert code == 0, out
    token = checks["token"]
    assert token["status"] == "pass"
    assert token["details"]["kind"] == "personal_access_token"
    assert "refresh works" in token["message"]
    assert 0 < token["details"]["access_expires_in_s"] <= 300
    # the images come through with the PAT's access token too
    assert checks["media:upload"]["status"] == "pass"


def test_doctor_wrong_token_fails_with_the_fix(
    label_studio: LocalLabelStudio, healthy: dict[str, Any]
) -> None:
    code, checks, out = doctor(
        label_studio, healthy["pid"], "--json", api_key=secrets.token_hex(20)
    )
    assert code == 1
    assert checks["label_studio"]["status"] == "pass"
    assert checks["token"]["status"] == "fail"
    assert "refused the legacy token (HTTP 401" in checks["token"]["message"]
    assert "personal access token" in checks["token"]["fix"]
    # everything that needs the token is skipped, not failed again
    later = {n: s for n, s in statuses(checks).items() if n not in ("label_studio", "token")}
    assert later and set(later.values()) == {"skip"}, out

    # a key that is not a legacy token is tried as a personal access token, and does not refresh
    code, _, text = doctor(label_studio, healthy["pid"], api_key="not.a.token")
    assert code == 1
    assert "[FAIL] API token valid: the key is not a 40-hex legacy token" in text
    assert "fix: create a new personal access token" in text


def test_doctor_label_studio_down(healthy: dict[str, Any], label_studio: LocalLabelStudio) -> None:
    down = dataclasses.replace(label_studio, url="http://127.0.0.1:9")  # nothing listens
    code, checks, _ = doctor(down, healthy["pid"], "--json")
    assert code == 1
    assert checks["label_studio"]["status"] == "fail"
    assert "label-studio start" in checks["label_studio"]["fix"]
    assert checks["token"]["status"] == "skip"


def test_doctor_backend_down(
    label_studio: LocalLabelStudio, backend_factory: Any, client: LabelStudioClient, demo_images
) -> None:
    other = backend_factory(label_studio.url, label_studio.token)
    pid = create_project(client, demo_images.labels, title="doctor backend down")
    client.import_files(pid, demo_images.paths[:2])
    connect(client, pid, other, retrieve=False)
    other.stop()

    code, checks, out = doctor(label_studio, pid, "--json", backend=other)

    assert code == 1
    s = statuses(checks)
    assert s["ml_backend"] == "pass"
    assert s["backend_from_label_studio"] == "fail", out
    assert checks["backend_from_label_studio"]["details"]["state"] == "disconnected"
    assert "labelwheel serve" in checks["backend_from_label_studio"]["fix"]
    assert s["backend_from_here"] == "fail"
    assert "labelwheel serve" in checks["backend_from_here"]["fix"]
    # the webhook cannot be tried, but its header matches the ML backend's user: a warning
    assert s["webhook"] == "warn"
    # the images do not need the backend
    assert s["media:upload"] == "pass"


def test_doctor_webhook_without_auth_header(
    label_studio: LocalLabelStudio, backend: Backend, client: LabelStudioClient, demo_images
) -> None:
    pid = create_project(client, demo_images.labels, title="doctor webhook")
    client.import_files(pid, demo_images.paths[:2])
    connect(client, pid, backend, retrieve=False)
    (hook,) = [h for h in client.list_webhooks(pid) if h["url"].startswith(backend.url)]
    client.request("PATCH", f"/api/webhooks/{hook['id']}", json={"headers": {}})

    code, checks, out = doctor(label_studio, pid, "--json", backend=backend)

    assert code == 1
    webhook = checks["webhook"]
    assert webhook["status"] == "fail", out
    assert "carries no Authorization header" in webhook["message"]
    assert webhook["details"]["backend_status_with_webhook_headers"] == 401
    assert "labelwheel connect" in webhook["fix"]
    failed = [n for n, s in statuses(checks).items() if s == "fail"]
    assert failed == ["webhook"], out

    # `labelwheel connect` repairs it, and doctor says so
    connect(client, pid, backend, retrieve=False)
    code, checks, out = doctor(label_studio, pid, "--json", backend=backend)
    assert code == 0, out
    assert checks["webhook"]["status"] == "pass"


def test_doctor_unreadable_storage_and_images(
    label_studio: LocalLabelStudio, backend: Backend, client: LabelStudioClient, demo_images
) -> None:
    pid = create_project(client, demo_images.labels, title="doctor unreadable")
    (upload_task,) = client.import_files(pid, demo_images.paths[:1])
    storage_id, folder = local_storage(client, label_studio, pid, list(demo_images.paths[1:3]))
    client.import_tasks(pid, [{"image": "s3://no-such-bucket/digits/0.png"}])
    connect(client, pid, backend, retrieve=False)
    # the storage's directory is removed, and the uploaded file vanishes from Label Studio
    shutil.rmtree(folder)
    upload = client.get_task(upload_task)["data"]["image"]
    media = label_studio.data_dir / "media" / upload.removeprefix("/data/")
    assert media.is_file(), media
    media.unlink()

    code, checks, out = doctor(label_studio, pid, "--json", backend=backend)

    assert code == 1
    s = statuses(checks)
    for name in ("label_studio", "token", "ml_backend", "backend_from_here", "webhook"):
        assert s[name] == "pass", out
    storage = checks[f"storage:localfiles:{storage_id}"]
    assert storage["status"] == "fail", out
    assert "not found" in storage["message"]
    assert "LOCAL_FILES_DOCUMENT_ROOT" in storage["fix"]
    assert s["media:local-files"] == "fail"
    assert s["media:upload"] == "fail"
    # Label Studio 1.23.2 answers 500 (not 404) for an upload whose file is gone
    assert "HTTP 500" in checks["media:upload"]["message"]
    assert "import the file again" in checks["media:upload"]["fix"]
    assert s["media:s3"] == "fail"
    assert "an S3 storage" in checks["media:s3"]["fix"]
    assert "HTTP 404" in checks["media:s3"]["message"]  # Label Studio: no storage for this URI

    # without LABELWHEEL_LOCAL_FILES_ROOT the backend cannot read local files at all
    code, checks, _ = doctor(label_studio, pid, "--json", backend=backend, local_files=False)
    assert checks["media:local-files"]["status"] == "fail"
    assert "LABELWHEEL_LOCAL_FILES_ROOT" in checks["media:local-files"]["fix"]


def test_doctor_unservable_config_and_no_backend(
    label_studio: LocalLabelStudio, client: LabelStudioClient
) -> None:
    pid = int(client.create_project("doctor rectangles", RECTANGLES_ONLY)["id"])
    code, _, text = doctor(label_studio, pid)
    assert code == 1
    assert "[FAIL] label config servable: labelwheel cannot serve this config" in text
    assert "[FAIL] ML backend registered: project" in text
    assert f"fix: run `labelwheel connect --project {pid}" in text
    assert "some checks failed" in text.splitlines()[-1]


def test_doctor_help_does_not_import_torch() -> None:
    code = (
        "import sys; from labelwheel.cli import main\n"
        "try:\n    main(['doctor', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--json" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "False"


# -- a cloud storage: S3 on moto's standalone server (fixture shared with the S3 storage test) --


def test_doctor_s3_storage_read_through_label_studio(
    label_studio: LocalLabelStudio,
    backend: Backend,
    client: LabelStudioClient,
    demo_images: Any,
    moto_s3: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    bucket = f"doctor-{secrets.token_hex(3)}"
    s3 = moto_s3.client()
    s3.create_bucket(Bucket=bucket)
    keys = [f"imgs/{p.name}" for p in demo_images.paths[:3]]
    for key, path in zip(keys, demo_images.paths[:3], strict=True):
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), ContentType="image/png")
    pid = create_project(client, demo_images.labels, title="doctor s3")
    storage = client.request(
        "POST",
        "/api/storages/s3/",
        json={
            "project": pid,
            "title": "doctor bucket",
            "bucket": bucket,
            "prefix": "imgs",
            "regex_filter": r".*\.png",
            "use_blob_urls": True,
            "presign": True,
            "aws_access_key_id": S3_KEY_ID,
            "aws_secret_access_key": S3_SECRET,
            "region_name": "us-east-1",
            "s3_endpoint": moto_s3.endpoint,
        },
    ).json()
    client.request("POST", f"/api/storages/s3/{storage['id']}/sync")
    wait_for(lambda: sum(1 for _ in client.iter_tasks(pid)) == 3, 120, "the S3 storage's tasks")
    connect(client, pid, backend, retrieve=False)

    code, checks, out = doctor(label_studio, pid, "--json", backend=backend)

    assert code == 0, out
    s3_check = checks[f"storage:s3:{storage['id']}"]
    assert s3_check["status"] == "pass", out
    assert s3_check["details"]["ref"].startswith(f"s3://{bucket}/imgs/")  # the raw URI
    assert s3_check["details"]["width"] == 112
    assert checks["media:s3"]["status"] == "pass"
    assert checks["media:s3"]["details"]["tasks_sampled"] == 3

    # the objects vanish from the bucket: the sample cannot be read (measured: HTTP 403)
    for key in keys:
        s3.delete_object(Bucket=bucket, Key=key)
    code, checks, out = doctor(label_studio, pid, "--json", backend=backend)
    assert code == 1
    s3_check = checks[f"storage:s3:{storage['id']}"]
    assert s3_check["status"] == "fail", out
    assert "HTTP 403" in s3_check["message"] or "HTTP 404" in s3_check["message"]
    assert "an S3 storage" in s3_check["fix"]
    assert checks["media:s3"]["status"] == "fail"
