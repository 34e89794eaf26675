"""Webhook acknowledgement latency over real HTTP while a training runs (target p99 <= 50 ms).

The backend runs as its own process (``labelwheel serve``, as Label Studio would reach it); a
project is given real
labelled images (sklearn digits, 10 classes) whose embeddings are computed once up front, then
trainings are started back to back and ANNOTATION_CREATED webhooks are sent (one at a time, as
Label Studio does) only while a training is running. Each webhook is durably written to SQLite
(fsync) before it is acknowledged.

    .venv/bin/python benchmarks/backend_webhook_latency.py [--labels 1500 --events 400]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="choice" toName="image">'
    + "".join(f'<Choice value="d{i}"/>' for i in range(10))
    + "</Choices></View>"
)


def event(ann_id: int, uri: str, label: str) -> dict[str, Any]:
    """An ANNOTATION_CREATED payload shaped like Label Studio 1.23's."""
    result = [
        {
            "from_name": "choice",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]
    return {
        "action": "ANNOTATION_CREATED",
        "annotation": {
            "id": ann_id,
            "result": result,
            "task": ann_id,
            "project": 1,
            "was_cancelled": False,
            "prediction": {"result": result},
        },
        "project": {"id": 1, "label_config": CONFIG, "model_version": "v1"},
        "task": {"id": ann_id, "data": {"image": uri}},
    }


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile in milliseconds."""
    return float(np.percentile(np.array(values) * 1000.0, q))


def main() -> None:
    """Run the benchmark and write benchmarks/results/backend_webhook_latency.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=int, default=1500)
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    from sklearn.datasets import load_digits

    digits = load_digits()
    uris = []
    for img in digits.images:
        buf = io.BytesIO()
        arr = np.kron((img / 16 * 255).astype(np.uint8), np.ones((4, 4), dtype=np.uint8))
        Image.fromarray(arr).save(buf, format="PNG")
        uris.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    labels = [f"d{t}" for t in digits.target]

    tmp = tempfile.TemporaryDirectory()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **{
            k: v for k, v in os.environ.items() if not k.startswith(("LABELWHEEL_", "LABEL_STUDIO"))
        },
        "MODEL_DIR": tmp.name,
        "LABELWHEEL_IMAGE_SIZE": str(args.size),
        "LABELWHEEL_RETRAIN_EVERY": "0",
        "LABELWHEEL_PUBLISH": "false",
        "LABELWHEEL_LOG_LEVEL": "WARNING",
    }
    log = open(Path(tmp.name) / "backend.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelwheel.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    session = requests.Session()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if session.get(url + "/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
            time.sleep(0.2)

        def training() -> bool:
            return bool(session.get(url + "/health", timeout=10).json()["training"])

        def wait_idle() -> None:
            while training():
                time.sleep(0.2)

        def start_training() -> None:
            session.post(url + "/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})

        n = min(args.labels, len(uris))
        print(f"storing {n} annotations and embedding their images once ...")
        for i in range(n):
            session.post(url + "/webhook", json=event(i + 1, uris[i], labels[i]), timeout=10)
        started = time.perf_counter()
        start_training()
        time.sleep(0.5)
        wait_idle()
        first_training = time.perf_counter() - started

        def timed_event(ann_id: int) -> float:
            i = ann_id % len(uris)
            t0 = time.perf_counter()
            resp = session.post(url + "/webhook", json=event(ann_id, uris[i], labels[i]))
            elapsed = time.perf_counter() - t0
            assert resp.status_code == 200, resp.text
            return elapsed

        idle = [timed_event(50_000 + k) for k in range(100)]
        during: list[float] = []
        trainings = 0
        next_id = 100_000
        while len(during) < args.events:
            start_training()
            trainings += 1
            t_wait = time.monotonic()
            while not training() and time.monotonic() - t_wait < 5:
                time.sleep(0.005)
            while len(during) < args.events:
                elapsed = timed_event(next_id)
                next_id += 1
                if not training():
                    break
                during.append(elapsed)
        wait_idle()
        versions = session.get(url + "/versions").json()["versions"]
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        tmp.cleanup()
    result = {
        "benchmark": "backend_webhook_latency",
        "transport": "HTTP to `labelwheel serve` in its own process, one request at a time",
        "labels_in_training": n,
        "first_training_s_incl_embedding": round(first_training, 2),
        "trainings_during_measurement": trainings,
        "versions_trained": len(versions),
        "idle": {
            "n": len(idle),
            "p50_ms": round(percentile(idle, 50), 2),
            "p99_ms": round(percentile(idle, 99), 2),
        },
        "during_training": {
            "n": len(during),
            "p50_ms": round(percentile(during, 50), 2),
            "p99_ms": round(percentile(during, 99), 2),
            "max_ms": round(max(during) * 1000, 2),
        },
        "target_p99_ms": 50,
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    result["meets_target"] = result["during_training"]["p99_ms"] <= 50
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "backend_webhook_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
