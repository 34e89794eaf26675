"""Start and stop a local Label Studio process (end-to-end tests, ``make up``).

Label Studio runs from its own virtual environment (``make ls-venv``), on loopback only, with
SQLite and its data under a directory we choose. Everything it needs is passed in the environment
(see :func:`ls_environment`): the first user and its legacy API token, no open sign-up, ML backends
and webhooks on 127.0.0.1 allowed, no outbound calls.

Migrating a fresh data dir takes ~45 s; a copy of a stopped server's data dir starts in seconds
and keeps its users and tokens, so tests migrate once (:func:`prepare_data_dir`) and start from
copies (:func:`copy_data_dir`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from labelwheel.media.proxies import direct_to_loopback

__all__ = [
    "LabelStudioNotInstalledError",
    "LabelStudioStartError",
    "LocalLabelStudio",
    "copy_data_dir",
    "find_ls_bin",
    "free_port",
    "log_in",
    "ls_environment",
    "port_is_free",
    "prepare_data_dir",
    "start_label_studio",
]

LS_BIN_ENV = "LABELWHEEL_LS_BIN"
_REPO_ROOT = Path(__file__).resolve().parent.parent
_SHIM_DIR = ".labelwheel"
_SHIM_MODULE = "labelwheel_ls_settings"

# Variables of the parent environment that must not leak into Label Studio's process: they would
# point it at our virtual environment, another settings module, another data dir, or override the
# SECRET_KEY Label Studio keeps in <data dir>/.env (it signs personal access tokens: copies of a
# data dir keep them valid).
_DROP_PREFIXES = ("LABEL_STUDIO_", "HEARTEX_", "DJANGO_", "PYTHON")
_DROP_NAMES = frozenset(
    {"VIRTUAL_ENV", "PORT", "HOST", "DATABASE_NAME", "DJANGO_DB", "SECRET_KEY", "REDIS_LOCATION"}
)


class LabelStudioStartError(RuntimeError):
    """Label Studio could not be started (busy port, crash, timeout); the message says why."""


class LabelStudioNotInstalledError(LabelStudioStartError):
    """The ``label-studio`` executable was not found."""


@dataclass
class LocalLabelStudio:
    """A running (or stopped) local Label Studio and the admin credentials it was started with."""

    url: str
    port: int
    data_dir: Path
    username: str
    password: str
    token: str
    process: subprocess.Popen[bytes] | None
    log_path: Path
    local_files_root: Path | None = None
    _log_file: object | None = field(default=None, repr=False)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server: SIGTERM to its process group, then SIGKILL if it does not exit."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=timeout)
        if proc is not None:
            # Children (if any) left in the group.
            _signal_group(proc, signal.SIGKILL)
        self.process = None
        if self._log_file is not None:
            with contextlib.suppress(Exception):
                self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, n_chars: int = 4000) -> str:
        """The last characters of the server's log (for error messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""

    def __enter__(self) -> LocalLabelStudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def find_ls_bin(ls_bin: str | None = None) -> str:
    """The ``label-studio`` executable: ``ls_bin``, else env ``LABELWHEEL_LS_BIN``, else
    ``<repo>/.venv-ls/bin/label-studio``. Raises :class:`LabelStudioNotInstalledError`."""
    candidate = (
        ls_bin or os.environ.get(LS_BIN_ENV) or str(_REPO_ROOT / ".venv-ls/bin/label-studio")
    )
    path = shutil.which(candidate) if os.sep not in candidate else candidate
    if path is None or not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise LabelStudioNotInstalledError(
            f"Label Studio executable not found at {candidate!r}: run `make ls-venv` "
            f"(or set {LS_BIN_ENV} to a label-studio 1.23.2 executable)"
        )
    # Absolute, because Label Studio is started with another working directory.
    return os.path.abspath(path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on ``host:port`` and it can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        if s.connect_ex((host, port)) == 0:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like Label Studio's server (SO_REUSEADDR): connections in TIME_WAIT do not block it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def ls_environment(
    data_dir: Path,
    port: int,
    username: str,
    password: str,
    token: str,
    local_files_root: Path | None = None,
) -> dict[str, str]:
    """The complete environment for a ``label-studio`` process.

    Starts from ``os.environ`` minus variables that would confuse Label Studio (``PYTHON*``,
    ``DJANGO_*``, other ``LABEL_STUDIO_*``, ``VIRTUAL_ENV``), then sets its data dir, first user and
    legacy token, loopback host name, allows ML backends and webhooks on local IPs, turns off
    sign-up, analytics, Sentry and version checks, and points its job queue at a socket that does
    not exist so that it never uses a Redis that happens to run on this machine (jobs then run
    synchronously, as tests expect).
    """
    if not re.fullmatch(r"[0-9a-f]{40}", token):
        raise ValueError("token must be 40 lowercase hex characters (a legacy API token)")
    data_dir = Path(data_dir).resolve()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_DROP_PREFIXES) and k not in _DROP_NAMES
    }
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_USERNAME": username,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_USER_TOKEN": token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LABEL_STUDIO_HOST": f"http://127.0.0.1:{port}",
            "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false",
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "DJANGO_SETTINGS_MODULE": _SHIM_MODULE,
            "PYTHONPATH": str(data_dir / _SHIM_DIR),
            "PYTHONUNBUFFERED": "1",
        }
    )
    direct_to_loopback(env)  # it calls ML backends on 127.0.0.1: never through a proxy
    if local_files_root is not None:
        env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"
        env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(Path(local_files_root).resolve())
    return env


