"""Backbone throughput (images/s at 224 px): torch eager vs ONNX Runtime, same run, same images.

Two paths, each for both runtimes:

- **bare**: the forward pass alone on preprocessed ``(n, 3, 224, 224)`` float32 inputs, at the
  Embedder's pass size (8 at 224 px) and at 32;
- **end-to-end from files**: :class:`labelwheel.features.Embedder` on file paths (read, hash,
  decode with reduced-size JPEG decoding, shrink, normalise, forward; its decoding threads
  overlap the forward pass), a fresh embedder per round so its cache never helps.

Images: natural photos (distinct crops of the scikit-image and scikit-learn photos, 480-640 px
JPEGs) and small PNGs (MNIST digits at 112 px, as the demo serves them). Rounds alternate
between the runtimes so both share the machine's noise; the best and the median round are
reported, with the machine's load average before and after (this is a shared 2-core machine:
rerun it alone for clean numbers).

    .venv/bin/python benchmarks/embed_throughput.py [--n 48 --rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZE = 224
TARGET = 2.5
BARE_KEYS = ("b8", "b32", "1thread_b8")


def natural_photos(directory: Path, count: int, seed: int) -> list[Path]:
    """``count`` distinct JPEG crops (480-640 px on the long side) of real photos."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [getattr(skimage.data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket")]
    photos += list(load_sample_images().images)
    photos = [p[..., :3] for p in photos]
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        p = photos[i % len(photos)]
        h, w = p.shape[:2]
        ch, cw = int(h * rng.uniform(0.7, 1.0)), int(w * rng.uniform(0.7, 1.0))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        img = Image.fromarray(np.ascontiguousarray(p[y : y + ch, x : x + cw]))
        scale = rng.uniform(480, 640) / max(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)))
        path = directory / f"photo-{seed}-{i:04d}.jpg"
        img.save(path, format="JPEG", quality=90)
        paths.append(path)
    return paths


def small_pngs(directory: Path, count: int, seed: int) -> list[Path]:
    """``count`` MNIST digits as 112 px RGB PNGs (the demo's images)."""
    from labelwheel.demo_data import digit_to_rgb, load_mnist_sample

    digits, _ = load_mnist_sample(max(10, count), seed=seed)
    paths = []
    for i, digit in enumerate(digits[:count]):
        path = directory / f"digit-{seed}-{i:04d}.png"
        digit_to_rgb(digit, 112).save(path, format="PNG")
        paths.append(path)
    return paths


