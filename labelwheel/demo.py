"""``labelwheel up`` / ``labelwheel down``: the local demo that ``make up`` / ``make down`` run.

``up`` starts a local Label Studio and the labelwheel ML backend, creates a demo
image-classification project with real images (handwritten digits), uploads them, connects the
backend (``labelwheel connect``), retrieves predictions and prints the URL, the login and what to
do next. Everything lives in one state directory, re-used on the next run:

=====================  ==========================================================================
``state.json``         credentials (generated once, file mode 0600), ports, project, process ids
``label-studio/``      Label Studio's data dir (SQLite database, uploads) and ``label-studio.log``
``model/``             the backend's ``MODEL_DIR`` (annotations, versions, embedding cache)
``images/``            the demo PNGs and their held-back answers (``ground_truth.csv``)
``logs/backend.log``   the backend's log
=====================  ==========================================================================

In the foreground ``up`` stays until Ctrl-C (SIGINT) or SIGTERM and then stops both processes;
with ``--detach`` it returns and ``down`` stops them later by their recorded process ids.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import click
import requests

__all__ = [
    "DemoError",
    "DemoState",
    "down_command",
    "stop_recorded_processes",
    "up_command",
]

STATE_FILE = "state.json"
LS_DIR = "label-studio"
MODEL_DIR = "model"
IMAGES_DIR = "images"
LOGS_DIR = "logs"
BACKEND_TITLE = "labelwheel"
DEFAULT_LS_PORT = 8080
DEFAULT_BACKEND_PORT = 9090
DEFAULT_N_IMAGES = 300
DEMO_IMAGE_SIZE = 112
# Backend settings of the demo unless the user's environment sets them: the backbone runs at the
# demo images' size (112 px), and the selector picks the batch of 10 tasks that is labelled before
# the next automatic retraining (every 10 annotations), the configuration the e2e tests check.
_BACKEND_DEFAULTS = {
    "LABELWHEEL_IMAGE_SIZE": str(DEMO_IMAGE_SIZE),
    "LABELWHEEL_RETRAIN_EVERY": "10",
    "LABELWHEEL_RANK_DEPTH": "10",
}
_STATE_VERSION = 1


class DemoError(RuntimeError):
    """``up``/``down`` cannot go on; the message says why and what to do."""


class _Stop(Exception):
    """Raised in the main thread by the SIGINT/SIGTERM handler."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# -- state ----------------------------------------------------------------------------------


@dataclass
class DemoState:
    """The content of ``state.json``: generated once, then re-used by every ``up``."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def load_or_create(cls, state_dir: Path) -> DemoState:
        """Read ``state.json`` in ``state_dir``, or create it with fresh credentials (0600)."""
        if not state_dir.exists():
            state_dir.mkdir(parents=True)
            state_dir.chmod(0o700)  # Label Studio's database and uploads live here too
        path = state_dir / STATE_FILE
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DemoError(
                    f"cannot read {path} ({exc}); remove the state dir (make clean) to start over"
                ) from None
            if not isinstance(data, dict) or not all(
                isinstance(data.get(k), str)
                for k in ("username", "password", "token", "basic_auth_user", "basic_auth_pass")
            ):
                raise DemoError(
                    f"{path} is not a labelwheel state file; remove the state dir (make clean)"
                )
            return cls(path, data)
        data = {
            "version": _STATE_VERSION,
            "username": "admin@example.com",
            "password": secrets.token_urlsafe(12),
            "token": secrets.token_hex(20),
            "basic_auth_user": "labelwheel",
            "basic_auth_pass": secrets.token_urlsafe(24),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pids": {},
        }
        state = cls(path, data)
        state.save()
        return state

    @classmethod
    def load(cls, state_dir: Path) -> DemoState | None:
        """``state.json`` of ``state_dir``, or None if there is none."""
        path = state_dir / STATE_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DemoError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise DemoError(f"{path} is not a labelwheel state file")
        return cls(path, data)

    def save(self) -> None:
        """Write atomically, readable by the owner only (it holds passwords and a token)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    @property
    def pids(self) -> dict[str, dict[str, Any]]:
        """Recorded processes: name -> {"pid", "start", "marker"}."""
        pids = self.data.setdefault("pids", {})
        assert isinstance(pids, dict)
        return pids