def _write_settings_shim(data_dir: Path) -> None:
    """Label Studio's settings with its RQ queues on a Unix socket that does not exist."""
    shim_dir = data_dir / _SHIM_DIR
    shim_dir.mkdir(parents=True, exist_ok=True)
    no_redis = shim_dir / "no-redis.sock"
    (shim_dir / f"{_SHIM_MODULE}.py").write_text(
        "# Written by labelwheel.ls_local: Label Studio's settings, without Redis.\n"
        "from label_studio.core.settings.base import *  # noqa: F401,F403\n"
        "from label_studio.core.settings.label_studio import *  # noqa: F401,F403\n"
        "from label_studio.core.settings.label_studio import RQ_QUEUES\n\n"
        "for _queue in RQ_QUEUES.values():\n"
        f"    _queue.pop('HOST', None)\n"
        f"    _queue.pop('PORT', None)\n"
        f"    _queue['UNIX_SOCKET_PATH'] = {str(no_redis)!r}\n"
    )


def start_label_studio(
    data_dir: Path,
    port: int,
    *,
    username: str,
    password: str,
    token: str,
    ls_bin: str | None = None,
    timeout: float = 180.0,
    local_files_root: Path | None = None,
) -> LocalLabelStudio:
    """Start Label Studio on ``127.0.0.1:port`` with its data in ``data_dir``.

    Refuses a busy port with :class:`LabelStudioStartError` (Label Studio itself would silently move
    to the next port). Waits until ``GET /health`` answers 200 on that port from this process;
    on failure or timeout the process is stopped and the error quotes its log.
    """
    exe = find_ls_bin(ls_bin)
    if not port_is_free(port):
        raise LabelStudioStartError(
            f"port {port} on 127.0.0.1 is already in use: stop what listens there or choose "
            "another port"
        )
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_settings_shim(data_dir)
    env = ls_environment(data_dir, port, username, password, token, local_files_root)
    log_path = data_dir / "label-studio.log"
    log_file = open(log_path, "ab")
    proc = subprocess.Popen(
        [exe, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=str(data_dir),
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    ls = LocalLabelStudio(
        url=f"http://127.0.0.1:{port}",
        port=port,
        data_dir=data_dir,
        username=username,
        password=password,
        token=token,
        process=proc,
        log_path=log_path,
        local_files_root=None if local_files_root is None else Path(local_files_root).resolve(),
        _log_file=log_file,
    )
    try:
        _wait_healthy(ls, timeout)
    except BaseException:
        ls.stop()
        raise
    return ls


def _wait_healthy(ls: LocalLabelStudio, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        proc = ls.process
        if proc is None or proc.poll() is not None:
            code = None if proc is None else proc.returncode
            raise LabelStudioStartError(
                f"Label Studio exited with code {code} before becoming healthy; "
                f"log {ls.log_path}:\n{ls.log_tail()}"
            )
        log = ls.log_tail(50000)
        if f"Port {ls.port} is in use" in log:
            raise LabelStudioStartError(
                f"port {ls.port} was taken while Label Studio started; log {ls.log_path}"
            )
        started = f"Starting development server at http://127.0.0.1:{ls.port}/" in log
        try:
            r = requests.get(f"{ls.url}/health", timeout=2)
            if r.status_code == 200 and started:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise LabelStudioStartError(
                f"Label Studio did not answer GET {ls.url}/health within {timeout:.0f} s; "
                f"log {ls.log_path}:\n{ls.log_tail()}"
            )
        time.sleep(0.5)


def prepare_data_dir(
    data_dir: Path,
    *,
    username: str,
    password: str,
    token: str,
    ls_bin: str | None = None,
    timeout: float = 300.0,
) -> Path:
    """Migrate a fresh data dir once: start Label Studio on a free port, wait until healthy (which
    creates the database, the user and its token), stop it. Copies of the result start in seconds
    (:func:`copy_data_dir`)."""
    ls = start_label_studio(
        data_dir,
        free_port(),
        username=username,
        password=password,
        token=token,
        ls_bin=ls_bin,
        timeout=timeout,
    )
    try:
        # Label Studio creates its organisation's session-timeout policy row inside the first
        # request of a logged-in browser session: a write inside a read, which on SQLite fails
        # with 500 "database is locked" if another client writes then. Copies of this data dir
        # already have it, as a deployment whose admin has logged in once does.
        log_in(ls.url, ls.username, ls.password)
    finally:
        ls.stop()
    return ls.data_dir


def log_in(url: str, email: str, password: str, timeout: float = 60.0) -> None:
    """Log a user in through Label Studio's web form and open one page with that session, as
    a person does in a browser. Raises :class:`LabelStudioStartError` if the login is refused
    or the logged-in request fails."""
    with requests.Session() as session:
        login = f"{url}/user/login/"
        session.get(login, timeout=timeout)
        resp = session.post(
            login,
            data={
                "email": email,
                "password": password,
                "csrfmiddlewaretoken": session.cookies.get("csrftoken", ""),
            },
            headers={"Referer": login},
            allow_redirects=False,
            timeout=timeout,
        )
        if resp.status_code != 302 or "sessionid" not in session.cookies:
            raise LabelStudioStartError(
                f"Label Studio refused {email}'s login (HTTP {resp.status_code})"
            )
        resp = session.get(f"{url}/api/current-user/whoami", timeout=timeout)
        if resp.status_code != 200:
            raise LabelStudioStartError(
                f"Label Studio's first logged-in request failed: HTTP {resp.status_code}"
            )


def copy_data_dir(src: Path, dst: Path) -> Path:
    """Copy a stopped Label Studio's data dir (without its log) to ``dst`` (must not exist)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("label-studio.log"))
    return Path(dst)
