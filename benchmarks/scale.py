"""Scale (issue 3, benchmark 3): 1,000,000 × 512 embeddings, 10,000 picks; ranked batch vs modAL.

Three parts, each strategy measured in a fresh child process so that memory is its own:

1. ``kcenter``, ``kmeans``, ``typiclust``, ``cluster_margin`` pick 10,000 from synthetic
   1,000,000 × 512 float32 embeddings (200 Gaussian clusters of uneven size and spread, not
   uniform noise; ``cluster_margin`` also gets 10-class probabilities). Measured: wall time of
   ``select`` and peak *extra* memory = the process's peak resident set (``VmHWM``, reset with
   ``/proc/self/clear_refs`` once the inputs are built) minus its resident set before ``select``.
   This sees numpy's and faiss's C allocations, which ``tracemalloc`` does not.
   Targets: ≤ 60 s and ≤ 0.5 × the matrix (1 GiB) each.
2. Approximation quality of ``kcenter``: on a 50,000-point sample of the same distribution,
   pick 500 with labelwheel (its large-pool, approximate path forced with ``exact=False``, and
   its default) and with an exact greedy k-center written here; covering radius
   (max distance from any point to its nearest pick) ratio to exact, random picks for scale.
3. Ranked batch at N = 100,000, n = 100 with 100 labelled: labelwheel's ``ranked_batch`` vs
   modAL's ``uncertainty_batch_sampling`` on the same inputs: time, speed-up, and overlap of
   the picks. (Label efficiency of the two is compared on real data in ``peers.py``.)

Writes ``results/scale.json`` and ``results/scale.md``.
Usage: ``python benchmarks/scale.py [--n 1000000 --dim 512 --pick 10000 --threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
from _common import RESULTS, environment, log, write_json

HERE = os.path.dirname(os.path.abspath(__file__))
STRATEGIES = ("kcenter", "kmeans", "typiclust", "cluster_margin")


def clustered(n: int, dim: int, seed: int, n_clusters: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """``(n, dim)`` float32 points from Gaussian clusters of uneven size and spread.

    Built in chunks straight into the output, so the peak is the matrix plus ~100 MB.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (n_clusters, dim)).astype(np.float32) * 3.0
    weights = rng.pareto(1.5, n_clusters) + 0.1
    assign = rng.choice(n_clusters, size=n, p=weights / weights.sum()).astype(np.int32)
    spread = rng.uniform(0.5, 2.0, n_clusters).astype(np.float32)
    X = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):
        part = assign[start : start + 50_000]
        noise = rng.standard_normal((len(part), dim), dtype=np.float32)
        noise *= spread[part, None]
        noise += centres[part]
        X[start : start + len(part)] = noise
    return X, assign


def probabilities(assign: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """Plausible (n, C) class probabilities: cluster c belongs to class c mod C, with noise."""
    rng = np.random.default_rng(seed + 1)
    logits = rng.normal(0.0, 1.0, (len(assign), n_classes)).astype(np.float32)
    logits[np.arange(len(assign)), assign % n_classes] += rng.uniform(0, 4, len(assign))
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): the machine is shared, so wall
    time alone overstates what the code costs."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") <= _status_kib("VmRSS") + 1024


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in a fresh process: build the inputs, then time and measure one ``select``."""
    from threadpoolctl import threadpool_limits

    from labelwheel.selectors import select

    t0 = time.time()
    X, assign = clustered(args.n, args.dim, seed=0)
    probs = probabilities(assign, 10, seed=0) if args.child == "cluster_margin" else None
    del assign
    build_s = time.time() - t0
    rss_before = _status_kib("VmRSS")
    exact_peak = _reset_peak()
    with threadpool_limits(args.threads):
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        idx = select(args.child, args.pick, embeddings=X, probabilities=probs, seed=0)
        seconds = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
    peak = _status_kib("VmHWM")
    return {
        "strategy": args.child,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "build_seconds": build_s,
        "rss_before_mib": rss_before / 1024,
        "peak_extra_mib": (peak - rss_before) / 1024,
        "peak_reset_ok": exact_peak,
        "matrix_mib": X.nbytes / 2**20,
        "extra_over_matrix": (peak - rss_before) * 1024 / X.nbytes,
        "returned": len(idx),
        "distinct": len(np.unique(idx)),
    }


def exact_greedy_kcenter(X: np.ndarray, k: int, first: int) -> np.ndarray:
    """Textbook greedy k-center (Gonzalez 1985): each pick is the point farthest from the picks."""
    picks = [first]
    sq_norms = np.einsum("ij,ij->i", X, X)
    dist = sq_norms - 2 * X @ X[first] + sq_norms[first]
    for _ in range(k - 1):
        nxt = int(np.argmax(dist))
        picks.append(nxt)
        np.minimum(dist, sq_norms - 2 * X @ X[nxt] + sq_norms[nxt], out=dist)
    return np.asarray(picks)


def covering_radius(X: np.ndarray, picks: np.ndarray) -> float:
    """max over points of the distance to the nearest pick."""
    C = X[picks]
    sq = np.einsum("ij,ij->i", C, C)
    best = np.full(len(X), np.inf, dtype=np.float64)
    for start in range(0, len(X), 20_000):
        part = X[start : start + 20_000]
        d = np.einsum("ij,ij->i", part, part)[:, None] - 2 * part @ C.T + sq[None, :]
        best[start : start + len(part)] = d.min(axis=1)
    return float(np.sqrt(max(best.max(), 0.0)))


def quality(threads: int, n: int = 50_000, k: int = 500) -> dict[str, Any]:
    """Covering radius of labelwheel's kcenter vs exact greedy on a sample."""
    import inspect

    from threadpoolctl import threadpool_limits

    from labelwheel.selectors import kcenter, select

    X, _ = clustered(n, 512, seed=1)
    out: dict[str, Any] = {"n": n, "k": k}
    with threadpool_limits(threads):
        t0 = time.perf_counter()
        exact = exact_greedy_kcenter(X, k, first=0)
        out["exact_seconds"] = time.perf_counter() - t0
        out["exact_radius"] = covering_radius(X, exact)
        variants: dict[str, dict[str, Any]] = {"default": {}}
        if "exact" in inspect.signature(kcenter).parameters:
            variants["approximate (exact=False)"] = {"exact": False}
        for label, params in variants.items():
            t0 = time.perf_counter()
            ours = select("kcenter", k, embeddings=X, seed=0, **params)
            seconds = time.perf_counter() - t0
            radius = covering_radius(X, ours)
            out[label] = {
                "seconds": seconds,
                "radius": radius,
                "ratio_to_exact": radius / out["exact_radius"],
            }
        rng = np.random.default_rng(0)
        radius = covering_radius(X, rng.choice(n, k, replace=False))
        out["random"] = {"radius": radius, "ratio_to_exact": radius / out["exact_radius"]}
    return out


