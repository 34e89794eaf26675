"""Benchmark: does ``labelwheel audit`` find labels that are wrong?

For each real labelled set (sklearn digits on raw pixels; MNIST-5k on its cached EfficientNet-Lite0
embeddings, or on 64 principal components of its raw pixels when they are not cached and
``--embed`` is not given) and each of 10 seeds, 5% of the labels are flipped at random to another
class. The audit
(:func:`labelwheel.lead.audit.audit_pool`: out-of-fold head, confident learning with cleanlab,
near-duplicate, outlier and weak-cluster checks) then ranks every label by suspicion. Measured:

* **top-k** (k = number flipped): precision and recall of the k most suspicious labels (equal,
  since k is the number flipped), against **random flagging** of k labels (the same k, a random
  choice per seed; its expectation is the 5% flip rate);
* **suspects**: precision and recall of the whole list the audit flags (cleanlab's issues plus the
  items the other checks give a reason);
* **suggestion**: among flipped labels the audit flags, the share whose suggested label is the
  original one.

Not a timing benchmark (seconds per audit are recorded for information only). Writes
``benchmarks/results/audit_label_errors.json`` and ``.md`` and prints the table. Run:
``.venv/bin/python benchmarks/audit_label_errors.py [--datasets digits mnist5k] [--seeds 10]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, environment, log, write_json

from labelwheel.datasets import cache_path, load_embeddings
from labelwheel.lead.audit import audit_pool
from labelwheel.pool import Pool

FLIP_SHARE = 0.05


def features(dataset: str, embed: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """(X, y, description): digits on raw pixels; MNIST-5k on cached backbone embeddings, else
    (not cached and no ``--embed``) on its raw pixels reduced to 64 principal components (the
    head on 784 raw pixels converges slowly: minutes per audit on a shared 2-core machine)."""
    if dataset == "mnist5k":
        if embed or cache_path("mnist5k", "efficientnet-lite0", 112, None).exists():
            f = load_embeddings("mnist5k", "efficientnet-lite0", 112, progress=True)
            return f.X, f.y, "EfficientNet-Lite0 embeddings, 112 px"
        from sklearn.decomposition import PCA

        log("mnist5k embeddings are not cached (--embed computes them): raw pixels, PCA 64")
        f = load_embeddings(dataset, "raw")
        x = PCA(n_components=64, random_state=0).fit_transform(f.X).astype(np.float32)
        return x, f.y, "raw pixels, 64 principal components"
    f = load_embeddings(dataset, "raw")
    return f.X, f.y, "raw pixels (standardised)"


def flip_labels(y: np.ndarray, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Flip ``FLIP_SHARE`` of the labels, chosen at random, each to another class at random."""
    rng = np.random.default_rng(seed)
    k = round(FLIP_SHARE * len(y))
    flipped = np.sort(rng.choice(len(y), k, replace=False))
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, n_classes, k)) % n_classes
    return noisy, flipped


