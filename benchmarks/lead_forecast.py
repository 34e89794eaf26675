"""Benchmark: does ``labelwheel forecast`` predict the rest of a real learning curve?

For each real data set (sklearn digits, MNIST-5k; raw pixels by default, or backbone embeddings
with ``--backbone``) and seed:

1. The *real* learning curve: a logistic-regression head trained on the first ``m`` labels of a
   shuffled labelling order, accuracy on a fixed held-out 20 %, for geometric ``m`` up to all
   training labels.
2. Two ways of forecasting from the early part only, as a lead would have it:
   * ``prefix``: fit the inverse power law on the real curve's points with ``m <= cut``;
   * ``cv``: what the tool does without model versions — a cross-validated learning curve on the
     first ``cut`` labels only (:func:`labelwheel.lead.forecast.learning_curve`), then the fit.
3. Compared with the real rest: absolute error of the predicted accuracy at each later ``m``
   (against a flat "it stays where it is" baseline), and, for targets the real curve reaches
   later, predicted vs real label count and whether the real count falls in the 80 % interval.

Writes ``benchmarks/results/lead_forecast.json`` and ``.md``. Run:
``.venv/bin/python benchmarks/lead_forecast.py [--datasets digits mnist5k] [--seeds 3]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from labelwheel.datasets import load_embeddings
from labelwheel.head import LinearProbe
from labelwheel.lead.forecast import CurvePoint, fit_power_law, forecast_labels, learning_curve

RESULTS = Path(__file__).resolve().parent / "results"


def real_curve(x: np.ndarray, y: np.ndarray, seed: int, n_points: int = 12) -> dict[int, float]:
    """Held-out accuracy after labelling the first m of a random order, for geometric m."""
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    order = np.random.default_rng(seed).permutation(len(ytr))
    sizes = np.unique(np.round(np.geomspace(20, len(ytr), n_points)).astype(int))
    out: dict[int, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for m in sizes:
            idx = order[:m]
            if np.unique(ytr[idx]).size < 2:
                continue
            model = LinearProbe().fit(xtr[idx], ytr[idx])
            out[int(m)] = float(np.mean(model.predict(xte) == yte))
    # also keep the training order for the "cv" mode
    real_curve.train = (xtr, ytr, order)  # type: ignore[attr-defined]
    return out


def first_reaching(curve: dict[int, float], target: float) -> int | None:
    """Smallest measured label count whose accuracy is at least ``target``."""
    for m in sorted(curve):
        if curve[m] >= target:
            return m
    return None


def evaluate(curve: dict[int, float], points: list[CurvePoint], cut: int) -> dict[str, object]:
    """Errors of a forecast fitted on ``points`` against the real curve beyond ``cut``."""
    ns = [p.n_labels for p in points]
    fit = fit_power_law(ns, [p.accuracy for p in points])
    tail = {m: a for m, a in curve.items() if m > cut}
    last = max(points, key=lambda p: p.n_labels).accuracy
    errors = {m: abs(float(fit.predict(m)) - a) for m, a in tail.items()}
    flat = {m: abs(last - a) for m, a in tail.items()}
    targets = []
    for m in sorted(tail)[1::2]:
        target = round(tail[m] - 0.002, 3)  # a level the real curve reaches at about m
        real_n = first_reaching(curve, target)
        if real_n is None or real_n <= cut or target <= last:
            continue
        if any(t["target"] == target for t in targets):
            continue
        fc = forecast_labels(points, target, current_labels=cut)
        predicted = cut + fc.more_labels if fc.more_labels is not None else None
        lo = cut + fc.interval[0] if fc.interval else None
        hi = cut + fc.interval[1] if fc.interval and fc.interval[1] is not None else None
        targets.append(
            {
                "target": target,
                "real_labels": real_n,
                "status": fc.status,
                "predicted_labels": predicted,
                "interval": [lo, hi],
                "ratio": (predicted / real_n) if predicted else None,
                "in_interval": bool(
                    lo is not None and lo <= real_n and (hi is None or real_n <= hi)
                ),
            }
        )
    return {
        "fit": {"a": fit.a, "b": fit.b, "c": fit.c},
        "mae": float(np.mean(list(errors.values()))) if errors else None,
        "max_error": float(max(errors.values())) if errors else None,
        "flat_baseline_mae": float(np.mean(list(flat.values()))) if flat else None,
        "errors": {str(m): e for m, e in errors.items()},
        "targets": targets,
    }


def run(datasets: list[str], seeds: int, backbone: str, cut_fraction: float) -> dict[str, object]:
    """Run the benchmark and return its results."""
    results: list[dict[str, object]] = []
    for name in datasets:
        feats = load_embeddings(name, backbone=backbone)
        x, y = feats.X.astype(np.float64), feats.y
        for seed in range(seeds):
            t0 = time.perf_counter()
            curve = real_curve(x, y, seed)
            xtr, ytr, order = real_curve.train  # type: ignore[attr-defined]
            cut = int(max(100, cut_fraction * len(ytr)))
            prefix = [CurvePoint(m, a) for m, a in curve.items() if m <= cut]
            row: dict[str, object] = {
                "dataset": name,
                "features": backbone,
                "seed": seed,
                "cut": cut,
                "curve": {str(m): a for m, a in curve.items()},
                "prefix": evaluate(curve, prefix, cut),
            }
            idx = order[:cut]
            cv_points = learning_curve(xtr[idx], ytr[idx], seed=seed)
            row["cv"] = evaluate(curve, cv_points, cut) if len(cv_points) >= 4 else None
            row["seconds"] = round(time.perf_counter() - t0, 1)
            results.append(row)
            print(
                f"{name} seed {seed}: prefix MAE {row['prefix']['mae']:.4f} "  # type: ignore[index]
                f"(flat {row['prefix']['flat_baseline_mae']:.4f}), {row['seconds']} s",  # type: ignore[index]
                file=sys.stderr,
            )
    return {
        "benchmark": "lead_forecast",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cut_fraction": cut_fraction,
        "runs": results,
    }


def summarise(data: dict[str, object]) -> str:
    """Markdown table of the results."""
    lines = [
        "# Forecast benchmark (inverse power law fitted on the early learning curve)",
        "",
        "| data set | seed | cut (labels) | mode | MAE beyond cut | max error | flat baseline MAE "
        "| targets: predicted / real labels (in 80 % interval) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in data["runs"]:  # type: ignore[attr-defined]
        for mode in ("prefix", "cv"):
            ev = row.get(mode)
            if not ev:
                continue
            tg = "; ".join(
                f"{t['target']:.3f}: {t['predicted_labels'] or '∞'} / {t['real_labels']}"
                f"{' ✓' if t['in_interval'] else ' ✗'}"
                for t in ev["targets"]
            )
            lines.append(
                f"| {row['dataset']} ({row['features']}) | {row['seed']} | {row['cut']} | {mode} "
                f"| {ev['mae']:.4f} | {ev['max_error']:.4f} | {ev['flat_baseline_mae']:.4f} "
                f"| {tg} |"
            )
    covered = [
        t["in_interval"]
        for row in data["runs"]  # type: ignore[attr-defined]
        for mode in ("prefix", "cv")
        if row.get(mode)
        for t in row[mode]["targets"]
    ]
    if covered:
        lines += ["", f"Real label count inside the 80 % interval: {sum(covered)}/{len(covered)}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist5k"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--backbone", default="raw", help="raw pixels or a backbone name")
    parser.add_argument("--cut", type=float, default=0.1, help="fraction of labels fitted on")
    args = parser.parse_args(argv)
    data = run(args.datasets, args.seeds, args.backbone, args.cut)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lead_forecast.json").write_text(json.dumps(data, indent=2, allow_nan=False))
    (RESULTS / "lead_forecast.md").write_text(summarise(data))
    print(summarise(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
