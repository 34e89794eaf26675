"""/predict throughput (images/s) against the backbone's bare batched forward pass, same run.

Target: /predict >= 0.9x the bare forward pass. Both see images they have never embedded (the
/predict side gets fresh images every round, so its embedding cache never helps); /predict also
decodes data: URIs, hashes, writes the cache, ranks and validates. Rounds alternate between the
two to share the machine's noise; the best round of each is reported.

    .venv/bin/python benchmarks/backend_predict_throughput.py [--size 112 --n 128 --rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="choice" toName="image"><Choice value="a"/><Choice value="b"/></Choices>
</View>"""


def photo_crops(count: int, seed: int) -> list[bytes]:
    """Distinct real-photo crops (scikit-image photos), 200x200 PNG."""
    import skimage.data

    photos = [
        getattr(skimage.data, n)()
        for n in ("astronaut", "chelsea", "coffee", "rocket", "horse", "camera")
    ]
    photos = [np.stack([p] * 3, -1) if p.ndim == 2 else p[..., :3] for p in photos]
    photos = [(p.astype(np.float32) * (255.0 / max(1, p.max()))).astype(np.uint8) for p in photos]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        p = photos[int(rng.integers(len(photos)))]
        y = int(rng.integers(0, p.shape[0] - 200))
        x = int(rng.integers(0, p.shape[1] - 200))
        buf = io.BytesIO()
        Image.fromarray(p[y : y + 200, x : x + 200]).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def main() -> None:
    """Run the benchmark and write benchmarks/results/backend_predict_throughput.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--n", type=int, default=128, help="images per round")
    parser.add_argument("--batch", type=int, default=64, help="tasks per /predict call")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch

    from labelwheel.features import load_backbone
    from labelwheel.ml_backend import create_app, get_service

    backbone = load_backbone("efficientnet-lite0", args.size, args.batch)
    tmp = tempfile.TemporaryDirectory()
    app = create_app(
        {
            "MODEL_DIR": tmp.name,
            "LABELWHEEL_IMAGE_SIZE": str(args.size),
            "LABELWHEEL_BATCH_SIZE": str(args.batch),
            "LABELWHEEL_PUBLISH": "false",
            "BACKBONE_LOADER": lambda: backbone,
        },
        environ={},
    )
    client = app.test_client()
    bare_ips, predict_ips = [], []
    # warm-up of both paths
    warm = photo_crops(args.batch, seed=999)
    backbone.embed([Image.open(io.BytesIO(b)) for b in warm])
    client.post("/predict", json=_body(warm, 10**6))
    for rnd in range(args.rounds):
        bare_imgs = [Image.open(io.BytesIO(b)).convert("RGB") for b in photo_crops(args.n, rnd)]
        started = time.perf_counter()
        backbone.embed(bare_imgs)
        bare_ips.append(args.n / (time.perf_counter() - started))

        fresh = photo_crops(args.n, 1000 + rnd)
        bodies = [
            _body(fresh[i : i + args.batch], rnd * 10**5 + i) for i in range(0, args.n, args.batch)
        ]
        started = time.perf_counter()
        for body in bodies:
            resp = client.post("/predict", json=body)
            assert resp.status_code == 200, resp.get_json()
            assert len(resp.get_json()["results"]) == len(body["tasks"])
        predict_ips.append(args.n / (time.perf_counter() - started))
        print(f"round {rnd}: bare {bare_ips[-1]:.1f} img/s, /predict {predict_ips[-1]:.1f} img/s")
    embedded = get_service(app).model.images_embedded
    get_service(app).close()
    tmp.cleanup()
    result = {
        "benchmark": "backend_predict_throughput",
        "image_size": args.size,
        "images_per_round": args.n,
        "batch": args.batch,
        "rounds": args.rounds,
        "bare_images_per_s": [round(x, 2) for x in bare_ips],
        "predict_images_per_s": [round(x, 2) for x in predict_ips],
        "best_ratio": round(max(predict_ips) / max(bare_ips), 3),
        "median_ratio": round(float(np.median(np.array(predict_ips) / np.array(bare_ips))), 3),
        "target_ratio": 0.9,
        "images_embedded_by_backend": embedded,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    result["meets_target"] = result["best_ratio"] >= 0.9
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "backend_predict_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _body(images: list[bytes], first_id: int) -> dict:
    tasks = [
        {
            "id": first_id + i,
            "data": {"image": "data:image/png;base64," + base64.b64encode(b).decode()},
        }
        for i, b in enumerate(images)
    ]
    return {"tasks": tasks, "project": "1.1", "label_config": CONFIG}


if __name__ == "__main__":
    main()
