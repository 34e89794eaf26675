"""Peak memory of /predict on 25-megapixel images: a real ``labelwheel serve`` process.

Issue 10: "12 distinct 25-megapixel PNGs in a 1.3 MB request took the process from 0.96 to
2.4 GiB". This script sends 64 distinct 25-megapixel images (6000x4200, smooth gradients with
shapes, PNG: the worst case, since a PNG cannot be decoded at reduced size the way a JPEG can)
to a fresh backend process per batch size and reads the process's peak resident memory
(``VmHWM`` in ``/proc/<pid>/status``) once the backbone is loaded and after the last request.

For every batch size (tasks per /predict request) the same 64 images are sent, in 64/b requests,
by one of two routes (``--source``):

- ``files`` (default): Label Studio local-files URLs (``/data/local-files/?d=...``) read from
  ``LABELWHEEL_LOCAL_FILES_ROOT``; like uploads and cloud storage, the request holds references
  only, so the peak shows what the backend's image path costs;
- ``data``: ``data:`` URIs inside the request, as in the issue's report; the parsed request then
  holds every image's base64 text (about 0.5 MB per task here) until it is answered, so the peak
  grows by the request's size on top.

The bounds it checks, for every batch size: the growth of the process's peak over its peak once
warmed up (backbone loaded, one small image predicted) <= ``--bound-growth-mib`` (256 MiB), the
absolute peak <= ``--bound-mib`` (1280 MiB; the warmed-up process alone takes about 1 GiB, most
of it PyTorch), and, for ``--source files``, the spread of peaks across batch sizes <=
``--max-spread-mib`` (96 MiB).

    .venv/bin/python benchmarks/predict_memory.py [--batches 1,8,64 --n 64 --source files]

Writes ``benchmarks/results/predict_memory.json``. Generated images are cached under
``benchmarks/.cache/predict_memory/`` (first run: about 2.5 s per image).
"""

from __future__ import annotations

import argparse
import base64
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(__file__).resolve().parent / ".cache" / "predict_memory"

WIDTH, HEIGHT = 6000, 4200  # 25.2 megapixels
DEFAULT_BOUND_MIB = 1280
DEFAULT_BOUND_GROWTH_MIB = 256
DEFAULT_MAX_SPREAD_MIB = 96

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="choice" toName="image"><Choice value="a"/><Choice value="b"/></Choices>
</View>"""


def make_image(seed: int, width: int = WIDTH, height: int = HEIGHT, fmt: str = "png") -> bytes:
    """One distinct large image: smooth gradients (compress well, like scans and renders), a
    dozen filled ellipses and a noise patch placed by ``seed``."""
    import io

    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    x = np.arange(width, dtype=np.int32)[None, :]
    y = np.arange(height, dtype=np.int32)[:, None]
    step = 16 + seed % 17
    arr = np.empty((height, width, 3), dtype=np.uint8)
    arr[..., 0] = (x // step) % 256
    arr[..., 1] = (y // (step + 3)) % 256
    arr[..., 2] = ((x + y) // 40 + seed) % 256
    image = Image.fromarray(arr)
    del arr
    draw = ImageDraw.Draw(image)
    big = max(8, min(width, height) // 5)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width - big)), int(rng.integers(0, height - big))
        x1, y1 = x0 + int(rng.integers(big // 8, big)), y0 + int(rng.integers(big // 8, big))
        draw.ellipse((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    side = min(64, width // 4, height // 4)
    patch = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    image.paste(patch, (int(rng.integers(0, width - side)), int(rng.integers(0, height - side))))
    buf = io.BytesIO()
    if fmt == "jpeg":
        image.save(buf, format="JPEG", quality=85)
    else:
        image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def images(n: int, fmt: str, width: int = WIDTH, height: int = HEIGHT) -> list[bytes]:
    """``n`` distinct images, generated once and cached on disk."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out = []
    for seed in range(n):
        path = CACHE / f"{width}x{height}-{seed}.{fmt}"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(make_image(seed, width, height, fmt))
            tmp.replace(path)
        out.append(path.read_bytes())
    return out


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


class ServedBackend:
    """``labelwheel serve`` as a real process on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        import requests

        self.log = open(log_path, "ab")  # closed in stop()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "labelwheel.cli", "serve", "--port", str(port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("backend did not start: " + log_path.read_text()[-3000:])

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        self.log.close()


def backend_env(model_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a benchmark backend: defaults, no Label Studio, one torch thread."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LABELWHEEL_", "LABEL_STUDIO_"))
    }
    env.update(
        {
            "MODEL_DIR": str(model_dir),
            "LABELWHEEL_RETRAIN_EVERY": "0",
            "LABELWHEEL_PUBLISH": "false",
            # whole requests are measured, however long their huge images take
            "LABELWHEEL_PREDICT_BUDGET": "0",
            "LABELWHEEL_LOG_LEVEL": "WARNING",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra or {})
    return env


def data_uri(blob: bytes, mime: str) -> str:
    """``blob`` as a base64 data: URI."""
    return f"data:{mime};base64," + base64.b64encode(blob).decode("ascii")


def predict_body(refs: list[str], first_id: int) -> dict[str, Any]:
    """A /predict body shaped like Label Studio's."""
    tasks = [{"id": first_id + i, "data": {"image": ref}} for i, ref in enumerate(refs)]
    return {"tasks": tasks, "project": "1.1700000000", "label_config": CONFIG}