def run_seed(x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, Any]:
    """One seed: flip, audit, score the ranking and the suspects against random flagging."""
    n_classes = int(y.max()) + 1
    noisy, flipped = flip_labels(y, n_classes, seed)
    truth = np.zeros(len(y), dtype=bool)
    truth[flipped] = True
    k = int(flipped.size)
    pool = Pool.from_arrays(x, [str(v) for v in noisy], refs=[str(i) for i in range(len(y))])
    t0 = time.perf_counter()
    audit = audit_pool(pool, seed=seed)
    seconds = time.perf_counter() - t0
    top = audit.ranking[:k]
    hits_top = int(truth[top].sum())
    flagged = np.array([int(s.ref) for s in audit.suspects], dtype=np.int64)
    hits_flagged = int(truth[flagged].sum()) if flagged.size else 0
    rand = np.random.default_rng(10_000 + seed).choice(len(y), k, replace=False)
    hits_random = int(truth[rand].sum())
    found = [s for s in audit.suspects if truth[int(s.ref)]]
    right = sum(s.suggested == str(y[int(s.ref)]) for s in found)
    return {
        "seed": seed,
        "n": len(y),
        "flipped": k,
        "top_k_precision": hits_top / k,
        "top_k_recall": hits_top / k,
        "random_precision": hits_random / k,
        "random_recall": hits_random / k,
        "suspects": int(flagged.size),
        "suspects_precision": hits_flagged / flagged.size if flagged.size else 0.0,
        "suspects_recall": hits_flagged / k,
        "cleanlab_issues": audit.label_issues,
        "suggestion_right": right / len(found) if found else None,
        "oof_accuracy": audit.oof_accuracy,
        "seconds": seconds,
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation of each measure over the seeds."""
    keys = [k for k in rows[0] if k not in ("seed", "n", "flipped")]
    out: dict[str, Any] = {"seeds": len(rows), "n": rows[0]["n"], "flipped": rows[0]["flipped"]}
    for key in keys:
        vals = np.array([r[key] for r in rows if r[key] is not None], dtype=np.float64)
        out[key] = {
            "mean": float(vals.mean()),
            "std": float(vals.std(ddof=1)) if vals.size > 1 else 0.0,
        }
    return out


def markdown(results: dict[str, Any]) -> str:
    """The results as a markdown table with a short reading."""
    lines = [
        "# Suspected label errors: `labelwheel audit` on real sets with 5% of labels flipped",
        "",
        f"{results['seeds']} seeds per set; each seed flips a different random 5% of the labels "
        "to another random class, then audits all labels. Top-k: the k most suspicious labels, "
        "k = number flipped (precision = recall). Random: k labels flagged at random. "
        "Suspects: the whole list the audit flags. Mean ± standard deviation over the seeds. "
        "Seconds per audit: wall clock on the machine below, shared with other jobs "
        "(information only, not a timing benchmark).",
        "",
        "| set | features | labels | flipped | top-k precision = recall | random | "
        "suspects | suspects precision | suspects recall | suggestion right | "
        "out-of-fold accuracy | s per audit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pm(d: dict[str, float], pct: bool = True) -> str:
        if pct:
            return f"{100 * d['mean']:.1f}% ± {100 * d['std']:.1f}"
        return f"{d['mean']:.1f} ± {d['std']:.1f}"

    for name, s in results["datasets"].items():
        lines.append(
            f"| {name} | {s['features']} | {s['n']} | {s['flipped']} | {pm(s['top_k_precision'])} "
            f"| {pm(s['random_precision'])} | {pm(s['suspects'], False)} | "
            f"{pm(s['suspects_precision'])} | {pm(s['suspects_recall'])} | "
            f"{pm(s['suggestion_right'])} | {pm(s['oof_accuracy'])} | {pm(s['seconds'], False)} |"
        )
    lines += [
        "",
        "Suspects: cleanlab's issues plus the labels another check gives a reason "
        "(near-duplicate or annotator conflicts, outliers the model does not back, model errors "
        "inside weak clusters). The list is longer than k where the model itself is weak "
        "(lower out-of-fold accuracy): confident learning then also flags hard images whose "
        "label is right. The ranking puts the likely errors first, which is what top-k measures.",
        "",
        f"Environment: {json.dumps(results['environment'])}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist5k"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--embed", action="store_true", help="Compute MNIST-5k embeddings.")
    parser.add_argument("--out", type=Path, default=RESULTS / "audit_label_errors")
    args = parser.parse_args()
    results: dict[str, Any] = {"seeds": args.seeds, "flip_share": FLIP_SHARE, "datasets": {}}
    for name in args.datasets:
        x, y, desc = features(name, args.embed)
        rows = []
        for seed in range(args.seeds):
            rows.append(run_seed(x, y, seed))
            r = rows[-1]
            log(
                f"{name} seed {seed}: top-k {r['top_k_precision']:.3f} (random "
                f"{r['random_precision']:.3f}), suspects {r['suspects']} "
                f"(P {r['suspects_precision']:.3f}, R {r['suspects_recall']:.3f}), "
                f"{r['seconds']:.1f} s"
            )
        summary = summarise(rows)
        summary["features"] = desc
        summary["per_seed"] = rows
        results["datasets"][name] = summary
    import cleanlab

    results["environment"] = {**environment(), "cleanlab": cleanlab.__version__}
    write_json(args.out.with_suffix(".json"), results)
    text = markdown(results)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
