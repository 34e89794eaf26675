"""Real backend processes for the crash tests: ``labelwheel serve`` started, SIGKILLed and
restarted on one MODEL_DIR, and a local image server whose ``/slow/`` paths hold a fetch until
the test releases them (the deterministic "mid-training" window)."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ImageServer:
    """Serves PNGs by index; paths under /slow/ wait until ``release`` is set."""

    def __init__(self, images: list[bytes]) -> None:
        self.images = images
        self.release = threading.Event()
        self.slow_requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                if parts[0] == "slow":
                    outer.slow_requests += 1
                    outer.release.wait(120)
                data = outer.images[int(parts[-1].split(".")[0])]
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Backend:
    """``labelwheel serve`` as a real process."""

    def __init__(self, env: dict[str, str], log_path: Path, start_timeout: float = 90.0) -> None:
        self.log = open(log_path, "ab")  # closed in stop()
        for _attempt in range(3):  # a free port can be taken by another process meanwhile
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "labelwheel.cli", "serve", "--port", str(port)],
                env=env,
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + start_timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if requests.get(self.url + "/health", timeout=1).status_code == 200:
                        return
                except requests.ConnectionError:
                    pass
                time.sleep(0.1)
            if self.proc.poll() is None:
                break
        self.stop()
        raise AssertionError("backend did not start: " + log_path.read_text()[-3000:])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def serve_env(model_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a backend process: this one's, minus labelwheel/Label Studio settings,
    plus ``MODEL_DIR``, no publishing and one thread; ``settings`` on top."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LABELWHEEL_", "LABEL_STUDIO_"))
    }
    env.update({"MODEL_DIR": str(model_dir), "LABELWHEEL_PUBLISH": "false", "OMP_NUM_THREADS": "1"})
    env.update(settings)
    return env


def backend_env(model_dir: Path, user: str, password: str, **settings: str) -> dict[str, str]:
    """:func:`serve_env` with basic auth, a small image size, no automatic retraining and the
    local image server allowed."""
    base = {
        "BASIC_AUTH_USER": user,
        "BASIC_AUTH_PASS": password,
        "LABELWHEEL_IMAGE_SIZE": "64",
        "LABELWHEEL_RETRAIN_EVERY": "0",
        "LABELWHEEL_ALLOWED_HOSTS": "127.0.0.1",
    }
    return serve_env(model_dir, **{**base, **settings})


def basic_auth(user: str, password: str) -> dict[str, str]:
    """The Authorization header for basic auth."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def wait_for(predicate: Callable[[], Any], timeout: float, log_path: Path | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    tail = log_path.read_text()[-3000:] if log_path is not None and log_path.exists() else ""
    raise AssertionError("timed out; log:\n" + tail)
