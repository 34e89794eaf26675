"""A big project end to end (issue 11): a real Label Studio 1.23.2 and a real ``labelwheel serve``.

Per size N (``--sizes 1000,5000,20000``), on a fresh Label Studio (a copy of one migrated data
dir) and a fresh backend process:

- N distinct small PNGs (MNIST digits at 28 px from :mod:`labelwheel.demo_data`, each copy of
  the 5,000-digit sample changed in a few pixels so that every image's content differs) imported
  as ``data:`` URIs in JSON tasks (``client.import_tasks``, 1,000 per request);
- two annotator threads ask ``GET /api/projects/<id>/next?view=<view>`` and save annotations
  (up to 50 during connect, up to 30 more during the training's publish) the whole time; every
  status and timeout is recorded;
- a thread posts ``/predict`` for one random task (basic auth) while the pool work runs;
- ``connect_project`` (predictions asked from the backend's ``/predict`` and imported in paced
  chunks, :mod:`labelwheel.publishing`); measured: time to every task
  predicted with the backend's version, then to the pool job's provisional scores replaced
  (``published`` in ``/versions`` pool);
- ``START_TRAINING`` (``client.train``); measured: time until the new version is served and
  predicted on every unlabelled task and the project ranks by it, while a thread posts
  ANNOTATION_UPDATED webhooks (the annotators' real annotations) to ``/webhook`` and times each;
- the backend's resident memory, itself plus its child processes (the training process), sampled
  every 0.5 s from ``/proc``, and its ``VmHWM`` at the end; the backend log grepped for Label
  Studio errors and 5xx.

Writes ``results/big_project.json`` and ``results/big_project.md`` (rewritten after each size).

    .venv/bin/python benchmarks/big_project.py [--sizes 1000,5000 --deadline 04:30]
"""

from __future__ import annotations

import argparse
import calendar
import io
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import requests
from _common import RESULTS, ROOT, environment, log, write_json

from labelwheel.connect import DEFAULT_PACING, VIEW_ORDERING, VIEW_TITLE, connect_project
from labelwheel.demo.run import start_backend
from labelwheel.demo_data import DEMO_LABELS, digit_to_rgb, load_mnist_sample
from labelwheel.label_config import image_classification_config
from labelwheel.ls_api import LabelStudioClient
from labelwheel.ls_local import (
    LocalLabelStudio,
    copy_data_dir,
    find_ls_bin,
    free_port,
    prepare_data_dir,
    start_label_studio,
)

ANNOTATE_BEFORE_TRAINING = 50
ANNOTATE_DURING_PUBLISH = 30
IMAGE_PX = 28
BACKEND_IMAGE_SIZE = 112
GIB = 1024**3
LOGS = Path(tempfile.gettempdir()) / "big_project_logs"


# -- data ---------------------------------------------------------------------------------------


