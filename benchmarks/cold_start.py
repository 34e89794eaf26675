"""Cold start: MaxHerding against TypiClust, alone and as ``adaptive``'s first phase (issue 12).

For one data set, with the simulator's loop (0 labels, the product's head, semi-supervised by
default), over several seeds: ``random``, ``typiclust``, ``probcover`` and ``maxherding`` to a
low budget, and ``adaptive`` with ``early="typiclust"`` (the default before this benchmark) and
``early="maxherding"`` to the full budget. Reported: accuracy (mean ± std over seeds) at about
1, 2 and 5 labels per class and at the budget, and labels to 95 % of the full-data accuracy.
Writes ``results/cold_start_<dataset>.{json,md}``.

    nice -n 10 .venv/bin/python benchmarks/cold_start.py --dataset digits --seeds 10 --budget 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, environment, labels_to_target, load_split, log, write_json

from labelwheel.simulate import SimulationResults, run_simulation

LOW = ("random", "typiclust", "probcover", "maxherding")
EARLY = ("typiclust", "maxherding")


def _at(res: SimulationResults, name: str, labels: int) -> dict[str, float]:
    j = int(np.argmin(np.abs(res.labels - labels)))
    col = res.accuracy[name][:, j]
    return {"labels": int(res.labels[j]), "mean": float(col.mean()), "std": float(col.std())}


def _to_target(res: SimulationResults, name: str, target: float) -> dict[str, Any]:
    return labels_to_target(res.labels, res.accuracy[name], target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--low-budget", type=int, default=None, help="default: 10 per class")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--render", metavar="JSON", help="only rewrite the .md of a result")
    args = parser.parse_args()
    if args.render:
        path = Path(args.render)
        path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))
        return
    X_pool, y_pool, X_test, y_test, meta = load_split(args.dataset)
    n_classes = int(np.unique(y_pool).size)
    low = args.low_budget or min(args.budget, 10 * n_classes)
    common: dict[str, Any] = {"batch_size": args.batch_size, "seeds": args.seeds}
    started = time.time()
    log(f"{args.dataset}: {LOW} to {low} labels")
    low_res = run_simulation(X_pool, y_pool, X_test, y_test, list(LOW), budget=low, **common)
    adaptive: dict[str, SimulationResults] = {}
    for early in EARLY:
        log(f"{args.dataset}: adaptive, early={early}, to {args.budget} labels")
        adaptive[early] = run_simulation(
            X_pool,
            y_pool,
            X_test,
            y_test,
            ["adaptive"],
            budget=args.budget,
            strategy_params={"adaptive": {"early": early}},
            **common,
        )
    target = 0.95 * low_res.full_accuracy
    points = sorted({n_classes, 2 * n_classes, 5 * n_classes, low})
    rows: dict[str, Any] = {}
    for name in LOW:
        rows[name] = {
            "at": [_at(low_res, name, p) for p in points],
            "select_seconds_per_seed": float(np.mean(low_res.select_seconds[name])),
        }
    for early, res in adaptive.items():
        rows[f"adaptive (early={early})"] = {
            "at": [_at(res, "adaptive", p) for p in [*points, args.budget]],
            "to_target": _to_target(res, "adaptive", target),
            "select_seconds_per_seed": float(np.mean(res.select_seconds["adaptive"])),
        }
    summary = {
        "dataset": args.dataset,
        "meta": meta,
        "env": environment(),
        "seeds": args.seeds,
        "batch_size": args.batch_size,
        "budget": args.budget,
        "low_budget": low,
        "head": low_res.meta.get("semi_supervised"),
        "full_accuracy": low_res.full_accuracy,
        "target": target,
        "rows": rows,
        "seconds": round(time.time() - started, 1),
    }
    stem = f"cold_start_{args.dataset}"
    write_json(RESULTS / f"{stem}.json", summary)
    (RESULTS / f"{stem}.md").write_text(markdown(summary))
    log(f"wrote {stem}.{{json,md}} in {summary['seconds']} s")


def _pm(d: dict[str, Any] | None) -> str:
    if d is None or d.get("mean") is None:
        return "-"
    return f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}"


def markdown(s: dict[str, Any]) -> str:
    """The results as a markdown report."""
    rows = s["rows"]
    labels = [a["labels"] for a in rows["adaptive (early=typiclust)"]["at"]]
    lines = [
        f"# Cold start: MaxHerding vs TypiClust on {s['dataset']}",
        "",
        f"Features: {s['meta']['features']} ({s['meta']['dim']}-d). Head: {s['head']} "
        f"(the product's default). {s['seeds']} seeds, batch {s['batch_size']}; the cold-start "
        f"strategies alone to {s['low_budget']} labels, `adaptive` to {s['budget']}. "
        f"Full-data accuracy {s['full_accuracy']:.4f}, target 95 % = {s['target']:.4f}. "
        f"2 shared cores (load {s['env']['load_average_at_start']} at start), "
        f"{s['seconds']:.0f} s, {s['env']['date_utc']} UTC.",
        "",
        "MaxHerding has no random element: on the fixed "
        "pool/test split its picks are the same for every seed, hence its std of 0; the "
        "seeds vary random's picks and the k-means seeds of TypiClust and ProbCover.",
        "",
        "Accuracy (%) at N labels (mean ± std over seeds):",
        "",
        "| strategy | "
        + " | ".join(str(n) for n in labels)
        + " | labels to 95 % | select s / seed |",
        "|---|" + "---|" * (len(labels) + 2),
    ]
    for name, row in rows.items():
        by = {a["labels"]: a for a in row["at"]}
        t = row.get("to_target")
        to = (
            "-"
            if t is None
            else (
                f"{t['mean']:.0f} ± {t['std']:.0f} ({t['reached']}/{s['seeds']})"
                if t["mean"] is not None
                else f"- (0/{s['seeds']})"
            )
        )
        lines.append(
            f"| {name} | "
            + " | ".join(_pm(by.get(n)) for n in labels)
            + f" | {to} | {row['select_seconds_per_seed']:.1f} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