class _LearnerView:
    """What modAL's ranked batch reads from a learner: X_training, on_transformed, predict_proba."""

    def __init__(self, X_training: np.ndarray, probs_unlabeled: np.ndarray) -> None:
        self.X_training = X_training
        self.on_transformed = False
        self._probs = probs_unlabeled

    def predict_proba(self, X: np.ndarray, **_: Any) -> np.ndarray:
        assert len(X) == len(self._probs)
        return self._probs


def ranked_batch_child(args: argparse.Namespace) -> dict[str, Any]:
    """One side of the ranked batch comparison, in its own process."""
    from threadpoolctl import threadpool_limits

    X, assign = clustered(args.rb_n, args.dim, seed=2)
    probs = probabilities(assign, 10, seed=2)
    labeled = np.zeros(len(X), dtype=bool)
    labeled[np.random.default_rng(0).choice(len(X), args.rb_labeled, replace=False)] = True
    unlabeled = np.flatnonzero(~labeled)
    with threadpool_limits(args.threads):
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        if args.child == "rb-labelwheel":
            from labelwheel.selectors import select

            idx = select(
                "ranked_batch", args.rb_pick, embeddings=X, probabilities=probs, labeled=labeled
            )
        else:
            from modAL.batch import uncertainty_batch_sampling

            view = _LearnerView(X[labeled], probs[unlabeled])
            local = uncertainty_batch_sampling(view, X[unlabeled], n_instances=args.rb_pick)
            local = local[0] if isinstance(local, tuple) else local
            idx = unlabeled[np.asarray(local, dtype=np.int64)]
        seconds = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
    return {
        "side": args.child,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "picks": [int(i) for i in idx],
    }


def run_child(name: str, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    """Run ``scale.py --child name`` and parse its last stdout line as JSON."""
    cmd = [
        sys.executable, os.path.join(HERE, "scale.py"), "--child", name, "--n", str(args.n),
        "--dim", str(args.dim), "--pick", str(args.pick), "--threads", str(args.threads),
        "--rb-n", str(args.rb_n), "--rb-pick", str(args.rb_pick),
        "--rb-labeled", str(args.rb_labeled),
    ]  # fmt: skip
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "wall_seconds": time.time() - t0}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.time() - t0
    return result


