"""Starting the demo: Label Studio, the backend, the demo project, and watching them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import requests

from labelwheel.demo.state import (
    _BACKEND_DEFAULTS,
    BACKEND_TITLE,
    DEMO_IMAGE_SIZE,
    IMAGES_DIR,
    LOGS_DIR,
    LS_DIR,
    MODEL_DIR,
    DemoError,
    DemoState,
    _AlreadyRunning,
    _check_ports,
    _progress,
    _record,
    _running_processes,
    _Stop,
    _stop_pid,
)
from labelwheel.media.proxies import direct_to_loopback


def _backend_env(state: DemoState, state_dir: Path, ls_url: str) -> dict[str, str]:
    env = dict(os.environ)
    direct_to_loopback(env)  # Label Studio is on 127.0.0.1: never through a proxy
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

    # Label Studio and the backend talk to each other, and this process to both, on 127.0.0.1:
    # a company proxy in the environment must not get those calls (requests reads os.environ)
    direct_to_loopback(os.environ)
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
                "connecting the backend and importing its predictions (the first time it embeds "
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