# -- processes ------------------------------------------------------------------------------


def _proc_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if unknown/gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _proc_cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["ps", "-p", str(pid), "-o", "command="],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not running (our own child not yet reaped).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    except OSError:
        pass
    return True


def _record(pid: int, marker: str) -> dict[str, Any]:
    return {"pid": pid, "start": _proc_start_time(pid), "marker": marker}


def _is_ours(entry: dict[str, Any]) -> bool:
    """True if the recorded process still runs and is the one we started (not a re-used pid)."""
    try:
        pid = int(entry["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    if pid <= 1 or not _alive(pid):
        return False
    recorded_start = entry.get("start")
    if recorded_start is not None:
        current = _proc_start_time(pid)
        if current is not None:
            return bool(current == recorded_start)
    cmdline = _proc_cmdline(pid)
    return bool(cmdline and str(entry.get("marker", "")) in cmdline)


def _stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group led by ``pid`` (our children start their own session), wait,
    then SIGKILL."""

    def send(sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        if not _alive(pid):
            break
        time.sleep(0.2)
    else:
        send(signal.SIGKILL)
        time.sleep(0.2)
    # Anything left in its process group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop_recorded_processes(state: DemoState, echo: Callable[[str], None] = print) -> int:
    """Stop the processes recorded in ``state`` that are still ours; returns how many."""
    stopped = 0
    # The backend first: it calls Label Studio, not the other way round.
    for name in sorted(state.pids, key=lambda n: n != "backend"):
        entry = state.pids[name]
        if _is_ours(entry):
            echo(f"stopping {name} (pid {entry['pid']})")
            _stop_pid(int(entry["pid"]))
            stopped += 1
    state.pids.clear()
    state.save()
    return stopped


def _running_processes(state: DemoState) -> dict[str, int]:
    return {name: int(e["pid"]) for name, e in state.pids.items() if _is_ours(e)}


# -- steps ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _progress(message: str, every: float = 10.0) -> Iterator[None]:
    """Print ``message`` now and an elapsed-time line every ``every`` seconds until done."""
    click.echo(message)
    done = threading.Event()
    start = time.monotonic()

    def tick() -> None:
        while not done.wait(every):
            click.echo(f"  ... still working ({time.monotonic() - start:.0f} s)")

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=1)
    click.echo(f"  ready after {time.monotonic() - start:.0f} s")


def _check_ports(ls_port: int, backend_port: int) -> None:
    from labelwheel.ls_local import port_is_free

    if ls_port == backend_port:
        raise DemoError(f"--ls-port and --backend-port must differ (both are {ls_port})")
    for port, what, option in (
        (ls_port, "Label Studio", "--ls-port"),
        (backend_port, "the labelwheel backend", "--backend-port"),
    ):
        if not port_is_free(port):
            raise DemoError(
                f"port {port} on 127.0.0.1 (for {what}) is already in use: stop what listens "
                f"there, or choose another port with {option}"
            )


def _backend_env(state: DemoState, state_dir: Path, ls_url: str) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in _BACKEND_DEFAULTS.items():
        env.setdefault(key, value)
    env.update(
        {
            "MODEL_DIR": str(state_dir / MODEL_DIR),
            "LABEL_STUDIO_URL": ls_url,
            "LABEL_STUDIO_API_KEY": str(state.data["token"]),
            "BASIC_AUTH_USER": str(state.data["basic_auth_user"]),
            "BASIC_AUTH_PASS": str(state.data["basic_auth_pass"]),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def start_backend(
    env: dict[str, str], port: int, log_path: Path, timeout: float = 180.0
) -> subprocess.Popen[bytes]:
    """Start ``labelwheel serve`` on 127.0.0.1:``port`` in its own session, wait for /health."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "labelwheel.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/health"
    deadline = time.monotonic() + timeout
    try:
        while True:
            code = proc.poll()
            if code is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise DemoError(
                    f"the labelwheel backend exited with code {code}; log {log_path}:\n{tail}"
                )
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return proc
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the labelwheel backend did not answer {url} within {timeout:.0f} s; "
                    f"log {log_path}"
                )
            time.sleep(0.3)
    except BaseException:
        _stop_pid(proc.pid)
        raise


def _ensure_project(client: Any, state: DemoState, labels: tuple[str, ...]) -> int:
    from labelwheel.demo_data import DEMO_PROJECT_TITLE
    from labelwheel.label_config import image_classification_config

    project_id = state.data.get("project_id")
    if isinstance(project_id, int):
        try:
            client.get_project(project_id)
            return project_id
        except Exception:  # deleted by the user: find by title or create again
            pass
    for project in client.list_projects():
        if project.get("title") == DEMO_PROJECT_TITLE:
            project_id = int(project["id"])
            break
    else:
        project = client.create_project(DEMO_PROJECT_TITLE, image_classification_config(labels))
        project_id = int(project["id"])
        click.echo(f"created project {project_id} {DEMO_PROJECT_TITLE!r}")
    state.data["project_id"] = project_id
    state.save()
    return project_id


def _upload_missing(client: Any, project_id: int, paths: list[Path]) -> int:
    """Upload the demo images not yet in the project; returns how many were uploaded."""
    present = set()
    for task in client.iter_tasks(project_id):
        ref = str((task.get("data") or {}).get("image", ""))
        tail = ref.rsplit("/", 1)[-1]
        present.add(tail.split("-", 1)[1] if "-" in tail else tail)
    missing = [p for p in paths if p.name not in present]
    if not missing:
        return 0
    batch = 50
    with _progress(f"uploading {len(missing)} demo images to project {project_id}"):
        for start in range(0, len(missing), batch):
            client.import_files(project_id, missing[start : start + batch])
    return len(missing)


def _remove_stale_backends(client: Any, project_id: int, backend_url: str) -> None:
    """Disconnect backends of earlier runs on another port (``--backend-port`` changed)."""
    for ml in client.list_ml_backends(project_id):
        url = str(ml.get("url", "")).rstrip("/")
        if url != backend_url and url.startswith("http://127.0.0.1:"):
            client.request("DELETE", f"/api/ml/{int(ml['id'])}")
    for hook in client.list_webhooks(project_id):
        url = str(hook.get("url", ""))
        if url.startswith("http://127.0.0.1:") and not url.startswith(backend_url + "/"):
            if url.rstrip("/").endswith("/webhook"):
                client.request("DELETE", f"/api/webhooks/{int(hook['id'])}")


@dataclass
class _Running:
    ls: Any = None
    backend: subprocess.Popen[bytes] | None = None

    def stop(self, state: DemoState | None) -> None:
        """Stop the backend, then Label Studio; a second Ctrl-C does not interrupt this."""
        with contextlib.suppress(ValueError):  # not in the main thread: leave handlers alone
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
        if self.backend is not None:
            _stop_pid(self.backend.pid)
            with contextlib.suppress(Exception):
                self.backend.wait(timeout=5)
            self.backend = None
        if self.ls is not None:
            self.ls.stop()
            self.ls = None
        if state is not None:
            state.pids.clear()
            state.save()


def _print_summary(
    state: DemoState, state_dir: Path, ls_url: str, backend_url: str, result: Any, detach: bool
) -> None:
    d = state.data
    project_id = result.project_id
    link = f"{ls_url}/projects/{project_id}/data?tab={result.view_id}"
    lines = [
        "",
        "labelwheel is running.",
        f"  Label Studio  {ls_url}",
        f"  login         {d['username']}  /  {d['password']}",
        f"  demo project  {link}",
        f"                {result.tasks} handwritten-digit images, {result.predicted} with "
        f"predictions (model version {result.model_version or 'none yet'})",
        f"  ML backend    {backend_url}  (basic auth user {d['basic_auth_user']!r}; "
        f"password in {state.path})",
        f"  logs          {state_dir / LS_DIR / 'label-studio.log'}, "
        f"{state_dir / LOGS_DIR / 'backend.log'}",
        "",
        "What to do next:",
        "  1. Open the demo project link and log in. Its tab 'labelwheel: most informative",
        "     first' is ordered by prediction score: the most informative task comes first.",
        "  2. Click 'Label Tasks In View' (or 'Label All Tasks') and label the digits: accept",
        "     the pre-label when it is right, correct it when it is wrong.",
        "  3. Every 10 annotations (or 'Start training' in Settings > Model) the backend retrains,",
        "     sends new predictions and re-ranks the queue by itself.",
        f"  Model versions and accuracy: {backend_url}/versions (basic auth), metrics at /metrics.",
        "",
    ]
    if detach:
        lines.append("Running in the background. Stop with `labelwheel down` (or `make down`).")
    else:
        lines.append("Press Ctrl-C to stop Label Studio and the backend.")
    lines.append(f"State (kept for the next run): {state_dir}; `make clean` deletes it.")
    for warning in getattr(result, "warnings", []) or []:
        lines.append(f"warning: {warning}")
    click.echo("\n".join(lines))


def _watch(running: _Running) -> str:
    """Block until a child process exits; returns which one."""
    while True:
        if running.backend is not None and running.backend.poll() is not None:
            return f"the backend (exit code {running.backend.returncode})"
        proc = getattr(running.ls, "process", None)
        if proc is not None and proc.poll() is not None:
            return f"Label Studio (exit code {proc.returncode})"
        time.sleep(1.0)


def run_up(
    state_dir: Path,
    *,
    ls_port: int,
    backend_port: int,
    ls_bin: str | None,
    detach: bool,
    n_images: int,
    seed: int = 0,
) -> None:
    """The whole of ``labelwheel up`` (see the module doc). Raises :class:`DemoError`."""
    from labelwheel.connect import ConnectError, connect_project
    from labelwheel.demo_data import load_demo_dataset, write_demo_images
    from labelwheel.ls_api import LabelStudioClient, LabelStudioError
    from labelwheel.ls_local import LabelStudioStartError, find_ls_bin, start_label_studio

    state_dir = state_dir.resolve()
    state = DemoState.load_or_create(state_dir)
    already = _running_processes(state)
    if already:
        ls_url = f"http://127.0.0.1:{state.data.get('ls_port', ls_port)}"
        raise _AlreadyRunning(
            f"labelwheel is already running from {state_dir} "
            f"({', '.join(f'{k} pid {v}' for k, v in sorted(already.items()))}).\n"
            f"  Label Studio  {ls_url}\n"
            f"  login         {state.data['username']}  /  {state.data['password']}\n"
            "Stop it with `labelwheel down` (make down)."
        )
    state.pids.clear()
    try:
        exe = find_ls_bin(ls_bin)
    except LabelStudioStartError as exc:
        raise DemoError(str(exc)) from None
    _check_ports(ls_port, backend_port)

    images_dir = state_dir / IMAGES_DIR
    try:
        dataset = load_demo_dataset(images_dir)
    except ValueError:
        click.echo(f"writing {n_images} demo images to {images_dir}")
        try:
            dataset = write_demo_images(images_dir, n_images, size=DEMO_IMAGE_SIZE, seed=seed)
        except (ValueError, OSError) as exc:
            raise DemoError(f"cannot write the demo images: {exc}") from None

    running = _Running()
    ls_dir = state_dir / LS_DIR
    first = not (ls_dir / "label_studio.sqlite3").exists()
    try:
        how = (
            "first start: Label Studio migrates its database, ~1 minute"
            if first
            else "re-using its data"
        )
        with _progress(f"starting Label Studio on 127.0.0.1:{ls_port} ({how})"):
            try:
                running.ls = start_label_studio(
                    ls_dir,
                    ls_port,
                    username=str(state.data["username"]),
                    password=str(state.data["password"]),
                    token=str(state.data["token"]),
                    ls_bin=exe,
                    timeout=600.0 if first else 180.0,
                )
            except LabelStudioStartError as exc:
                raise DemoError(str(exc)) from None
        ls_url = running.ls.url
        state.pids["label_studio"] = _record(running.ls.process.pid, "label-studio")
        state.data.update(ls_port=ls_port, backend_port=backend_port, ls_url=ls_url)
        state.save()

        backend_url = f"http://127.0.0.1:{backend_port}"
        with _progress(f"starting the labelwheel backend on {backend_url}"):
            running.backend = start_backend(
                _backend_env(state, state_dir, ls_url),
                backend_port,
                state_dir / LOGS_DIR / "backend.log",
            )
        state.pids["backend"] = _record(running.backend.pid, "labelwheel")
        state.save()

        client = LabelStudioClient(ls_url, str(state.data["token"]), timeout=60.0)
        try:
            project_id = _ensure_project(client, state, dataset.labels)
            _upload_missing(client, project_id, dataset.paths)
            _remove_stale_backends(client, project_id, backend_url)
            with _progress(
                "connecting the backend and retrieving predictions (the first time it embeds "
                "every image: about a minute)"
            ):
                result = connect_project(
                    client,
                    project_id,
                    backend_url,
                    title=BACKEND_TITLE,
                    basic_auth=(
                        str(state.data["basic_auth_user"]),
                        str(state.data["basic_auth_pass"]),
                    ),
                )
        except (LabelStudioError, ConnectError, ValueError) as exc:
            raise DemoError(f"setting up the demo project failed: {exc}") from None
        state.data.update(view_id=result.view_id, ml_backend_id=result.ml_backend_id)
        state.save()
        _print_summary(state, state_dir, ls_url, backend_url, result, detach)
        if detach:
            # The children run in their own sessions and keep running; `down` stops them.
            running.ls._log_file = None  # the child holds its own handle; ours closes on exit
            running.ls = None
            running.backend = None
            return
        which = _watch(running)
        raise DemoError(f"{which} stopped unexpectedly; stopping the other one")
    except _Stop as stop:
        click.echo(f"\nreceived {stop}: stopping Label Studio and the backend ...")
        running.stop(state)
        click.echo("stopped.")
    except BaseException:
        running.stop(state)
        raise
    else:
        if running.ls is not None or running.backend is not None:
            running.stop(state)


class _AlreadyRunning(DemoError):
    """``up`` found its processes already running (not an error for the user)."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


@click.command("up")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".state"),
    show_default=True,
    help="Where Label Studio's data, the backend's MODEL_DIR, the demo images, logs and "
    "credentials are kept (re-used by the next run).",
)
@click.option(
    "--ls-port", type=click.IntRange(1, 65535), default=DEFAULT_LS_PORT, show_default=True
)
@click.option(
    "--backend-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_BACKEND_PORT,
    show_default=True,
)
@click.option(
    "--label-studio-bin",
    "ls_bin",
    default=None,
    help="The label-studio executable (default: env LABELWHEEL_LS_BIN, else "
    ".venv-ls/bin/label-studio).",
)
@click.option(
    "--detach",
    is_flag=True,
    help="Return once everything runs; stop later with `labelwheel down`.",
)
@click.option(
    "--images",
    "n_images",
    type=click.IntRange(10, 5000),
    default=DEFAULT_N_IMAGES,
    show_default=True,
    help="Number of demo images (only when the state dir has none yet).",
)
def up_command(
    state_dir: Path,
    ls_port: int,
    backend_port: int,
    ls_bin: str | None,
    detach: bool,
    n_images: int,
) -> None:
    """Start Label Studio and the labelwheel backend with a demo project (what `make up` runs).

    Creates (once) an admin user, a demo image-classification project with real images
    (handwritten digits), connects the backend and retrieves predictions, then prints the URL,
    the login and what to do next. Stays in the foreground until Ctrl-C unless --detach.
    """
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_up(
            state_dir,
            ls_port=ls_port,
            backend_port=backend_port,
            ls_bin=ls_bin,
            detach=detach,
            n_images=n_images,
        )
    except _AlreadyRunning as exc:
        click.echo(str(exc))
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None
    except _Stop:
        click.echo("interrupted.")
        sys.exit(130)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command("down")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".state"),
    show_default=True,
    help="The state dir `labelwheel up` used.",
)
def down_command(state_dir: Path) -> None:
    """Stop the Label Studio and backend processes `labelwheel up --detach` started.

    Only processes recorded in the state dir that are still the very processes started there
    are stopped (a re-used process id is left alone). The state is kept (`make clean` removes it).
    """
    try:
        state = DemoState.load(state_dir.resolve())
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None
    if state is None:
        click.echo(f"nothing to stop: no labelwheel state in {state_dir}")
        return
    stopped = stop_recorded_processes(state, echo=click.echo)
    click.echo("stopped." if stopped else "nothing was running.")