def markdown(data: dict[str, Any]) -> str:
    """Human summary."""
    a = data["args"]
    lines = [
        "# Scale",
        "",
        f"Synthetic clustered embeddings, {a['n']:,} × {a['dim']} float32 "
        f"({a['n'] * a['dim'] * 4 / 2**30:.2f} GiB), {a['threads']} threads on "
        f"{data['env']['cpus']} shared cores (load {data['env']['load_average_at_start'][0]} at "
        f"start); selectors `{data['env']['selectors_sha']}`.",
        "",
        f"## Picking {a['pick']:,} (targets: ≤ 60 s, peak extra memory ≤ 0.5 × matrix)",
        "",
        "| strategy | wall s | CPU s | peak extra MiB | × matrix | met |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in data["pick"].items():
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | - | - | - | no |")
            continue
        met = r["seconds"] <= 60 and r["extra_over_matrix"] <= 0.5
        cpu = f"{r['cpu_seconds']:.1f}" if "cpu_seconds" in r else "-"
        lines.append(
            f"| {name} | {r['seconds']:.1f} | {cpu} | {r['peak_extra_mib']:.0f} | "
            f"{r['extra_over_matrix']:.2f} | {'yes' if met else '**no**'} |"
        )
    q = data.get("quality")
    if q:
        lines += [
            "",
            f"## k-center quality ({q['n']:,} sampled points, {q['k']} picks)",
            "",
            f"Exact greedy k-center: covering radius {q['exact_radius']:.2f} "
            f"({q['exact_seconds']:.1f} s).",
            "",
            "| picks | covering radius | ratio to exact | seconds |",
            "|---|---|---|---|",
        ]
        for label in ("default", "approximate (exact=False)", "random"):
            if label in q:
                r = q[label]
                secs = f"{r['seconds']:.1f}" if "seconds" in r else "-"
                lines.append(
                    f"| {label} | {r['radius']:.2f} | {r['ratio_to_exact']:.3f} | {secs} |"
                )
    rb = data.get("ranked_batch")
    if rb:
        lines += [
            "",
            f"## Ranked batch, N = {a['rb_n']:,}, n = {a['rb_pick']}, "
            f"{a['rb_labeled']} labelled (target: ≥ 10× faster than modAL)",
            "",
        ]
        for label, r in (
            ("labelwheel `ranked_batch`", rb.get("labelwheel", {})),
            ("modAL `uncertainty_batch_sampling`", rb.get("modAL", {})),
        ):
            if "seconds" in r:
                cpu = f", {r['cpu_seconds']:.2f} s CPU" if "cpu_seconds" in r else ""
                lines.append(f"- {label}: {r['seconds']:.2f} s wall{cpu}")
            else:
                lines.append(f"- {label}: {r.get('error', 'not run')}")
        if "speedup" in rb:
            lines.append(
                f"- speed-up **{rb['speedup']:.0f}×**; same picks: {rb['overlap']} of "
                f"{a['rb_pick']} (same order: {rb['same_order']})"
            )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--pick", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rb-n", type=int, default=100_000)
    parser.add_argument("--rb-pick", type=int, default=100)
    parser.add_argument("--rb-labeled", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--parts", default="pick,quality,ranked_batch")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--render", action="store_true", help="rewrite scale.md from scale.json")
    args = parser.parse_args()

    if args.render:
        (RESULTS / "scale.md").write_text(
            markdown(json.loads((RESULTS / "scale.json").read_text()))
        )
        return

    if args.child in STRATEGIES:
        print(json.dumps(child(args)))
        return
    if args.child in ("rb-labelwheel", "rb-modAL"):
        print(json.dumps(ranked_batch_child(args)))
        return

    parts = set(args.parts.split(","))
    data: dict[str, Any] = {"args": vars(args) | {"child": None}, "env": environment()}
    out = RESULTS / "scale.json"

    def save() -> None:
        write_json(out, data)
        (RESULTS / "scale.md").write_text(markdown(data))

    if "pick" in parts:
        data["pick"] = {}
        for name in STRATEGIES:
            log(f"scale: {name} picks {args.pick} of {args.n} × {args.dim}")
            data["pick"][name] = run_child(name, args, args.timeout)
            log(f"  {data['pick'][name]}")
            save()
    else:
        data["pick"] = {}
    if "quality" in parts:
        log("scale: k-center quality on a sample")
        data["quality"] = quality(args.threads)
        log(f"  {data['quality']}")
        save()
    if "ranked_batch" in parts:
        log(f"scale: ranked batch N={args.rb_n} n={args.rb_pick}")
        ours = run_child("rb-labelwheel", args, args.timeout)
        log(f"  labelwheel {ours.get('seconds', ours)}")
        theirs = run_child("rb-modAL", args, args.timeout)
        log(f"  modAL {theirs.get('seconds', theirs)}")
        rb: dict[str, Any] = {"labelwheel": ours, "modAL": theirs}
        if "seconds" in ours and "seconds" in theirs:
            rb["speedup"] = theirs["seconds"] / ours["seconds"]
            rb["overlap"] = len(set(ours["picks"]) & set(theirs["picks"]))
            rb["same_order"] = ours["picks"] == theirs["picks"]
        elif "seconds" in ours and "wall_seconds" in theirs:
            rb["speedup_at_least"] = theirs["wall_seconds"] / ours["seconds"]
        data["ranked_batch"] = rb
        save()
    log("scale: done")


if __name__ == "__main__":
    main()
