"""The demo's state directory and the processes it records (find, check, stop them)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

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


class _AlreadyRunning(DemoError):
    """``up`` found its processes already running (not an error for the user)."""


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