def make_tasks(n: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """``n`` tasks ``{"image": data URI}`` of distinct PNGs, and the label of each URI."""
    import base64

    base, classes = load_mnist_sample(5000, seed=0)
    tasks: list[dict[str, Any]] = []
    label_of: dict[str, str] = {}
    for k in range(n):
        copy, i = divmod(k, len(base))
        img = np.asarray(digit_to_rgb(base[i], IMAGE_PX)).copy()
        # copy number written in the top row (a few pixels a little darker): distinct contents
        for bit in range(8):
            if copy >> bit & 1:
                img[0, bit] = np.maximum(img[0, bit].astype(int) - 40, 0).astype(np.uint8)
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        assert uri not in label_of, "duplicate image content"
        label_of[uri] = DEMO_LABELS[int(classes[i])]
        tasks.append({"image": uri})
    return tasks, label_of


# -- processes ----------------------------------------------------------------------------------


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (from ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in KiB ({} once it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except OSError:
        return {}
    return out


class MemorySampler(threading.Thread):
    """Samples the backend's and its children's VmRSS every 0.5 s; keeps peaks and a series."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.stop_event = threading.Event()
        self.peak_total_kib = 0
        self.peak_backend_kib = 0
        self.peak_children_kib = 0
        self.children_hwm_kib: dict[int, int] = {}
        self.series: list[tuple[float, int, int]] = []  # (t, backend KiB, children KiB)
        self.phase = "start"
        self.peak_by_phase: dict[str, int] = {}
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop_event.is_set():
            pids = tree_pids(self.pid)
            backend = status_kib(self.pid).get("VmRSS", 0)
            children = 0
            for pid in pids[1:]:
                st = status_kib(pid)
                children += st.get("VmRSS", 0)
                if st.get("VmHWM"):
                    self.children_hwm_kib[pid] = max(self.children_hwm_kib.get(pid, 0), st["VmHWM"])
            total = backend + children
            self.peak_total_kib = max(self.peak_total_kib, total)
            self.peak_backend_kib = max(self.peak_backend_kib, backend)
            self.peak_children_kib = max(self.peak_children_kib, children)
            self.peak_by_phase[self.phase] = max(self.peak_by_phase.get(self.phase, 0), total)
            self.series.append((round(time.monotonic() - self.t0, 1), backend, children))
            self.stop_event.wait(0.5)


class Backend:
    """``labelwheel serve`` as its own process group, log in a file."""

    def __init__(self, workdir: Path, ls: LocalLabelStudio) -> None:
        self.user, self.password = "lw-" + secrets.token_hex(3), secrets.token_urlsafe(18)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "backend.log"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LABELWHEEL_", "LABEL_STUDIO_", "BASIC_AUTH_", "MODEL_DIR"))
        }
        env.update(
            {
                "MODEL_DIR": str(workdir / "model"),
                "LABEL_STUDIO_URL": ls.url,
                "LABEL_STUDIO_API_KEY": ls.token,
                "BASIC_AUTH_USER": self.user,
                "BASIC_AUTH_PASS": self.password,
                "LABELWHEEL_IMAGE_SIZE": str(BACKEND_IMAGE_SIZE),
                "LABELWHEEL_RETRAIN_EVERY": "0",
                "LABELWHEEL_LOG_LEVEL": "INFO",
                "OMP_NUM_THREADS": "2",
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(ROOT),
            }
        )
        self.env = env
        self.proc = start_backend(env, self.port, self.log_path, timeout=180)

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    def versions(self, project_id: int) -> dict[str, Any]:
        resp = requests.get(
            self.url + "/versions", params={"project": project_id}, auth=self.auth, timeout=30
        )
        resp.raise_for_status()
        return dict(resp.json())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(20)


# -- load generators ----------------------------------------------------------------------------


class Annotators:
    """Two threads: ``/next`` on the saved view, then save an answer while under ``cap``."""

    def __init__(self, ls: LocalLabelStudio, pid: int, view_id: int, label_of: dict[str, str]):
        self.url, self.pid, self.view_id, self.label_of = ls.url, pid, view_id, label_of
        self.headers = {"Authorization": f"Token {ls.token}"}
        self.statuses: Counter[str] = Counter()
        self.errors: list[str] = []
        self.latencies: dict[str, list[float]] = {"GET next": [], "POST annotations": []}
        self.saved: list[dict[str, Any]] = []  # {"id", "task", "uri", "label"}
        self.cap = ANNOTATE_BEFORE_TRAINING
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(2)]

    def _call(self, session: requests.Session, method: str, path: str, **kw: Any) -> Any:
        what = f"{method} {path.split('/')[-1]}"
        t0 = time.perf_counter()
        try:
            resp = session.request(method, self.url + path, headers=self.headers, timeout=60, **kw)
            with self.lock:
                self.latencies[what].append(time.perf_counter() - t0)
        except requests.RequestException as exc:
            with self.lock:
                self.statuses["timeout/error"] += 1
                self.errors.append(f"{time.strftime('%H:%M:%S')} {what}: {exc!r}"[:300])
            return None
        with self.lock:
            self.statuses[str(resp.status_code)] += 1
            if resp.status_code >= 500:
                self.errors.append(
                    f"{time.strftime('%H:%M:%S')} {what}: {resp.status_code} {resp.text[:200]}"
                )
        return resp

    def _loop(self) -> None:
        session = requests.Session()
        while not self.stop_event.is_set():
            resp = self._call(
                session, "GET", f"/api/projects/{self.pid}/next", params={"view": self.view_id}
            )
            if resp is None or resp.status_code != 200:
                self.stop_event.wait(0.3)
                continue
            task = resp.json()
            with self.lock:
                want = len(self.saved) < self.cap
            if want:
                uri = task["data"]["image"]
                label = self.label_of[uri]
                result = [
                    {
                        "from_name": "choice",
                        "to_name": "image",
                        "type": "choices",
                        "value": {"choices": [label]},
                    }
                ]
                resp = self._call(
                    session,
                    "POST",
                    f"/api/tasks/{int(task['id'])}/annotations",
                    json={"result": result},
                )
                if resp is not None and resp.status_code < 300:
                    with self.lock:
                        self.saved.append(
                            {
                                "id": int(resp.json()["id"]),
                                "task": int(task["id"]),
                                "uri": uri,
                                "label": label,
                            }
                        )
            self.stop_event.wait(0.2)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=90)


class Repeater(threading.Thread):
    """Calls ``fn`` every ``interval`` s; records each call's latency (s) or error."""

    def __init__(self, fn: Any, interval: float) -> None:
        super().__init__(daemon=True)
        self.fn, self.interval = fn, interval
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        while not self.stop_event.is_set():
            t0 = time.perf_counter()
            try:
                resp = self.fn(session)
                dt = time.perf_counter() - t0
                if resp.status_code >= 300:
                    self.errors.append(f"{resp.status_code} {resp.text[:200]}")
                else:
                    self.latencies.append(dt)
            except requests.RequestException as exc:
                self.errors.append(repr(exc)[:200])
            self.stop_event.wait(self.interval)

    def finish(self) -> dict[str, Any]:
        self.stop_event.set()
        self.join(timeout=120)
        lat = np.array(self.latencies) * 1000.0
        warm = lat[1:]  # the first call waits for the backbone to load
        return {
            "first_ms": round(float(lat[0]), 1) if len(lat) else None,
            "p99_after_first_ms": round(float(np.percentile(warm, 99)), 1) if len(warm) else None,
            "over_1s": int((lat > 1000).sum()),
            "latencies_ms": [round(float(x), 1) for x in lat],
            "n": len(self.latencies),
            "errors": len(self.errors),
            "error_samples": self.errors[:5],
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
            "max_ms": round(float(lat.max()), 1) if len(lat) else None,
        }


# -- measurements -------------------------------------------------------------------------------


def versions_by_task(client: LabelStudioClient, pid: int) -> dict[int, set[str]]:
    """The model versions predicted on each task of the project."""
    out: dict[int, set[str]] = {}
    for p in client.list_project_predictions(pid):
        out.setdefault(int(p["task"]), set()).add(str(p.get("model_version")))
    return out


def grep_backend_log(path: Path) -> dict[str, Any]:
    """Lines of the backend log that show Label Studio errors, 5xx or timeouts."""
    pattern = re.compile(
        r"LabelStudioError|database is locked|\b5\d\d\b.*(Error|error|Server)|[Tt]imed? ?out|"
        r"Traceback"
    )
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if pattern.search(ln)]
    return {"count": len(lines), "samples": lines[:8]}


def uptime() -> str:
    """``uptime``'s line (time and load averages)."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def summary(seconds: list[float]) -> dict[str, Any]:
    """p50 / p99 / max in ms and how many took over 1 s."""
    if not seconds:
        return {"n": 0}
    ms = np.array(seconds) * 1000.0
    return {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "over_1s": int((ms > 1000).sum()),
    }


def locked_retries(path: Path) -> dict[str, Any]:
    """Label Studio's "database is locked" errors that its own middleware retried (the client
    sees a 200, later): count, and the API view each happened in."""
    where: Counter[str] = Counter()
    current: str | None = None
    for line in path.read_text(errors="replace").splitlines():
        if "custom_exception_handler" in line:
            current = "database is locked" if "database is locked" in line else "other"
            if current == "other":
                where["other error"] += 1
                current = None
            continue
        if current and "/label_studio/" in line and "api.py" in line:
            m = re.search(r"label_studio/(.*)\", line (\d+), in (\w+)", line)
            if m:
                where[f"{m.group(1)} {m.group(3)}"] += 1
                current = None
    return {"count": sum(where.values()), "by_view": dict(where)}


def wait_until(predicate: Any, timeout: float, interval: float) -> float | None:
    """Poll until ``predicate()``; the monotonic time it became true, None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return time.monotonic()
        except Exception as exc:
            log(f"  poll failed: {exc!r}"[:200])
        time.sleep(interval)
    return None


def run_size(
    n: int, template: Path, creds: dict[str, str], ls_bin: str, base: Path, stop_at: float
) -> dict[str, Any]:
    """Everything above for one project of ``n`` tasks."""
    out: dict[str, Any] = {"n_tasks": n, "load_before": [round(v, 2) for v in os.getloadavg()]}
    out["uptime_before"] = uptime()
    work = base / f"n{n}"
    data_dir = copy_data_dir(template, work / "ls-data")
    ls = start_label_studio(data_dir, free_port(), ls_bin=ls_bin, timeout=180, **creds)
    backend: Backend | None = None
    try:
        client = LabelStudioClient(ls.url, ls.token, timeout=120)
        tasks, label_of = make_tasks(n)
        config = image_classification_config(list(DEMO_LABELS))
        pid = int(client.create_project(f"big {n}", config)["id"])
        t = time.monotonic()
        ids = client.import_tasks(pid, tasks)
        out["import_s"] = round(time.monotonic() - t, 1)
        out["import"] = "JSON tasks with data: URIs (28 px PNG), client.import_tasks, 1,000/request"
        assert len(ids) == n, f"imported {len(ids)} of {n}"
        log(f"N={n}: imported in {out['import_s']} s")
        view_id = int(client.ensure_view(pid, VIEW_TITLE, VIEW_ORDERING)["id"])
        uri_of = {int(i): t["image"] for i, t in zip(ids, tasks, strict=True)}
        del tasks

        backend = Backend(work, ls)
        sampler = MemorySampler(backend.proc.pid)
        sampler.start()
        annotators = Annotators(ls, pid, view_id, label_of)
        rnd = random.Random(n)

        def predict_one(session: requests.Session) -> requests.Response:
            tid = rnd.choice(ids)
            body = {
                "tasks": [{"id": tid, "data": {"image": uri_of[tid]}}],
                "project": f"{pid}.1700000000",
                "label_config": config,
            }
            return session.post(backend.url + "/predict", json=body, auth=backend.auth, timeout=60)

        predictor = Repeater(predict_one, 0.2)

        def collect() -> dict[str, Any]:
            return _collect(out, annotators, backend, ls, sampler)

        # ---- connect: every task predicted, then pool published
        sampler.phase = "connect"
        annotators.start()
        t_connect = time.monotonic()
        predictor.start()
        box: dict[str, Any] = {}

        def run_connect() -> None:
            try:
                box["result"] = connect_project(
                    client,
                    pid,
                    backend.url,
                    title="labelwheel",
                    basic_auth=backend.auth,
                    timeout=60,
                )
            except Exception as exc:
                box["error"] = exc

        connecting = threading.Thread(target=run_connect, daemon=True)
        connecting.start()
        connecting.join(timeout=max(1.0, stop_at - time.time()))
        if "error" in box:
            raise box["error"]
        if connecting.is_alive():  # deadline: record what the pool work got to
            ls_log = ls.log_path.read_text(errors="replace")
            chunks = ls_log.count("retrieve_tasks_predictions") + ls_log.count("import/predictions")
            out["connect_incomplete"] = {
                "after_s": round(time.monotonic() - t_connect, 1),
                "chunks_done": chunks // 2,  # Label Studio logs each request twice
                "tasks_asked_for": min(n, chunks // 2 * DEFAULT_PACING.chunk_size),
            }
            out["pool_job"] = (backend.versions(pid).get("pool") or [None])[0]
            out["predict_during_pool_work"] = predictor.finish()
            log(f"N={n}: deadline during connect: {out['connect_incomplete']}")
            return collect()
        result = box["result"]
        t_returned = time.monotonic()
        version = result.model_version
        out["connect_returned_s"] = round(t_returned - t_connect, 1)
        out["cold_version"] = version
        log(f"N={n}: connect returned in {out['connect_returned_s']} s, version {version}")
        poll = 5.0 if n <= 5000 else 15.0

        def all_predicted() -> bool:
            per_task = versions_by_task(client, pid)
            missing = sum(1 for i in ids if version not in per_task.get(i, ()))
            log(f"  N={n}: {n - missing} of {n} tasks have a {version} prediction")
            return missing == 0

        t_all = wait_until(all_predicted, max(60.0, stop_at - time.time()), poll)
        out["connect_to_all_predicted_s"] = round(t_all - t_connect, 1) if t_all else None

        def pool_published() -> bool:
            jobs = backend.versions(pid).get("pool") or []
            states = [
                (j.get("state"), j.get("message"), j.get("provisional_pending")) for j in jobs
            ]
            log(f"  N={n}: pool {states}")
            return (
                bool(jobs)
                and all(j.get("state") in ("published", "ready") for j in jobs)
                and all(not j.get("provisional_pending") for j in jobs)
            )

        t_pool = wait_until(pool_published, max(60.0, stop_at - time.time()), poll)
        out["connect_to_pool_published_s"] = round(t_pool - t_connect, 1) if t_pool else None
        out["pool_job"] = (backend.versions(pid).get("pool") or [None])[0]
        out["predict_during_pool_work"] = predictor.finish()
        out["rss_peak_connect_mib"] = round(sampler.peak_by_phase.get("connect", 0) / 1024)
        log(
            f"N={n}: pool published at {out['connect_to_pool_published_s']} s; "
            f"/predict {out['predict_during_pool_work']}"
        )

        # ---- training: START_TRAINING to the new version on every unlabelled task
        wait_until(lambda: len(annotators.saved) >= ANNOTATE_BEFORE_TRAINING, 300, 1.0)
        out["annotations_before_training"] = len(annotators.saved)
        sampler.phase = "training"
        saved = list(annotators.saved)
        ann_cycle = iter(range(10**9))

        def webhook_one(session: requests.Session) -> requests.Response:
            a = saved[next(ann_cycle) % len(saved)]
            result = [
                {
                    "from_name": "choice",
                    "to_name": "image",
                    "type": "choices",
                    "value": {"choices": [a["label"]]},
                }
            ]
            body = {
                "action": "ANNOTATION_UPDATED",
                "annotation": {
                    "id": a["id"],
                    "result": result,
                    "task": a["task"],
                    "project": pid,
                    "was_cancelled": False,
                },
                "project": {"id": pid, "label_config": config, "model_version": version},
                "task": {"id": a["task"], "data": {"image": a["uri"]}, "project": pid},
            }
            return session.post(backend.url + "/webhook", json=body, auth=backend.auth, timeout=30)

        before = {d["name"] for d in backend.versions(pid).get("details", [])}
        webhooks = Repeater(webhook_one, 0.1)
        predictor2 = Repeater(predict_one, 0.2)
        annotators.cap = ANNOTATE_BEFORE_TRAINING + ANNOTATE_DURING_PUBLISH
        t_train = time.monotonic()
        client.train(result.ml_backend_id)
        webhooks.start()
        predictor2.start()
        new_version: dict[str, str] = {}

        def new_served() -> bool:
            info = backend.versions(pid)
            failed = [r for r in info.get("runs", []) if r.get("status") == "failed"]
            if failed:
                raise RuntimeError(f"training failed: {failed}")
            serving = next((d["name"] for d in info.get("details", []) if d.get("serving")), None)
            if serving and serving not in before:
                new_version["name"] = serving
                return True
            return False

        t_served = wait_until(new_served, max(60.0, stop_at - time.time()), 1.0)
        out["train_to_version_served_s"] = round(t_served - t_train, 1) if t_served else None
        log(
            f"N={n}: new version {new_version.get('name')} served at "
            f"{out['train_to_version_served_s']} s"
        )

        def published_everywhere() -> bool:
            v = new_version.get("name")
            if not v:
                return False
            # cheap first: the backend switches the project's version once its publish is done
            project_version = client.get_project(pid).get("model_version")
            if project_version != v:
                return False
            switched.setdefault("t", time.monotonic())
            unlabelled = [
                int(t["id"])
                for t in client.iter_tasks(pid)
                if not t.get("is_labeled") and not int(t.get("total_annotations") or 0)
            ]
            per_task = versions_by_task(client, pid)
            missing = sum(1 for i in unlabelled if v not in per_task.get(i, ()))
            log(
                f"  N={n}: {len(unlabelled) - missing} of {len(unlabelled)} unlabelled have {v}; "
                f"project ranks by {project_version}"
            )
            return missing == 0 and project_version == v

        switched: dict[str, float] = {}
        t_pub = (
            wait_until(published_everywhere, max(60.0, stop_at - time.time()), 2.0)
            if t_served
            else None
        )
        out["new_version"] = new_version.get("name")
        out["train_to_published_all_s"] = round(t_pub - t_train, 1) if t_pub else None
        out["train_to_project_ranks_by_new_s"] = (
            round(switched["t"] - t_train, 1) if "t" in switched else None
        )
        out["webhook_ack_during_training"] = webhooks.finish()
        out["predict_during_training"] = predictor2.finish()
        return collect()
    finally:
        if backend is not None:
            backend.stop()
        ls.stop()
        LOGS.mkdir(parents=True, exist_ok=True)
        for src, name in ((work / "backend.log", "backend"), (ls.log_path, "label-studio")):
            if src.exists():
                shutil.copy(src, LOGS / f"{name}-{n}.log")


def _collect(
    out: dict[str, Any],
    annotators: Annotators,
    backend: Backend,
    ls: LocalLabelStudio,
    sampler: MemorySampler,
) -> dict[str, Any]:
    """The figures every run reports, also a run cut short by the deadline."""
    if True:
        annotators.stop()
        out["annotations_total"] = len(annotators.saved)
        out["label_studio_seen_by_annotators"] = {
            "statuses": dict(annotators.statuses),
            "5xx_or_timeouts": len(annotators.errors),
            "samples": annotators.errors[:8],
            "latency": {what: summary(v) for what, v in annotators.latencies.items()},
        }
        out["backend_log_errors"] = grep_backend_log(backend.log_path)
        out["label_studio_locked_retries"] = locked_retries(ls.log_path)
        ls_lines = [
            ln
            for ln in ls.log_path.read_text(errors="replace").splitlines()
            if re.search(r'" 5\d\d |database is locked', ln)
        ]
        out["label_studio_log_5xx"] = {"count": len(ls_lines), "samples": ls_lines[:5]}

        # ---- memory
        sampler.stop_event.set()
        sampler.join()
        hwm = status_kib(backend.proc.pid).get("VmHWM", 0)
        out["memory"] = {
            "peak_rss_backend_plus_children_mib": round(sampler.peak_total_kib / 1024),
            "peak_rss_backend_mib": round(sampler.peak_backend_kib / 1024),
            "peak_rss_children_mib": round(sampler.peak_children_kib / 1024),
            "backend_vmhwm_mib": round(hwm / 1024),
            "children_vmhwm_mib": {
                str(k): round(v / 1024) for k, v in sampler.children_hwm_kib.items()
            },
            "peak_by_phase_mib": {k: round(v / 1024) for k, v in sampler.peak_by_phase.items()},
            "samples": len(sampler.series),
            "series_every_10th": sampler.series[::10],
        }
        out["load_after"] = [round(v, 2) for v in os.getloadavg()]
        out["uptime_after"] = uptime()
    return out


# -- report -------------------------------------------------------------------------------------


def _v(x: Any, unit: str = "") -> str:
    return "-" if x is None else f"{x}{unit}"


HEADER = [
    "N",
    "load before → after",
    "connect → all predicted",
    "→ pool published",
    "/predict p50 / p99 (pool work)",
    "LS 5xx + timeouts: annotators / backend log",
    "peak RSS backend + children",
    "START_TRAINING → served / on every unlabelled",
    "webhook ack p50 / p99 (training)",
]


def _row(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return [f"{r['n_tasks']:,}", str(r.get("load_before")), f"failed: {r['error'][:160]}"]
    p, mem = r["predict_during_pool_work"], r["memory"]
    w = r.get("webhook_ack_during_training") or {"p50_ms": None, "p99_ms": None, "n": 0}
    if "connect_incomplete" in r:
        c = r["connect_incomplete"]
        r = {
            **r,
            "connect_to_all_predicted_s": f"not done: {c['tasks_asked_for']:,} tasks "
            f"in {c['after_s']}",
            "connect_to_pool_published_s": None,
        }
    return [
        f"{r['n_tasks']:,}",
        f"{r['load_before'][0]} → {r['load_after'][0]}",
        _v(r.get("connect_to_all_predicted_s"), " s"),
        _v(r.get("connect_to_pool_published_s"), " s"),
        f"{_v(p['p50_ms'], ' ms')} / {_v(p['p99_ms'], ' ms')} (n={p['n']}, errors {p['errors']})",
        f"{r['label_studio_seen_by_annotators']['5xx_or_timeouts']} / "
        f"{r['backend_log_errors']['count']}",
        f"{mem['peak_rss_backend_plus_children_mib']} MiB (backend "
        f"{mem['peak_rss_backend_mib']}, children {mem['peak_rss_children_mib']})",
        f"{_v(r.get('train_to_version_served_s'), ' s')} / "
        f"{_v(r.get('train_to_published_all_s'), ' s')}",
        f"{_v(w['p50_ms'], ' ms')} / {_v(w['p99_ms'], ' ms')} (n={w['n']})",
    ]


DETAIL_HEADER = [
    "N",
    "annotators' GET /next p50 / p99 / max (over 1 s)",
    "saving an annotation p50 / p99",
    "'database is locked' retried inside LS",
    "first /predict (backbone load)",
    "/predict p99 after the first",
    "connect returned",
    "START_TRAINING → project ranks by new version",
]


def _lat(d: dict[str, Any] | None) -> str:
    if not d or not d.get("n"):
        return "-"
    return (
        f"{d['p50_ms']:.0f} / {d['p99_ms']:.0f} / {d['max_ms']:.0f} ms ({d['over_1s']} of {d['n']})"
    )


def _detail_row(r: dict[str, Any]) -> list[str]:
    lat = r["label_studio_seen_by_annotators"].get("latency") or {}
    post = lat.get("POST annotations")
    locked = r.get("label_studio_locked_retries")
    p = r["predict_during_pool_work"]
    return [
        f"{r['n_tasks']:,}",
        _lat(lat.get("GET next")),
        f"{post['p50_ms']:.0f} / {post['p99_ms']:.0f} ms" if post and post.get("n") else "-",
        str(locked["count"]) if locked else "-",
        _v(p.get("first_ms"), " ms"),
        _v(p.get("p99_after_first_ms"), " ms"),
        _v(r.get("connect_returned_s"), " s"),
        _v(r.get("train_to_project_ranks_by_new_s"), " s"),
    ]


def markdown(report: dict[str, Any]) -> str:
    """The results table and the notes as markdown."""
    lines = [
        "# Big project: a real Label Studio 1.23.2 and a real backend (issue 11)",
        "",
        f"Measured {report['environment']['date_utc']} UTC on a shared 2-core machine (a full "
        "test suite and other engineers' jobs ran beside it): latency and time figures depend "
        "on that load (load average per size below); 5xx counts and memory do not. "
        "Script: `benchmarks/big_project.py`.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    for r in report["sizes"]:
        cells = _row(r)
        lines.append("| " + " | ".join(cells + [""] * (len(HEADER) - len(cells))) + " |")
    lines += ["", "Details:", "", "| " + " | ".join(DETAIL_HEADER) + " |"]
    lines.append("|" + "---|" * len(DETAIL_HEADER))
    for r in report["sizes"]:
        if "error" not in r:
            lines.append("| " + " | ".join(_detail_row(r)) + " |")
    lines += [
        "",
        "Targets: LS 5xx/timeouts 0; peak RSS ≤ 2 GiB at 20,000; /predict p99 ≤ 1 s; "
        "webhook ack p99 ≤ 50 ms.",
        "",
    ]
    lines += report.get("notes", [])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--deadline", default=None, help="HH:MM UTC: stop waiting then")
    parser.add_argument("--out", default="big_project")
    parser.add_argument("--append", action="store_true", help="keep other sizes' results")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the .json")
    args = parser.parse_args()
    if args.render:
        report = json.loads((RESULTS / f"{args.out}.json").read_text())
        (RESULTS / f"{args.out}.md").write_text(markdown(report))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    stop_at = time.time() + 10 * 3600
    if args.deadline:
        hh, mm = (int(x) for x in args.deadline.split(":"))
        now = time.gmtime()
        stop_at = calendar.timegm((now.tm_year, now.tm_mon, now.tm_mday, hh, mm, 0, 0, 0, 0))
    ls_bin = find_ls_bin()
    creds = {
        "username": f"admin-{secrets.token_hex(4)}@example.com",
        "password": secrets.token_urlsafe(24),
        "token": secrets.token_hex(20),
    }
    report: dict[str, Any] = {"environment": environment(), "sizes": [], "notes": []}
    if args.append and (RESULTS / f"{args.out}.json").exists():
        report = json.loads((RESULTS / f"{args.out}.json").read_text())
        report["sizes"] = [r for r in report["sizes"] if r["n_tasks"] not in sizes]
    git = ["git", "-C", str(ROOT)]
    report["environment"]["git_head"] = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    report["environment"]["uncommitted_labelwheel_files"] = subprocess.run(
        [*git, "status", "--short", "labelwheel"], capture_output=True, text=True
    ).stdout.split("\n")
    report["environment"]["uptime_before"] = subprocess.run(
        ["uptime"], capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="big-project-") as tmp:
        base = Path(tmp)
        log("migrating a fresh Label Studio data dir")
        template = prepare_data_dir(base / "template" / "data", ls_bin=ls_bin, **creds)
        for n in sizes:
            if time.time() > stop_at:
                report["notes"].append(f"N={n} not run: deadline reached.")
                continue
            log(f"N={n}: start (load {os.getloadavg()[0]:.1f})")
            try:
                row = run_size(n, template, creds, ls_bin, base, stop_at)
            except Exception as exc:
                row = {
                    "n_tasks": n,
                    "error": repr(exc)[:2000],
                    "load_before": [round(v, 2) for v in os.getloadavg()],
                }
                log(f"N={n}: failed: {exc!r}")
            report["sizes"].append(row)
            report["sizes"].sort(key=lambda r: r["n_tasks"])
            report["environment"]["uptime_after"] = subprocess.run(
                ["uptime"], capture_output=True, text=True
            ).stdout.strip()
            write_json(RESULTS / f"{args.out}.json", report)
            (RESULTS / f"{args.out}.md").write_text(markdown(report))
            log(f"N={n}: written")
    print(markdown(report))


if __name__ == "__main__":
    main()
