"""``labelwheel embed``: Ray local (an actor pool on this machine) vs in-process throughput.

Same images (natural-photo JPEG crops, as in ``embed_throughput.py``), same backbone and size
(efficientnet-lite0, 224 px), a fresh store per round. In-process: one Embedder (ONNX Runtime,
the machine's cores as intra-op threads, decoding threads overlapping the forward pass). Ray:
``ray.init(num_cpus=CORES)`` once, then each round is one Ray Data job with ``CORES`` actors of
one CPU each (Ray sets ``OMP_NUM_THREADS=1`` in them), timed from submission to the last shard
written. Each path runs a job of N/2 and one of N images per round: the difference gives the
marginal rate a long job sees, start-up (actors, one backbone per actor) cancelled out.
Rounds alternate; best and median are reported with the load average
(this is a shared machine: rerun it alone for clean numbers).

    .venv/bin/python benchmarks/ray_embed.py [--n 384 --rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, Path(__file__).resolve().parent):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from embed_throughput import natural_photos  # noqa: E402

from labelwheel.distributed import EmbedSource, run_embed  # noqa: E402

SIZE = 224
BACKBONE = "efficientnet-lite0"


def _load() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"load_1m": round(one, 2), "load_5m": round(five, 2), "load_15m": round(fifteen, 2)}


def _job(
    source: EmbedSource, out: Path, ray_address: str | None, actors: int, actor_cpus: int = 1
) -> float:
    """Seconds for one whole job into a fresh store."""
    t0 = time.perf_counter()
    result = run_embed(
        source,
        out,
        backbone=BACKBONE,
        image_size=SIZE,
        batch_size=16,
        shard_rows=1024,
        ray_address=ray_address,
        actors=actors,
        actor_cpus=actor_cpus,
    )
    seconds = time.perf_counter() - t0
    if result.failed or result.embedded != result.listed:
        raise SystemExit(f"job failed: {result.failed[:3]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import ray

    cores = os.cpu_count() or 1
    before = _load()
    paths = {
        "in-process": (None, 1, 1),
        f"ray local, {cores} actors x 1 CPU": ("local", cores, 1),
        f"ray local, 1 actor x {cores} CPUs": ("local", 1, cores),
    }
    whole: dict[str, list[float]] = {k: [] for k in paths}
    marginal: dict[str, list[float]] = {k: [] for k in paths}
    fixed: dict[str, list[float]] = {k: [] for k in paths}
    skipped = dict.fromkeys(paths, 0)
    half = args.n // 2
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "all", Path(tmp) / "half"
        big.mkdir()
        small.mkdir()
        for i, path in enumerate(natural_photos(big, args.n, seed=0)):
            if i < half:
                (small / path.name).write_bytes(path.read_bytes())
        sources = {"all": EmbedSource(str(big)), "half": EmbedSource(str(small))}
        _job(sources["half"], Path(tmp) / "warm", None, 1)  # ONNX export cached, page cache
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        try:
            for r in range(args.rounds):
                for i, (key, (address, actors, cpus)) in enumerate(paths.items()):
                    t_half = _job(sources["half"], Path(tmp) / f"{r}-{i}h", address, actors, cpus)
                    t_all = _job(sources["all"], Path(tmp) / f"{r}-{i}a", address, actors, cpus)
                    whole[key].append(args.n / t_all)
                    if t_all - t_half < 0.25 * t_all:  # noise swamped the difference: no rate
                        skipped[key] += 1
                        continue
                    rate = (args.n - half) / (t_all - t_half)
                    marginal[key].append(rate)
                    fixed[key].append(t_all - args.n / rate)
                print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in whole.items()))
        finally:
            ray.shutdown()
    after = _load()

    def best(table: dict[str, list[float]], k: str) -> float:
        return max(table[k], default=float("nan"))

    def median(table: dict[str, list[float]], k: str) -> float:
        return sorted(table[k])[len(table[k]) // 2] if table[k] else float("nan")

    def overhead(table: dict[str, list[float]], pick: Any, key: str) -> float:
        return 1 - pick(table, key) / pick(table, "in-process")

    rays = [k for k in paths if k != "in-process"]
    lines = [
        "# labelwheel embed: Ray local vs in-process (images/s at 224 px)",
        "",
        f"{BACKBONE}, natural-photo JPEGs, jobs of {half} and {args.n} images per path and "
        f"round, {args.rounds} alternating rounds, ray {ray.__version__}, {cores} CPUs. "
        f"In-process: one Embedder, ONNX Runtime with {cores} threads. Ray: a Ray instance "
        "started once; each job starts its actors (Ray sets OMP_NUM_THREADS to an actor's "
        "CPUs, and its ONNX Runtime session takes that many threads) and loads one backbone "
        "per actor. Marginal rate = the extra images of the big job / its extra seconds "
        "(start-up cancels out: what a long job sees); fixed cost = the big job's seconds "
        "minus its images at the marginal rate; a round whose big job took less than 4/3 of "
        f"its small one gives no marginal rate (rounds without one: {skipped}). 1-minute load "
        f"average before {before}, after {after}.",
        "",
        "| path | whole job, best | whole job, median | marginal, best | marginal, median "
        "| fixed cost per job, median s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in paths:
        lines.append(
            f"| {k} | {best(whole, k):.1f} | {median(whole, k):.1f} | "
            f"{best(marginal, k):.1f} | {median(marginal, k):.1f} | {median(fixed, k):.1f} |"
        )
    lines.append("")
    for k in rays:
        steady = overhead(marginal, median, k)
        lines.append(
            f"- {k}: overhead vs in-process, whole {args.n}-image job "
            f"{overhead(whole, best, k):+.0%} (best), {overhead(whole, median, k):+.0%} "
            f"(median); marginal (a long job) {overhead(marginal, best, k):+.0%} (best), "
            f"{steady:+.0%} (median). Target <= 15% for a long job: "
            f"{'met' if steady <= 0.15 else 'not met'} (median rounds)."
        )
    lines.append("")
    lines.append(
        "Overhead = 1 - Ray's images/s / in-process images/s. Actors take up to 2 "
        "batches each at a time."
    )
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray_embed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
