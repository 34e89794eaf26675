"""Two-stage selection over shards (:mod:`labelwheel.selectors.sharded`) vs one-stage selection
on the whole pool: quality and time on a sample that fits one process.

Pool: synthetic clustered embeddings (200 Gaussian clusters of uneven sizes), N x d float32,
cut into S shards in pool order. Quality of a diversity pick: the covering radius (largest
distance from a pool sample to its nearest pick, lower is better) and the mean distance to the
nearest pick; for margin: the share of one-stage picks the two-stage pick also has.
Stage one runs shard after shard here (one process); on a cluster the shards run in parallel,
so the two-stage wall time there is about the slowest shard plus the final stage.

    .venv/bin/python benchmarks/sharded_selection.py [--n-pool 100000 --shards 10 --pick 500]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from labelwheel.selectors import select  # noqa: E402
from labelwheel.selectors.sharded import select_two_stage  # noqa: E402


def _pool(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(200, d))
    weights = rng.pareto(1.5, 200) + 0.05
    labels = rng.choice(200, n, p=weights / weights.sum())
    return (centres[labels] + rng.normal(size=(n, d))).astype(np.float32)


def _nearest(x: np.ndarray, picks: np.ndarray) -> np.ndarray:
    c = x[picks].astype(np.float64)
    cc = (c**2).sum(1)
    out = np.empty(len(x))
    for s in range(0, len(x), 20000):
        part = x[s : s + 20000].astype(np.float64)
        d2 = (part**2).sum(1)[:, None] - 2 * part @ c.T + cc[None, :]
        out[s : s + 20000] = np.sqrt(np.maximum(d2.min(1), 0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-pool", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--pick", type=int, default=500)
    args = parser.parse_args()
    x = _pool(args.n_pool, args.dim, 0)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(len(x), 10)) * 2
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ids = np.arange(len(x))
    parts = np.array_split(ids, args.shards)
    load = os.getloadavg()
    rows = []
    for strategy in ("kcenter", "kmeans", "margin"):
        kw = {"probabilities": proba} if strategy == "margin" else {}
        t0 = time.perf_counter()
        one = select(strategy, args.pick, embeddings=x, **kw)
        t_one = time.perf_counter() - t0
        shards = [(p, x[p], proba[p] if strategy == "margin" else None) for p in parts]
        t0 = time.perf_counter()
        two = select_two_stage(strategy, args.pick, shards)
        t_two = time.perf_counter() - t0
        if strategy == "margin":
            overlap = len(set(one.tolist()) & set(two.tolist())) / len(one)
            rows.append(
                f"| {strategy} | - | - | {overlap:.0%} of one-stage picks | "
                f"{t_one:.1f} | {t_two:.1f} |"
            )
            continue
        n1, n2 = _nearest(x, one), _nearest(x, two)
        rnd = _nearest(x, rng.choice(len(x), args.pick, replace=False))
        rows.append(
            f"| {strategy} | {n2.max() / n1.max():.3f} | {n2.mean() / n1.mean():.3f} | "
            f"random: radius x{rnd.max() / n1.max():.2f}, mean x{rnd.mean() / n1.mean():.2f} | "
            f"{t_one:.1f} | {t_two:.1f} |"
        )
    text = "\n".join(
        [
            "# Two-stage selection over shards vs one-stage",
            "",
            f"{args.n_pool:,} x {args.dim} clustered float32, {args.shards} shards, "
            f"{args.pick} picks, candidates per shard = picks; stage one shard after shard in "
            f"one process. Load average at start {tuple(round(v, 2) for v in load)} "
            "(shared 2-core machine, other jobs running).",
            "",
            "| strategy | covering radius, two / one | mean nearest distance, two / one | "
            "reference | one-stage s | two-stage s |",
            "| --- | ---: | ---: | --- | ---: | ---: |",
            *rows,
            "",
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sharded_selection.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
