"""Smoke test of ``labelwheel up`` / ``labelwheel down`` (what ``make up`` / ``make down`` run).

The state dir is seeded with a copy of the session's migrated Label Studio data dir and matching
credentials, the way a second ``make up`` finds it (a first ``make up`` migrates for ~1 minute;
that path is the same code with a longer wait).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from e2e_helpers import wait_for

from labelwheel.demo import IMAGES_DIR, LS_DIR, STATE_FILE
from labelwheel.demo_data import DEMO_PROJECT_TITLE
from labelwheel.ls_api import LabelStudioClient
from labelwheel.ls_local import (
    LabelStudioStartError,
    copy_data_dir,
    free_port,
    log_in,
    port_is_free,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _labelwheel(
    *args: str, timeout: float = 600, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELWHEEL_", "MODEL_DIR"))}
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "labelwheel.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def _login_works(url: str, email: str, password: str) -> bool:
    """Log in through Label Studio's login form, then call its API with the session cookie."""
    try:
        log_in(url, email, password, timeout=30)
    except LabelStudioStartError:
        return False
    return True


def _pids(state_dir: Path) -> list[int]:
    state = json.loads((state_dir / STATE_FILE).read_text())
    return [int(e["pid"]) for e in state.get("pids", {}).values()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def test_e2e_labelwheel_up_and_down(tmp_path, ls_template_dir, ls_credentials, ls_bin) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    copy_data_dir(ls_template_dir, state_dir / LS_DIR)
    (state_dir / STATE_FILE).write_text(
        json.dumps(
            {
                "username": ls_credentials.username,
                "password": ls_credentials.password,
                "token": ls_credentials.token,
                "basic_auth_user": "labelwheel",
                "basic_auth_pass": secrets.token_urlsafe(18),
                "pids": {},
            }
        )
    )
    ls_port, backend_port = free_port(), free_port()
    while backend_port == ls_port:
        backend_port = free_port()
    common = [
        "--state-dir",
        str(state_dir),
        "--ls-port",
        str(ls_port),
        "--backend-port",
        str(backend_port),
        "--label-studio-bin",
        ls_bin,
    ]
    try:
        up = _labelwheel("up", "--detach", "--images", "30", *common)
        assert up.returncode == 0, up.stdout + up.stderr
        out = up.stdout

        # It printed the URL, the login and the project link, and they work.
        url = re.search(r"Label Studio\s+(http://127\.0\.0\.1:\d+)", out).group(1)
        assert url == f"http://127.0.0.1:{ls_port}"
        email, password = re.search(r"login\s+(\S+)\s+/\s+(\S+)", out).groups()
        assert (email, password) == (ls_credentials.username, ls_credentials.password)
        link = re.search(r"demo project\s+(\S+)", out).group(1)
        assert link.startswith(f"{url}/projects/")
        assert "Ctrl-C" not in out and "labelwheel down" in out
        assert _login_works(url, email, password)
        assert not _login_works(url, email, password + "x")

        # The demo project: 30 uploaded PNGs, each with a prediction of the project's version.
        client = LabelStudioClient(url, ls_credentials.token)
        demo = [p for p in client.list_projects() if p["title"] == DEMO_PROJECT_TITLE]
        assert len(demo) == 1
        pid = int(demo[0]["id"])
        assert link.startswith(f"{url}/projects/{pid}/")
        tasks = list(client.iter_tasks(pid))
        assert len(tasks) == 30
        assert all(t["data"]["image"].startswith("/data/upload/") for t in tasks)
        version = client.get_project(pid)["model_version"]
        predicted = {
            int(p["task"])
            for p in client.list_project_predictions(pid)
            if p["model_version"] == version
        }
        assert predicted == {t["id"] for t in tasks}
        assert len(list((state_dir / IMAGES_DIR).glob("*.png"))) == 30
        assert (state_dir / STATE_FILE).stat().st_mode & 0o077 == 0, "state.json is private"
        # The backend is up with basic auth, on the port asked for.
        health = requests.get(f"http://127.0.0.1:{backend_port}/health", timeout=10)
        assert health.status_code == 200
        assert (
            requests.get(f"http://127.0.0.1:{backend_port}/versions", timeout=10).status_code == 401
        )

        # Running it again while it runs: reported, nothing started twice.
        again = _labelwheel("up", "--detach", *common)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout

        # A busy port is reported (non-zero exit), not silently shifted.
        other = tmp_path / "other-state"
        busy = _labelwheel(
            "up",
            "--detach",
            "--state-dir",
            str(other),
            "--ls-port",
            str(ls_port),
            "--backend-port",
            str(free_port()),
            "--label-studio-bin",
            ls_bin,
        )
        assert busy.returncode != 0
        assert f"port {ls_port}" in busy.stderr and "already in use" in busy.stderr
        assert "Traceback" not in busy.stderr

        # down stops both processes.
        pids = _pids(state_dir)
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        down = _labelwheel("down", "--state-dir", str(state_dir))
        assert down.returncode == 0, down.stderr
        assert not any(_alive(p) for p in pids)
        # The kernel frees a killed process's listening socket shortly after it dies (seconds
        # on a loaded machine): give it that, not more.
        wait_for(
            lambda: port_is_free(ls_port) and port_is_free(backend_port),
            15,
            "both ports free after down",
            interval=0.2,
        )

        # up again re-uses the state: same project, no duplicate, no re-upload. This time on a
        # machine whose environment names a company proxy (one that cannot be reached): Label
        # Studio, the backend and `up` itself still reach each other on 127.0.0.1.
        dead_proxy = "http://127.0.0.1:9"
        up2 = _labelwheel(
            "up",
            "--detach",
            *common,
            extra_env={"HTTP_PROXY": dead_proxy, "HTTPS_PROXY": dead_proxy, "NO_PROXY": ""},
        )
        assert up2.returncode == 0, up2.stdout + up2.stderr
        assert "uploading" not in up2.stdout and "created project" not in up2.stdout
        client = LabelStudioClient(url, ls_credentials.token)
        demo = [p for p in client.list_projects() if p["title"] == DEMO_PROJECT_TITLE]
        assert [int(p["id"]) for p in demo] == [pid]
        assert len(list(client.iter_tasks(pid))) == 30
        assert len(client.list_ml_backends(pid)) == 1
        # Label Studio -> backend under that environment: reading the ML backend makes Label
        # Studio call its /health and /setup, and says whether they answered
        ml_id = int(client.list_ml_backends(pid)[0]["id"])
        detail = client.request("GET", f"/api/ml/{ml_id}").json()
        assert detail["state"] == "CO", detail
    finally:
        final = _labelwheel("down", "--state-dir", str(state_dir))
        assert final.returncode == 0, final.stderr
