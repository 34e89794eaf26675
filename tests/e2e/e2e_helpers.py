"""Helpers of the end-to-end tests: a real backend process, projects, and an annotator's moves.

Everything here talks to real processes over real HTTP: Label Studio (``tests/conftest.py``)
and ``labelwheel serve`` started as a subprocess.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

from labelwheel.connect import connect_project
from labelwheel.demo.run import start_backend
from labelwheel.demo.state import DemoError
from labelwheel.label_config import image_classification_config
from labelwheel.ls_api import LabelStudioClient
from labelwheel.ls_local import free_port

T = TypeVar("T")

# The demo images are 112 px: the backbone runs at their size (fast, and accurate enough).
E2E_IMAGE_SIZE = 112


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    message: str,
    interval: float = 0.3,
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``message`` on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except AssertionError:
            raise
        except Exception as exc:  # keep polling; report the last error on timeout
            last_exc = exc
        if time.monotonic() > deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout:.0f} s: {message}{extra}")
        time.sleep(interval)


@dataclass
class Backend:
    """``labelwheel serve`` as a real process on a loopback port."""

    model_dir: Path
    log_path: Path
    env: dict[str, str]
    user: str
    password: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL, as Label Studio reaches it."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> tuple[str, str]:
        """The basic-auth pair."""
        return (self.user, self.password)

    def start(self, timeout: float = 120.0) -> Backend:
        """Start the process and wait for ``GET /health``."""
        try:
            self.proc = start_backend(self.env, self.port, self.log_path, timeout)
        except DemoError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None
        return self

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to the backend's process group and reap it."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=15)

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    def log_tail(self, n: int = 4000) -> str:
        """The end of the backend's log."""
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def get(self, path: str, **kw: Any) -> requests.Response:
        """GET with basic auth."""
        kw.setdefault("timeout", 30)
        return requests.get(f"{self.url}{path}", auth=self.auth, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        """POST with basic auth (pass ``auth=`` to override)."""
        kw.setdefault("timeout", 60)
        kw.setdefault("auth", self.auth)
        return requests.post(f"{self.url}{path}", **kw)

    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        return dict(requests.get(f"{self.url}/health", timeout=5).json())

    def versions(self, project_id: int) -> dict[str, Any]:
        """``GET /versions?project=ID``."""
        resp = self.get("/versions", params={"project": project_id})
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def serving_version(self, project_id: int) -> str | None:
        """The version the backend serves for the project (None before any training)."""
        for detail in self.versions(project_id).get("details", []):
            if detail.get("serving"):
                return str(detail["name"])
        return None

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """``GET /metrics`` parsed: ``(name, labels, value)`` per sample."""
        resp = self.get("/metrics")
        assert resp.status_code == 200, resp.text
        return parse_prometheus(resp.text)

    def metric(self, name: str, **labels: Any) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        want = {k: str(v) for k, v in labels.items()}
        return sum(
            value
            for metric, lbls, value in self.metrics()
            if metric == name and all(lbls.get(k) == v for k, v in want.items())
        )


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Parse Prometheus text exposition into ``(name, labels, value)`` samples."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line.strip())
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = dict(_LABEL.findall(m.group(3) or ""))
        samples.append((m.group(1), labels, float(m.group(4))))
    return samples


def backend_env(
    model_dir: Path,
    ls_url: str,
    api_key: str,
    user: str,
    password: str,
    **extra: str,
) -> dict[str, str]:
    """The environment of a test backend (parent env minus anything labelwheel/LS-specific)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LABELWHEEL_", "LABEL_STUDIO_", "BASIC_AUTH_", "MODEL_DIR"))
    }
    env.update(
        {
            "MODEL_DIR": str(model_dir),
            "LABEL_STUDIO_URL": ls_url,
            "LABEL_STUDIO_API_KEY": api_key,
            "BASIC_AUTH_USER": user,
            "BASIC_AUTH_PASS": password,
            "LABELWHEEL_IMAGE_SIZE": str(E2E_IMAGE_SIZE),
            "LABELWHEEL_RETRAIN_EVERY": "0",  # tests train explicitly (START_TRAINING)
            "LABELWHEEL_LOG_LEVEL": "INFO",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def make_backend(tmp: Path, ls_url: str, api_key: str, **extra: str) -> Backend:
    """A (not yet started) backend with its own MODEL_DIR under ``tmp`` and fresh credentials."""
    tmp.mkdir(parents=True, exist_ok=True)
    user, password = "lw-" + secrets.token_hex(3), secrets.token_urlsafe(18)
    return Backend(
        model_dir=tmp / "model",
        log_path=tmp / "backend.log",
        env=backend_env(tmp / "model", ls_url, api_key, user, password, **extra),
        user=user,
        password=password,
    )


# -- Label Studio side --------------------------------------------------------------------------


def create_project(
    client: LabelStudioClient, labels: Sequence[str], title: str | None = None
) -> int:
    """A new image-classification project built from labelwheel's template."""
    title = title or f"e2e {secrets.token_hex(3)}"
    return int(client.create_project(title, image_classification_config(labels))["id"])


def add_ml_backend(ls_sdk: Any, project_id: int, backend: Backend) -> Any:
    """Register ``backend`` on a project through Label Studio's SDK, as a user does in the UI
    (basic auth): Label Studio calls its /health and /setup. Returns the SDK's ML backend."""
    return ls_sdk.ml.create(
        project=project_id,
        url=backend.url,
        title="labelwheel",
        auth_method="BASIC_AUTH",
        basic_auth_user=backend.user,
        basic_auth_pass=backend.password,
    )


def connect(client: LabelStudioClient, project_id: int, backend: Backend, **kw: Any) -> Any:
    """``labelwheel connect`` for a project (basic auth, webhook header, predictions, view)."""
    return connect_project(
        client, project_id, backend.url, title="labelwheel", basic_auth=backend.auth, **kw
    )


def choice_result(label: str, from_name: str = "choice", to_name: str = "image") -> list[dict]:
    """An annotation result choosing ``label``."""
    return [
        {
            "from_name": from_name,
            "to_name": to_name,
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


def annotate(client: LabelStudioClient, task_id: int, label: str) -> dict[str, Any]:
    """Annotate a task through Label Studio's API (LS sends ANNOTATION_CREATED)."""
    return client.create_annotation(task_id, choice_result(label))


def chosen_label(result: Sequence[dict[str, Any]]) -> str | None:
    """The single label of a classification result, None if empty."""
    for item in result:
        choices = (item.get("value") or {}).get("choices") or []
        if choices:
            return str(choices[0])
    return None


def predictions_by_task(
    client: LabelStudioClient, project_id: int, version: str
) -> dict[int, dict[str, Any]]:
    """The newest prediction of ``version`` for each task of the project."""
    out: dict[int, dict[str, Any]] = {}
    for p in client.list_project_predictions(project_id):
        if p.get("model_version") == version:
            tid = int(p["task"])
            if tid not in out or int(p["id"]) > int(out[tid]["id"]):
                out[tid] = p
    return out


def project_model_version(client: LabelStudioClient, project_id: int) -> str:
    """The project's model version (the one ``predictions_score`` counts)."""
    return str(client.get_project(project_id).get("model_version") or "")


def train_and_wait(
    client: LabelStudioClient,
    backend: Backend,
    project_id: int,
    ml_backend_id: int,
    timeout: float = 240.0,
) -> str:
    """Press "Start training" (START_TRAINING) and wait until Label Studio's project ranks by a
    new version: the backend trained, published predictions and switched ``model_version``."""
    info = backend.versions(project_id)
    before = {d["name"] for d in info.get("details", [])}
    last_run = max((int(r["id"]) for r in info.get("runs", [])), default=0)
    client.train(ml_backend_id)

    def published() -> str | None:
        info = backend.versions(project_id)
        failed = [
            r for r in info.get("runs", []) if int(r["id"]) > last_run and r["status"] == "failed"
        ]
        assert not failed, f"training failed: {failed}"
        serving = next((d["name"] for d in info.get("details", []) if d.get("serving")), None)
        if serving is None or serving in before:
            return None
        if project_model_version(client, project_id) != serving:
            return None
        return str(serving)

    return wait_for(
        published,
        timeout,
        f"a new version published to project {project_id}\n{backend.log_tail(3000)}",
        interval=0.5,
    )


def tasks_in_order(
    client: LabelStudioClient, project_id: int, ordering: Iterable[str]
) -> list[dict[str, Any]]:
    """The project's tasks in the Data Manager ordering given (``fields=all``)."""
    return list(
        client.iter_tasks(
            project_id, fields="all", query={"ordering": list(ordering)}, page_size=100
        )
    )
