"""Two-stage selection over shards (:mod:`labelwheel.selectors.sharded`) vs one-stage selection
on the whole pool: quality and time on a sample that fits one process.

Pool: synthetic clustered embeddings (200 Gaussian clusters of uneven sizes), N x d float32,
cut into S shards in pool order. Quality of a diversity pick: the covering radius (largest
distance from a pool sample to its nearest pick, lower is better) and the mean distance to the
nearest pick; for margin: the share of one-stage picks the two-stage pick also has.
Stage one runs shard after shard here (one process); on a cluster the shards run in parallel,
so the two-stage wall time there is about the slowest shard plus the final stage.

Second part, over an embedding store on disk (:func:`labelwheel.distributed.selection.
select_store`, what ``labelwheel select`` runs): ``--store-rows`` x ``--store-dim`` clustered
float32 written by the store writer in ``--store-shards`` shards; two-stage selection read shard
by shard in this process and as Ray tasks on a local Ray (one task per shard, one CPU each),
against one-stage selection on the whole matrix; quality over the whole pool (exact search).
Then faiss IVF against exact search for stage two's distance query when the candidate set is
large: every sampled pool vector's nearest candidate among the union of the shards' candidates.

    nice -n 10 .venv/bin/python benchmarks/sharded_selection.py [--n-pool 100000 --shards 10
        --pick 500 --store-rows 200000 --store-dim 256 --store-shards 20 --store-pick 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from labelwheel.distributed.selection import load_shard, select_store, store_shards  # noqa: E402
from labelwheel.features.store import EmbeddingStore  # noqa: E402
from labelwheel.selectors import select  # noqa: E402
from labelwheel.selectors.coverage import nearest_distances, pick_index  # noqa: E402
from labelwheel.selectors.sharded import select_two_stage, shard_candidates  # noqa: E402


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


def _in_memory(args: argparse.Namespace) -> list[str]:
    """Part one: shards of a matrix in memory, as before."""
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
    return [
        "## Shards of a matrix in memory",
        "",
        f"{args.n_pool:,} x {args.dim} clustered float32, {args.shards} shards, "
        f"{args.pick} picks, candidates per shard = picks; stage one shard after shard in "
        f"one process. Load average at start {tuple(round(v, 2) for v in load)}.",
        "",
        "| strategy | covering radius, two / one | mean nearest distance, two / one | "
        "reference | one-stage s | two-stage s |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
        *rows,
        "",
    ]


def _embedding_like_pool(n: int, d: int, seed: int, latent: int = 12) -> np.ndarray:
    """Unit-norm vectors near a ``latent``-dimensional clustered manifold (200 clusters of
    uneven sizes and widths) lifted to ``d`` dims, like L2-normalised backbone features; at
    256 isotropic Gaussian dims (``_pool``) every point is about equally far from every
    other, and random picks cover as well as any strategy."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(200, latent))
    widths = rng.uniform(0.3, 1.5, 200)
    weights = rng.pareto(1.5, 200) + 0.05
    labels = rng.choice(200, n, p=weights / weights.sum())
    z = centres[labels] + widths[labels, None] * rng.normal(size=(n, latent))
    x = z @ (rng.normal(size=(latent, d)) / np.sqrt(latent)) + 0.05 * rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def _write_store(root: Path, rows: int, dim: int, shards: int) -> np.ndarray:
    x = _embedding_like_pool(rows, dim, 7)
    store = EmbeddingStore.create(root, "synthetic", 0, dim)
    for part in np.array_split(np.arange(rows), shards):
        store.append([f"/pool/{i}.jpg" for i in part], [f"{i:064x}" for i in part], x[part])
    return x


def _positions(result: Any, offsets: dict[int, int]) -> np.ndarray:
    return np.array([offsets[p.shard] + p.row for p in result.picks], dtype=np.int64)


def _exact_nearest(x: np.ndarray, picks: np.ndarray) -> np.ndarray:
    return nearest_distances(x, pick_index(x[picks], kind="flat"))[0]