def _rate(n: int, fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return n / (time.perf_counter() - started)


def _passes(net: Any, chunks: list[np.ndarray]) -> Callable[[], Any]:
    return lambda: [net.forward(chunk) for chunk in chunks]


def _summary(rates: list[float]) -> dict[str, Any]:
    return {
        "rounds": [round(r, 2) for r in rates],
        "best": round(max(rates), 2),
        "median": round(float(np.median(rates)), 2),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_info() -> dict[str, Any]:
    one, five, fifteen = os.getloadavg()
    return {"load_1m": round(one, 2), "load_5m": round(five, 2), "load_15m": round(fifteen, 2)}


def main() -> None:
    """Run the benchmark; write benchmarks/results/embed_throughput.{json,md}."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=48, help="images per set and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "embed_throughput"))
    args = parser.parse_args()

    import onnxruntime
    import torch

    from labelwheel.features import Embedder, load_backbone
    from labelwheel.features.runtime import (
        inference_threads,
        model_cache_dirs,
        onnx_model_name,
        onnx_session,
        weights_digest,
    )
    from labelwheel.media import read_file

    load_before = _load_info()
    with contextlib.redirect_stdout(sys.stderr):
        runtimes = {
            "torch": load_backbone("efficientnet-lite0", SIZE, 32, inference="torch"),
            "onnx": load_backbone("efficientnet-lite0", SIZE, 32, inference="onnx"),
        }
    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)
    sets = {
        "photos": [natural_photos(root, args.n, seed=r) for r in range(args.rounds)],
        "small_pngs": [small_pngs(root, args.n, seed=r) for r in range(args.rounds)],
    }
    warm = runtimes["torch"].preprocess(
        [Image.open(p).convert("RGB") for p in sets["photos"][0][:8]]
    )
    for net in runtimes.values():
        net.forward(warm)
    # One core each (per-core throughput: less at the mercy of other processes on the machine).
    torch_threads = torch.get_num_threads()
    name = onnx_model_name("efficientnet-lite0", SIZE, weights_digest(runtimes["torch"]._net))
    path = next(d / name for d in model_cache_dirs() if (d / name).is_file())
    session_1 = onnx_session(path, threads=1)

    def onnx_1(chunks: list[np.ndarray]) -> Callable[[], Any]:
        return lambda: [session_1.run(None, {"input": c}) for c in chunks]

    def torch_1(chunks: list[np.ndarray]) -> Callable[[], Any]:
        def run() -> None:
            torch.set_num_threads(1)
            try:
                for c in chunks:
                    runtimes["torch"].forward(c)
            finally:
                torch.set_num_threads(torch_threads)

        return run

    onnx_1([warm])()
    torch_1([warm])()

    bare: dict[str, list[float]] = {f"{k}_b{b}": [] for k in runtimes for b in (8, 32)}
    bare.update({"torch_1thread_b8": [], "onnx_1thread_b8": []})
    e2e: dict[str, list[float]] = {f"{k}_{s}": [] for k in runtimes for s in sets}
    for rnd in range(args.rounds):
        images = [Image.open(p).convert("RGB") for p in sets["photos"][rnd]]
        inputs = runtimes["torch"].preprocess(images)
        for batch in (8, 32):
            for key, net in runtimes.items():
                chunks = [inputs[i : i + batch] for i in range(0, len(inputs), batch)]
                bare[f"{key}_b{batch}"].append(_rate(len(inputs), _passes(net, chunks)))
        chunks = [inputs[i : i + 8] for i in range(0, len(inputs), 8)]
        bare["torch_1thread_b8"].append(_rate(len(inputs), torch_1(chunks)))
        bare["onnx_1thread_b8"].append(_rate(len(inputs), onnx_1(chunks)))
        for set_name, rounds in sets.items():
            refs = [str(p) for p in rounds[rnd]]
            for key, net in runtimes.items():
                embedder = Embedder(
                    "efficientnet-lite0", SIZE, 32, cache_root=None, loader=lambda net=net: net
                )
                try:
                    embedder.backbone()  # the loaded runtime: only embedding is timed
                    started = time.perf_counter()
                    out = embedder.embed_refs(refs, lambda ref: read_file(Path(ref), 20 * 2**20))
                    rate = len(refs) / (time.perf_counter() - started)
                finally:
                    embedder.close()
                assert not any(out.errors), out.errors
                e2e[f"{key}_{set_name}"].append(rate)
        print(
            f"round {rnd}: "
            + ", ".join(f"{k} {v[-1]:.1f}" for k, v in {**bare, **e2e}.items())
            + " img/s",
            file=sys.stderr,
            flush=True,
        )
    tmp.cleanup()

    result: dict[str, Any] = {
        "benchmark": "embed_throughput",
        "backbone": "efficientnet-lite0",
        "image_size": SIZE,
        "images_per_round": args.n,
        "bare_images_per_s": {k: _summary(v) for k, v in bare.items()},
        "end_to_end_images_per_s": {k: _summary(v) for k, v in e2e.items()},
        "target_bare_speedup": TARGET,
        "torch_threads": torch_threads,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "onnx_threads": inference_threads(),
        "machine": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_before": load_before,
        "load_after": _load_info(),
    }
    bare_rates = result["bare_images_per_s"]
    speedups = {
        key: round(bare_rates[f"onnx_{key}"]["best"] / bare_rates[f"torch_{key}"]["best"], 2)
        for key in BARE_KEYS
    }
    speedups.update(
        {
            f"end_to_end_{s}": round(
                result["end_to_end_images_per_s"][f"onnx_{s}"]["best"]
                / result["end_to_end_images_per_s"][f"torch_{s}"]["best"],
                2,
            )
            for s in sets
        }
    )
    result["speedup_best_round"] = speedups
    result["speedup_median_round"] = {
        key: round(bare_rates[f"onnx_{key}"]["median"] / bare_rates[f"torch_{key}"]["median"], 2)
        for key in BARE_KEYS
    }
    result["meets_target"] = max(speedups["b8"], speedups["b32"]) >= TARGET
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(json.dumps(result, indent=2))


def markdown(result: dict[str, Any]) -> str:
    """The result as a short markdown report."""
    lines = [
        f"# Backbone throughput at {result['image_size']} px: torch eager vs ONNX Runtime",
        "",
        f"{result['backbone']}, {result['images_per_round']} images per round, "
        f"best of {len(next(iter(result['bare_images_per_s'].values()))['rounds'])} rounds "
        f"(median in brackets). torch {result['torch']} ({result['torch_threads']} threads), "
        f"onnxruntime {result['onnxruntime']} ({result['onnx_threads']} threads). "
        f"{result['cpu']}, {result['cpu_count']} CPUs; load average before "
        f"{result['load_before']}, after {result['load_after']}.",
        "",
        "| path | torch eager | ONNX Runtime | speed-up |",
        "| --- | ---: | ---: | ---: |",
    ]
    b, e, s = (
        result["bare_images_per_s"],
        result["end_to_end_images_per_s"],
        result["speedup_best_round"],
    )
    for key, label in zip(BARE_KEYS, ("batch 8", "batch 32", "1 thread, batch 8"), strict=True):
        t, o = b[f"torch_{key}"], b[f"onnx_{key}"]
        lines.append(
            f"| bare, {label} | {t['best']} ({t['median']}) | {o['best']} ({o['median']}) "
            f"| {s[key]}x |"
        )
    for name, label in (("photos", "natural photos (JPEG)"), ("small_pngs", "small PNGs")):
        t, o = e[f"torch_{name}"], e[f"onnx_{name}"]
        lines.append(
            f"| files → vectors, {label} | {t['best']} ({t['median']}) | {o['best']} "
            f"({o['median']}) | {s[f'end_to_end_{name}']}x |"
        )
    lines += [
        "",
        f"Target: bare path >= {result['target_bare_speedup']}x torch eager: "
        f"{'met' if result['meets_target'] else 'not met'}. Median-round bare speed-ups: "
        + ", ".join(f"{k} {v}x" for k, v in result["speedup_median_round"].items())
        + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
