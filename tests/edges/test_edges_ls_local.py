"""labelwheel.ls_local: starting and stopping a real Label Studio."""

from __future__ import annotations

import os
import socket
import sqlite3
import stat
from pathlib import Path

import pytest
import requests

from labelwheel.ls_local import (
    LabelStudioNotInstalledError,
    LabelStudioStartError,
    LocalLabelStudio,
    find_ls_bin,
    free_port,
    log_in,
    ls_environment,
    port_is_free,
    start_label_studio,
)

TOKEN = "0123456789abcdef0123456789abcdef01234567"


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-label-studio"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_missing_binary_says_make_ls_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELWHEEL_LS_BIN", str(tmp_path / "nope" / "label-studio"))
    with pytest.raises(LabelStudioNotInstalledError, match="make ls-venv"):
        find_ls_bin()
    with pytest.raises(LabelStudioNotInstalledError, match="make ls-venv"):
        start_label_studio(tmp_path / "d", free_port(), username="a", password="b", token=TOKEN)


def test_env_var_selects_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = _script(tmp_path, "exit 0")
    monkeypatch.setenv("LABELWHEEL_LS_BIN", exe)
    assert find_ls_bin() == exe
    assert find_ls_bin(exe) == exe


def test_busy_port_is_refused_not_shifted(tmp_path: Path) -> None:
    exe = _script(tmp_path, "sleep 30")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_is_free(port)
        with pytest.raises(LabelStudioStartError, match=f"port {port} .*already in use"):
            start_label_studio(
                tmp_path / "d", port, username="a", password="b", token=TOKEN, ls_bin=exe
            )
    assert not (tmp_path / "d" / "label-studio.log").exists()


def test_crash_before_healthy_reports_log(tmp_path: Path) -> None:
    exe = _script(tmp_path, "echo 'boom: database is locked'; exit 3")
    with pytest.raises(LabelStudioStartError, match=r"(?s)exited with code 3.*database is locked"):
        start_label_studio(
            tmp_path / "d", free_port(), username="a", password="b", token=TOKEN, ls_bin=exe
        )


def test_timeout_stops_the_process(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    exe = _script(tmp_path, f"echo $$ > {pidfile}; exec sleep 60")
    with pytest.raises(LabelStudioStartError, match="did not answer"):
        start_label_studio(
            tmp_path / "d",
            free_port(),
            username="a",
            password="b",
            token=TOKEN,
            ls_bin=exe,
            timeout=1.5,
        )
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    monkeypatch.setenv("LABEL_STUDIO_BASE_DATA_DIR", "/wrong")
    monkeypatch.setenv("DJANGO_DB", "postgresql")
    env = ls_environment(tmp_path, 8123, "u@example.com", "pw", TOKEN, local_files_root=tmp_path)
    assert env["LABEL_STUDIO_BASE_DATA_DIR"] == str(tmp_path.resolve())
    assert env["LABEL_STUDIO_HOST"] == "http://127.0.0.1:8123"
    assert env["LABEL_STUDIO_USER_TOKEN"] == TOKEN
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    assert env["ML_BLOCK_LOCAL_IP"] == "false"
    assert env["SSRF_PROTECTION_ENABLED"] == "false"
    assert env["COLLECT_ANALYTICS"] == "false"
    assert env["LATEST_VERSION_CHECK"] == "false"
    assert env["SENTRY_DSN"] == "" and env["FRONTEND_SENTRY_DSN"] == ""
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str(tmp_path.resolve())
    assert "/somewhere/else" not in env["PYTHONPATH"]
    assert "DJANGO_DB" not in env
    with pytest.raises(ValueError, match="40"):
        ls_environment(tmp_path, 8123, "u", "pw", "short")


@pytest.mark.e2e
def test_label_studio_fixture_is_healthy(label_studio: LocalLabelStudio) -> None:
    assert label_studio.running
    assert label_studio.url == f"http://127.0.0.1:{label_studio.port}"
    assert requests.get(f"{label_studio.url}/health", timeout=5).status_code == 200
    auth = {"Authorization": f"Token {label_studio.token}"}
    r = requests.get(f"{label_studio.url}/api/current-user/whoami", headers=auth, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["email"] == label_studio.username
    assert requests.get(f"{label_studio.url}/api/projects", timeout=10).status_code == 401
    assert "Starting development server at http://127.0.0.1:" in label_studio.log_path.read_text()


def test_prepared_data_dir_has_been_logged_into(ls_template_dir: Path) -> None:
    """The template every test's Label Studio copies has had its first browser login: the
    organisation's session-timeout policy row, which Label Studio otherwise writes inside the
    first logged-in read (500 "database is locked" under a concurrent SQLite writer), exists."""
    con = sqlite3.connect(ls_template_dir / "label_studio.sqlite3")
    try:
        orgs = {r[0] for r in con.execute("SELECT id FROM organization")}
        policies = {r[0] for r in con.execute("SELECT * FROM session_policy_sessiontimeoutpolicy")}
    finally:
        con.close()
    assert orgs and orgs <= policies


def test_log_in_refuses_a_wrong_password(label_studio: LocalLabelStudio) -> None:
    ls = label_studio
    with pytest.raises(LabelStudioStartError, match="refused"):
        log_in(ls.url, ls.username, ls.password + "-wrong")
    log_in(ls.url, ls.username, ls.password)


@pytest.mark.e2e
@pytest.mark.slow
def test_stop_and_restart_keeps_tokens_and_ignores_redis(
    fresh_label_studio: LocalLabelStudio, monkeypatch: pytest.MonkeyPatch
) -> None:
    ls = fresh_label_studio
    legacy = {"Authorization": f"Token {ls.token}"}
    r = requests.post(f"{ls.url}/api/token/", headers=legacy, timeout=10)
    assert r.status_code == 201, r.text
    pat = r.json()["token"]
    proc = ls.process
    assert proc is not None
    pid = proc.pid
    ls.stop()
    assert not ls.running
    assert proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert port_is_free(ls.port)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{ls.url}/health", timeout=2)
    ls.stop()  # idempotent

    # Restart on the same data dir while something that never answers sits on Redis's port:
    # Label Studio pings localhost:6379 at start-up without a timeout and would hang there;
    # ls_local points its queues at a socket that does not exist, so it never tries.
    blackhole = socket.socket()
    try:
        blackhole.bind(("127.0.0.1", 6379))
        blackhole.listen()
    except OSError:
        blackhole.close()
        blackhole = None  # type: ignore[assignment]
    try:
        again = start_label_studio(
            ls.data_dir,
            ls.port,
            username=ls.username,
            password=ls.password,
            token=ls.token,
            timeout=90,
        )
    finally:
        if blackhole is not None:
            blackhole.close()
    try:
        for header in (legacy, {"Authorization": f"Bearer {_access(again.url, pat)}"}):
            r = requests.get(f"{again.url}/api/current-user/whoami", headers=header, timeout=10)
            assert r.status_code == 200, r.text
        r = requests.post(
            f"{again.url}/api/projects",
            headers=legacy,
            json={"title": "after restart", "label_config": "<View></View>"},
            timeout=10,
        )
        assert r.status_code == 201, r.text
    finally:
        again.stop()


def _access(url: str, refresh: str) -> str:
    r = requests.post(f"{url}/api/token/refresh/", json={"refresh": refresh}, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["access"])


def test_find_ls_bin_returns_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `make up` passes a path relative to the repository; Label Studio then runs elsewhere.
    exe = tmp_path / "bin" / "label-studio"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    found = find_ls_bin("bin/label-studio")
    assert os.path.isabs(found) and os.path.samefile(found, exe)