def _store(args: argparse.Namespace, stats: dict[str, Any]) -> list[str]:
    """Part two: an embedding store on disk (a temporary folder, removed after)."""
    import shutil

    tmp = Path(tempfile.mkdtemp(prefix="lw-sharded-"))
    try:
        return _store_in(tmp / "store", args, stats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _store_in(root: Path, args: argparse.Namespace, stats: dict[str, Any]) -> list[str]:
    """In-process vs Ray local over a store written at ``root``, and IVF vs exact."""
    import ray

    n, pick = args.store_rows, args.store_pick
    t0 = time.perf_counter()
    x = _write_store(root, n, args.store_dim, args.store_shards)
    write_s = time.perf_counter() - t0
    sizes = [len(load_shard(root, s)[0]) for s in store_shards(root)]
    offsets = dict(zip(store_shards(root), np.cumsum([0, *sizes[:-1]]).tolist(), strict=True))
    load = os.getloadavg()
    stats["store"] = {
        "rows": n,
        "dim": args.store_dim,
        "shards": len(sizes),
        "pick": pick,
        "write_s": write_s,
        "load_before": load,
    }
    t0 = time.perf_counter()
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        object_store_memory=512 * 2**20,
    )
    ray_init_s = time.perf_counter() - t0
    stats["store"]["ray_init_s"] = ray_init_s
    rng = np.random.default_rng(3)
    rnd = _exact_nearest(x, rng.choice(n, pick, replace=False))
    rows = []
    for strategy in ("kcenter", "kmeans"):
        t0 = time.perf_counter()
        one = select(strategy, pick, embeddings=x)
        t_one = time.perf_counter() - t0
        here = select_store(root, pick, strategy)
        rays = []
        for _ in range(2):  # the first run also starts Ray's worker processes
            t0 = time.perf_counter()
            rays.append(select_store(root, pick, strategy, ray_address="local"))
            rays[-1].stage_one_s = time.perf_counter() - t0 - rays[-1].stage_two_s
        same = all([p.ref for p in r.picks] == [p.ref for p in here.picks] for r in rays)
        n1 = _exact_nearest(x, one)
        n2 = _exact_nearest(x, _positions(here, offsets))
        entry = {
            "one_stage_s": t_one,
            "in_process_stage_one_s": here.stage_one_s,
            "in_process_stage_two_s": here.stage_two_s,
            "ray_stage_one_s": [r.stage_one_s for r in rays],
            "ray_stage_two_s": [r.stage_two_s for r in rays],
            "ray_same_picks": same,
            "candidates": here.candidates,
            "radius_two_over_one": float(n2.max() / n1.max()),
            "p99_two_over_one": float(np.percentile(n2, 99) / np.percentile(n1, 99)),
            "mean_two_over_one": float(n2.mean() / n1.mean()),
            "random_radius_over_one": float(rnd.max() / n1.max()),
            "random_p99_over_one": float(np.percentile(rnd, 99) / np.percentile(n1, 99)),
            "random_mean_over_one": float(rnd.mean() / n1.mean()),
            "rows_per_s_per_core_stage_one": n / here.stage_one_s,
        }
        stats["store"][strategy] = entry
        rows.append(
            f"| {strategy} | {entry['radius_two_over_one']:.3f} | "
            f"{entry['p99_two_over_one']:.3f} | {entry['mean_two_over_one']:.3f} | "
            f"x{entry['random_radius_over_one']:.2f}, x{entry['random_p99_over_one']:.2f}, "
            f"x{entry['random_mean_over_one']:.2f} | {t_one:.1f} | "
            f"{here.stage_one_s:.1f} + {here.stage_two_s:.1f} | "
            f"{rays[0].stage_one_s:.1f} / {rays[1].stage_one_s:.1f} + "
            f"{rays[1].stage_two_s:.1f} | {'yes' if same else 'NO'} |"
        )
    ray.shutdown()

    # IVF vs exact for stage two's distance query over a large candidate set: the union of the
    # shards' k-center candidates (shards x pick rows) searched by a sample of the pool
    parts = []
    for s in store_shards(root):
        ids, vec = load_shard(root, s)
        parts.append(shard_candidates("kcenter", pick, (ids, vec, None)))
    cand = np.concatenate([p[1] for p in parts])
    sample = x[np.random.default_rng(4).choice(n, min(n, args.ivf_queries), replace=False)]
    t0 = time.perf_counter()
    flat = pick_index(cand, kind="flat")
    exact, exact_idx = nearest_distances(sample, flat)
    t_flat = time.perf_counter() - t0
    ivf_rows = []
    stats["ivf"] = {"candidates": len(cand), "queries": len(sample), "flat_s": t_flat, "runs": []}
    for nprobe in (4, None, 16):  # None: pick_index's default
        t0 = time.perf_counter()
        index = pick_index(cand, kind="ivf", nprobe=nprobe)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        approx, approx_idx = nearest_distances(sample, index)
        t_search = time.perf_counter() - t0
        run = {
            "nlist": index.nlist,
            "nprobe": index.nprobe,
            "build_s": t_build,
            "search_s": t_search,
            "recall_at_1": float((approx_idx == exact_idx).mean()),
            "radius_ratio": float(approx.max() / exact.max()),
            "mean_ratio": float(approx.mean() / exact.mean()),
        }
        stats["ivf"]["runs"].append(run)
        ivf_rows.append(
            f"| IVF nlist {run['nlist']}, nprobe {run['nprobe']} | {run['build_s']:.2f} | "
            f"{run['search_s']:.2f} | {run['recall_at_1']:.1%} | {run['radius_ratio']:.4f} | "
            f"{run['mean_ratio']:.4f} |"
        )
    after = os.getloadavg()
    stats["store"]["load_after"] = after
    return [
        "## An embedding store on disk, in-process vs Ray local",
        "",
        f"{n:,} x {args.store_dim} float32, unit-norm rows near a 12-d clustered manifold "
        "(200 clusters; `_embedding_like_pool`), written by the store writer in "
        f"{len(sizes)} shards of {sizes[0]:,} rows ({n * args.store_dim * 4 / 2**20:.0f} MiB, "
        f"{write_s:.1f} s to write); {pick} picks, candidates per shard = picks. Two-stage "
        "selection reads one shard at a time (`select_store`, what `labelwheel select` runs); "
        "one-stage holds the whole matrix. Quality over the whole pool (exact search). Ray "
        f"local: {os.cpu_count()} CPUs, one task per shard, `ray.init` {ray_init_s:.1f} s "
        "(not counted); first run / second run (the first also starts Ray's worker "
        "processes). Load average before "
        f"{tuple(round(v, 2) for v in load)}, after {tuple(round(v, 2) for v in after)}.",
        "",
        "| strategy | covering radius, two / one | 99th percentile nearest distance, two / one "
        "| mean nearest distance, two / one | random (radius, p99, mean) / one | one-stage s | "
        "in-process s, stage one + two | Ray local s, stage one (1st / 2nd) + two | Ray picks "
        "= in-process |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |",
        *rows,
        "",
        f"Stage two's distance query over a large candidate set: {len(sample):,} sampled pool "
        f"vectors, nearest of the {len(cand):,} k-center candidates (union of the shards'), "
        f"faiss, one thread. Exact (`IndexFlatL2`): {t_flat:.2f} s.",
        "",
        "| index | build s | search s | same nearest as exact | radius / exact | "
        "mean distance / exact |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| exact | - | {t_flat:.2f} | 100% | 1 | 1 |",
        *ivf_rows,
        "",
    ]


