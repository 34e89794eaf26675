"""The semi-supervised head and class-balanced batches on real data (issue 12).

For one data set, with the simulator's loop (0 labels, batch 10, held-out accuracy after every
batch, the product's head), over several seeds:

1. ``random`` with the plain head (a logistic regression on the labels: what a user gets
   without us), run to twice the budget so that its labels to the target can be read off;
2. every strategy with the semi-supervised head (``HeadConfig.semi_supervised="spreading"``:
   label spreading on the pool's kNN graph, pseudo-labels where it agrees with the plain probe);
3. the best uncertainty and cold-start strategies with class-balanced batches too.

Reported: labels to 95% of the full-data accuracy (the plain head fitted on the whole pool) for
random+plain, random+semi, and the best strategy+semi; accuracy at about one label per class
(the batch nearest it); every strategy's accuracy at the budget against random's with the
same head (the worst one must not be > 2 points below). Writes
``results/semisup_head_<dataset>.{json,md}``.

Usage: ``nice -n 10 python benchmarks/semisup_head.py --dataset digits --seeds 10 --budget 300``.
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
from labelwheel.simulate.loop import selector_picker

ALL = (
    "random",
    "margin",
    "adaptive",
    "typiclust",
    "kcenter",
    "probcover",
    "least_confidence",
    "entropy",
    "badge",
    "kmeans",
    "cluster_margin",
    "ranked_batch",
    "bald",
)
BALANCED = ("margin", "adaptive", "typiclust")


def needed(res: SimulationResults, name: str, target: float) -> dict[str, Any]:
    """Labels to reach ``target`` per seed: mean ± std over the seeds that reached it."""
    return labels_to_target(res.labels, res.accuracy[name], target)


def at(res: SimulationResults, name: str, labels: int) -> dict[str, float]:
    """Accuracy (mean, std over seeds) at the point nearest ``labels``."""
    j = int(np.argmin(np.abs(res.labels - labels)))
    col = res.accuracy[name][:, j]
    return {"labels": int(res.labels[j]), "mean": float(col.mean()), "std": float(col.std())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--strategies", default=",".join(ALL))
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument(
        "--plain-strategies",
        default="",
        help="strategies (besides random) also run with the plain head, to the budget",
    )
    parser.add_argument(
        "--plain-only",
        action="store_true",
        help="run only --plain-strategies with the plain head; write <stem>_plain.json",
    )
    parser.add_argument(
        "--render",
        metavar="SUMMARY_JSON",
        help="only rewrite the .md of a summary, adding the rows of --add-plain",
    )
    parser.add_argument("--add-plain", metavar="PLAIN_JSON", help="rows of a --plain-only run")
    args = parser.parse_args()
    if args.render:
        render(Path(args.render), Path(args.add_plain) if args.add_plain else None)
        return
    names = [s for s in args.strategies.split(",") if s]
    plain_names = [s for s in args.plain_strategies.split(",") if s and s != "random"]
    X_pool, y_pool, X_test, y_test, meta = load_split(args.dataset)
    split = (X_pool, y_pool, X_test, y_test)
    env = environment()
    started = time.time()
    common: dict[str, Any] = {"batch_size": args.batch_size, "seeds": args.seeds}
    stem = f"semisup_head_{args.dataset}{'_' + args.tag if args.tag else ''}"
    if args.plain_only:
        full_accuracy, plain_rows = _plain_rows(split, plain_names, args.budget, common)
        out = {
            "dataset": args.dataset,
            "env": env,
            "seeds": args.seeds,
            "budget": args.budget,
            "full_accuracy": full_accuracy,
            "rows": plain_rows,
            "seconds": round(time.time() - started, 1),
        }
        write_json(RESULTS / f"{stem}_plain.json", out)
        log(f"wrote {stem}_plain.json in {out['seconds']} s")
        return
    log(f"{args.dataset}: random + plain head to {2 * args.budget} labels")
    plain = run_simulation(
        X_pool,
        y_pool,
        X_test,
        y_test,
        ["random"],
        budget=2 * args.budget,
        semi_supervised="none",
        **common,
    )
    log(f"{args.dataset}: {len(names)} strategies + semi-supervised head to {args.budget}")
    semi = run_simulation(
        X_pool,
        y_pool,
        X_test,
        y_test,
        names,
        budget=args.budget,
        semi_supervised="spreading",
        **common,
    )
    bal_names = [s for s in BALANCED if s in names]
    log(f"{args.dataset}: balanced {bal_names} + semi-supervised head")
    balanced = run_simulation(
        X_pool,
        y_pool,
        X_test,
        y_test,
        {f"{s}+balanced": selector_picker(s, balanced=True) for s in bal_names},
        budget=args.budget,
        semi_supervised="spreading",
        **common,
    )
    full = plain.full_accuracy
    target = 0.95 * full
    n_classes = plain.n_classes
    rows: dict[str, Any] = {}
    for res, head in ((semi, "semi"), (balanced, "semi")):
        for name in res.accuracy:
            rows[f"{name}|{head}"] = _row(res, name, head, target, args.budget)
    rows["random|plain"] = _row(plain, "random", "plain", target, args.budget)
    if plain_names:
        rows.update(_plain_rows(split, plain_names, args.budget, common)[1])
    _relative_to_random_plain(rows)
    gaps = _gaps(rows)
    worst = min(gaps, key=lambda k: gaps[k])
    reached = {
        k: r
        for k, r in rows.items()
        if r["head"] == "semi" and r["x_random_plain"] is not None and r["strategy"] != "random"
    }
    best = min(reached, key=lambda k: reached[k]["x_random_plain"]) if reached else None
    summary = {
        "dataset": args.dataset,
        "meta": meta,
        "env": env,
        "seeds": args.seeds,
        "batch_size": args.batch_size,
        "budget": args.budget,
        "full_accuracy": full,
        "target": target,
        "n_classes": n_classes,
        "rows": rows,
        "worst_vs_random_at_budget": {"strategy": worst, "points": gaps[worst]},
        "best": best,
        "seconds": round(time.time() - started, 1),
    }
    write_json(RESULTS / f"{stem}.json", summary)
    (RESULTS / f"{stem}.md").write_text(markdown(summary, gaps))
    log(f"wrote {stem}.{{json,md}} in {summary['seconds']} s")


def _plain_rows(
    split: tuple[np.ndarray, ...], names: list[str], budget: int, common: dict[str, Any]
) -> tuple[float, dict[str, Any]]:
    """The plain head with the selectors ``names`` to ``budget``: its full-data accuracy (the
    same for every head run on this split) and a ``name|plain`` row per selector."""
    log(f"{names} + plain head to {budget}")
    res = run_simulation(*split, names, budget=budget, semi_supervised="none", **common)
    target = 0.95 * res.full_accuracy
    return res.full_accuracy, {
        f"{name}|plain": _row(res, name, "plain", target, budget) for name in res.accuracy
    }


def _row(res: SimulationResults, name: str, head: str, target: float, budget: int) -> dict:
    return {
        "strategy": name,
        "head": head,
        "to_target": needed(res, name, target),
        "at_one_per_class": at(res, name, res.n_classes),
        "at_budget": at(res, name, budget),
        "select_seconds_per_seed": float(np.mean(res.select_seconds[name])),
    }


def _relative_to_random_plain(rows: dict[str, Any]) -> None:
    base = rows["random|plain"]["to_target"]["mean"]
    for row in rows.values():
        m = row["to_target"]["mean"]
        full_reach = row["to_target"]["reached"] == row["to_target"]["seeds"]
        row["x_random_plain"] = m / base if m is not None and base and full_reach else None


def _gaps(rows: dict[str, Any]) -> dict[str, float]:
    rnd_semi = rows["random|semi"]["at_budget"]["mean"]
    return {
        k: 100 * (r["at_budget"]["mean"] - rnd_semi)
        for k, r in rows.items()
        if r["head"] == "semi" and r["strategy"] != "random"
    }


def render(summary_path: Path, plain_path: Path | None) -> None:
    """Rewrite a summary's .md (and .json), adding the plain-head rows of a --plain-only run
    made with the same data set, seeds and budget."""
    summary = json.loads(summary_path.read_text())
    if plain_path is not None:
        plain = json.loads(plain_path.read_text())
        same = ("dataset", "seeds", "budget", "full_accuracy")
        if any(plain[k] != summary[k] for k in same):
            raise SystemExit(f"{plain_path} is not a run of the same data set, seeds and budget")
        for key, row in plain["rows"].items():
            summary["rows"].setdefault(key, row)
        summary["plain_rows_from"] = plain_path.name
        _relative_to_random_plain(summary["rows"])
        write_json(summary_path, summary)
    summary_path.with_suffix(".md").write_text(markdown(summary, _gaps(summary["rows"])))
    log(f"wrote {summary_path.with_suffix('.md').name}")


def _pm(d: dict[str, Any], scale: float = 1.0, digits: int = 1) -> str:
    if d.get("mean") is None:
        return "-"
    return f"{scale * d['mean']:.{digits}f} ± {scale * d['std']:.{digits}f}"


def markdown(s: dict[str, Any], gaps: dict[str, float]) -> str:
    """The results as a markdown report."""
    rows = s["rows"]
    meta = s["meta"]
    lines = [
        f"# Semi-supervised head and balanced batches: {s['dataset']}",
        "",
        f"Features: {meta['features']} ({meta['dim']}-d). {s['seeds']} seeds, batch "
        f"{s['batch_size']}, budget {s['budget']} (random + plain head run to "
        f"{2 * s['budget']}). Full-data accuracy (plain head, whole pool) "
        f"**{s['full_accuracy']:.4f}**;"
        f" target 95% of it = {s['target']:.4f}. Run with `nice -n 10` on 2 shared cores "
        f"(load {s['env']['load_average_at_start']} at start), {s['seconds']:.0f} s, "
        f"{s['env']['date_utc']} UTC.",
        "",
        'Semi head: `HeadConfig(semi_supervised="spreading")` (labelwheel/semisup.py). '
        "Plain head: the logistic regression on the labels only.",
        "",
        *([f"Note: {s['note']}", ""] if s.get("note") else []),
        "| strategy | head | labels to 95% (mean ± std) | seeds reached | × random+plain "
        f"| acc @ {rows['random|plain']['at_one_per_class']['labels']} labels (%) "
        f"| acc @ {s['budget']} (%) | vs random+semi @ {s['budget']} (points) | select s / seed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(
        rows,
        key=lambda k: (
            rows[k]["to_target"]["mean"] is None,
            rows[k]["to_target"]["mean"] or 0,
        ),
    )
    for k in order:
        r = rows[k]
        t = r["to_target"]
        x = r["x_random_plain"]
        gap = gaps.get(k)
        lines.append(
            f"| {r['strategy']} | {r['head']} | {_pm(t, 1, 0)} | {t['reached']}/{t['seeds']} | "
            f"{'-' if x is None else f'{x:.2f}'} | {_pm(r['at_one_per_class'], 100)} | "
            f"{_pm(r['at_budget'], 100)} | {'-' if gap is None else f'{gap:+.1f}'} | "
            f"{r['select_seconds_per_seed']:.1f} |"
        )
    w = s["worst_vs_random_at_budget"]
    best = s["best"]
    rp = rows["random|plain"]
    rs = rows["random|semi"]
    best_x = None if best is None else rows[best]["x_random_plain"]
    lines += [
        "",
        "Labels to 95%: per seed, the first batch at which test accuracy reached the target "
        "(mean ± std over the seeds that reached it); × random+plain divides the means (only "
        "when every seed reached it).",
        "",
        "## Targets",
        "",
        f"- best ≤ 0.5× random+plain head's labels: best = {best} ({_x(best_x)}×); "
        f"random+semi: {_x(rs['x_random_plain'])}×.",
        f"- at ~1 label per class ({rp['at_one_per_class']['labels']} labels): random+plain "
        f"{_pm(rp['at_one_per_class'], 100)} %; best strategy+semi there: " + _best_at_one(rows),
        f"- worst strategy vs random (same semi head) at {s['budget']} labels: {w['strategy']} "
        f"{w['points']:+.1f} points ({'met' if w['points'] >= -2 else 'missed'}: ≥ −2).",
        "",
    ]
    both = [
        r["strategy"]
        for r in rows.values()
        if r["head"] == "plain" and f"{r['strategy']}|semi" in rows
    ]
    if both:
        lines += [
            "## The same picks policy, plain head vs semi head",
            "",
            "| strategy | labels to 95%, plain | labels to 95%, semi | semi ÷ plain "
            f"| acc @ {rp['at_one_per_class']['labels']}, plain → semi (%) "
            f"| acc @ {s['budget']}, plain → semi (%) |",
            "|---|---|---|---|---|---|",
        ]
        for name in both:
            p, q = rows[f"{name}|plain"], rows[f"{name}|semi"]
            pm, qm = p["to_target"]["mean"], q["to_target"]["mean"]
            full = all(r["to_target"]["reached"] == r["to_target"]["seeds"] for r in (p, q))
            ratio = f"{qm / pm:.2f}" if pm and qm and full else "-"
            lines.append(
                f"| {name} | {_pm(p['to_target'], 1, 0)} ({p['to_target']['reached']}/"
                f"{p['to_target']['seeds']}) | {_pm(q['to_target'], 1, 0)} "
                f"({q['to_target']['reached']}/{q['to_target']['seeds']}) | {ratio} | "
                f"{_pm(p['at_one_per_class'], 100)} → {_pm(q['at_one_per_class'], 100)} | "
                f"{_pm(p['at_budget'], 100)} → {_pm(q['at_budget'], 100)} |"
            )
        lines.append("")
    return "\n".join(lines)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _best_at_one(rows: dict[str, Any]) -> str:
    semi = {k: r for k, r in rows.items() if r["head"] == "semi"}
    k = max(semi, key=lambda k: semi[k]["at_one_per_class"]["mean"])
    gain = 100 * (
        semi[k]["at_one_per_class"]["mean"] - rows["random|plain"]["at_one_per_class"]["mean"]
    )
    return f"{semi[k]['strategy']} {_pm(semi[k]['at_one_per_class'], 100)} % ({gain:+.1f} points)."


if __name__ == "__main__":
    main()
