"""Offline study behind ``test_e2e_accuracy.py``'s target and margin (a script, not a test).

The e2e test's 300 images (``write_demo_images(..., 300, size=112, seed=1)``), the same backbone
and input size, the backend's default selector (``adaptive``) choosing batches of 10, and a head
like the backend's (logistic regression on standardised embeddings): accuracy on the 300 images
after each batch, served order (A, deterministic) and random order (R, one line per seed).

    .venv/bin/python tests/e2e/e2e_margin_study.py --seeds 10

Measured (2 CPU cores, ~3 min, 2026-12-01): A 0.54 0.60 0.75 0.75 (10..40 labels); the ten
random orders gave 0.28-0.54 after 10 labels and 0.45-0.62 after 20 (one of them, 0.54 / 0.62,
as good as served order). The test's target and margin are explained in its docstring.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np


def main() -> None:
    """Run the study and print one line per arm and seed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--pool", type=int, default=300)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--budget", type=int, default=80)
    args = parser.parse_args()

    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from labelwheel.demo_data import write_demo_images
    from labelwheel.features import load_backbone
    from labelwheel.selectors import select

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    import tempfile
    from pathlib import Path

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        data = write_demo_images(Path(tmp), args.pool, size=112, seed=1)
        backbone = load_backbone(image_size=112, batch_size=50)
        emb = backbone.embed([Image.open(p).convert("RGB") for p in data.paths])
    x = emb.astype(np.float64)
    y = np.array([int(im.label) for im in data.images])

    def run(served: bool, seed: int) -> list[float]:
        labelled = np.zeros(len(y), bool)
        probs = None
        rng = np.random.default_rng(seed)
        curve = []
        while labelled.sum() < args.budget:
            if served:
                pick = select(
                    "adaptive", args.batch, embeddings=x, probabilities=probs, labeled=labelled
                )
            else:
                pick = rng.choice(np.flatnonzero(~labelled), args.batch, replace=False)
            labelled[pick] = True
            if len(set(y[labelled])) < 2:
                curve.append(0.1)
                continue
            head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
            head.fit(x[labelled], y[labelled])
            probs = np.zeros((len(y), 10))
            probs[:, head.classes_] = head.predict_proba(x)
            curve.append(float((probs.argmax(1) == y).mean()))
        return curve

    print("A", " ".join(f"{a:.2f}" for a in run(True, 0)), flush=True)
    for seed in range(args.seeds):
        print("R", seed, " ".join(f"{a:.2f}" for a in run(False, seed)), flush=True)


if __name__ == "__main__":
    main()