def measure(
    refs: list[str], batch: int, workdir: Path, extra_env: dict[str, str]
) -> dict[str, Any]:
    """Peak RSS of a fresh backend that predicts all ``refs``, ``batch`` tasks per request."""
    import requests

    model_dir = workdir / f"model-{batch}"
    backend = ServedBackend(backend_env(model_dir, extra_env), workdir / f"serve-{batch}.log")
    try:
        # Load the backbone with one small image, so the baseline includes it.
        small = data_uri(make_image(10_000, 320, 240), "image/png")
        warm = requests.post(
            backend.url + "/predict", json=predict_body([small], 10**6), timeout=300
        )
        warm.raise_for_status()
        before = proc_status(backend.proc.pid)
        started = time.perf_counter()
        failures = 0
        for start in range(0, len(refs), batch):
            body = predict_body(refs[start : start + batch], start + 1)
            resp = requests.post(backend.url + "/predict", json=body, timeout=600)
            resp.raise_for_status()
            results = resp.json()["results"]
            assert len(results) == len(body["tasks"]), "one result per task"
            del body
        seconds = time.perf_counter() - started
        metrics = requests.get(backend.url + "/metrics", timeout=30).text
        for line in metrics.splitlines():
            if line.startswith("labelwheel_prediction_image_failures_total "):
                failures = int(float(line.split()[1]))
        after = proc_status(backend.proc.pid)
    finally:
        backend.stop()
    return {
        "batch": batch,
        "requests": -(-len(refs) // batch),
        "baseline_hwm_mib": round(before["VmHWM"] / 1024, 1),
        "baseline_rss_mib": round(before["VmRSS"] / 1024, 1),
        "peak_hwm_mib": round(after["VmHWM"] / 1024, 1),
        "peak_minus_baseline_mib": round((after["VmHWM"] - before["VmHWM"]) / 1024, 1),
        "rss_after_mib": round(after["VmRSS"] / 1024, 1),
        "image_failures": failures,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    """Run the benchmark and write benchmarks/results/predict_memory.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,8,64", help="tasks per /predict request")
    parser.add_argument("--n", type=int, default=64, help="distinct images in all")
    parser.add_argument("--format", choices=("png", "jpeg"), default="png")
    parser.add_argument("--source", choices=("files", "data"), default="files")
    parser.add_argument("--bound-mib", type=float, default=DEFAULT_BOUND_MIB)
    parser.add_argument("--bound-growth-mib", type=float, default=DEFAULT_BOUND_GROWTH_MIB)
    parser.add_argument("--max-spread-mib", type=float, default=DEFAULT_MAX_SPREAD_MIB)
    parser.add_argument("--out", default="predict_memory.json", help="file in results/")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    print(f"generating/reading {args.n} images of {WIDTH}x{HEIGHT} ({args.format}) ...", flush=True)
    blobs = images(args.n, args.format)
    mime = "image/jpeg" if args.format == "jpeg" else "image/png"
    extra: dict[str, str] = {}
    if args.source == "files":
        extra["LABELWHEEL_LOCAL_FILES_ROOT"] = str(CACHE)
        refs = [
            f"/data/local-files/?d={WIDTH}x{HEIGHT}-{seed}.{args.format}" for seed in range(args.n)
        ]
    else:
        refs = [data_uri(b, mime) for b in blobs]
    runs = []
    with tempfile.TemporaryDirectory(prefix="lw-predict-mem-") as tmp:
        for batch in batches:
            run = measure(refs, batch, Path(tmp), extra)
            print(json.dumps(run), flush=True)
            runs.append(run)
    peaks = [r["peak_hwm_mib"] for r in runs]
    spread = max(peaks) - min(peaks)
    result = {
        "benchmark": "predict_memory",
        "images": args.n,
        "image_pixels": WIDTH * HEIGHT,
        "image_size": f"{WIDTH}x{HEIGHT}",
        "format": args.format,
        "source": args.source,
        "mean_image_bytes": int(np.mean([len(b) for b in blobs])),
        "backend_settings": "defaults (efficientnet-lite0, 224 px, batch 32), OMP_NUM_THREADS=1",
        "runs": runs,
        "bound_mib": args.bound_mib,
        "bound_growth_mib": args.bound_growth_mib,
        "max_spread_mib": args.max_spread_mib,
        "spread_mib": round(spread, 1),
        "within_bound": max(peaks) <= args.bound_mib
        and all(r["peak_minus_baseline_mib"] <= args.bound_growth_mib for r in runs),
        "independent_of_batch": spread <= args.max_spread_mib if args.source == "files" else None,
        "no_image_failures": all(r["image_failures"] == 0 for r in runs),
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "measured": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