def _shard_scale(args: argparse.Namespace, stats: dict[str, Any]) -> list[str]:
    """Part three: stage one on one shard at the 100 M plan's scale (wall and CPU seconds)."""
    x = _embedding_like_pool(args.shard_rows, args.store_dim, 11)
    load = os.getloadavg()
    rows = []
    stats["shard"] = {"rows": args.shard_rows, "dim": args.store_dim, "pick": args.shard_pick}
    for strategy in ("kcenter", "kmeans"):
        w0, c0 = time.perf_counter(), time.process_time()
        picks = select(strategy, args.shard_pick, embeddings=x)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        stats["shard"][strategy] = {"wall_s": wall, "cpu_s": cpu, "picked": len(picks)}
        rows.append(f"| {strategy} | {wall:.1f} | {cpu:.1f} |")
    return [
        "## One stage-one shard at the plan's scale",
        "",
        f"{args.shard_rows:,} x {args.store_dim} float32 (`_embedding_like_pool`, "
        f"{x.nbytes / 2**30:.2f} GiB), {args.shard_pick:,} candidates, in one process "
        f"(numpy/faiss threads as the selectors set them). Load average at start "
        f"{tuple(round(v, 2) for v in load)}, after "
        f"{tuple(round(v, 2) for v in os.getloadavg())}.",
        "",
        "| strategy | wall s | CPU s (all threads) |",
        "| --- | ---: | ---: |",
        *rows,
        "",
    ]


def _provenance() -> str:
    """The commit measured, and whether the selectors differed from it (helpers share a tree)."""
    import subprocess

    def git(*cmd: str) -> str:
        out = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.rstrip("\n")

    changed = git("status", "--porcelain", "labelwheel/selectors").splitlines()
    state = (
        "selectors as committed"
        if not changed
        else "selectors with uncommitted changes: " + ", ".join(c[3:] for c in changed)
    )
    return f"Commit `{git('rev-parse', '--short', 'HEAD')}`, {state}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-pool", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--pick", type=int, default=500)
    parser.add_argument("--store-rows", type=int, default=200_000)
    parser.add_argument("--store-dim", type=int, default=256)
    parser.add_argument("--store-shards", type=int, default=20)
    parser.add_argument("--store-pick", type=int, default=1000)
    parser.add_argument("--ivf-queries", type=int, default=50_000)
    parser.add_argument("--shard-rows", type=int, default=1_000_000)
    parser.add_argument("--shard-pick", type=int, default=10_000)
    parser.add_argument(
        "--parts", default="memory,store", help="comma-separated: memory, store, shard"
    )
    parser.add_argument("--out", default="sharded_selection", help="results/<out>.md/.json")
    args = parser.parse_args()
    stats: dict[str, Any] = {}
    lines = [
        "# Two-stage selection over shards vs one-stage",
        "",
        f"Shared 2-core machine (other jobs running; run with `nice -n 10`). {_provenance()}",
        "",
    ]
    if "memory" in args.parts:
        lines += _in_memory(args)
    if "store" in args.parts:
        lines += _store(args, stats)
    if "shard" in args.parts:
        lines += _shard_scale(args, stats)
    text = "\n".join(lines)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(text)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(stats, indent=1, default=str) + "\n")
    print(text)


if __name__ == "__main__":
    main()
