"""Active learning's lift over random picks, estimated from the control slice, vs the truth.

A simulated project as in ``control_slice.py`` (MNIST-5k raw pixels, a new 75/25 pool/test
split per seed, the product's semi-supervised head retrained after every batch, selector
``margin`` through ``queue_order``, the random control slice through ``interleave_control``),
labelled to the budget. Then :func:`labelwheel.lead.lift.active_learning_lift` estimates, from
the labels alone, the lift at ``t`` labels (the active arm: the first ``t`` selected labels; the
random arm: ``t`` control labels; scored on held-out control labels). The truth at the same
``t``: held-out test accuracy of the head trained on the first ``t`` selected labels minus the
mean test accuracy of heads trained on ``--draws`` random sets of ``t`` pool labels.

    .venv/bin/python benchmarks/al_lift.py [--seeds 10] [--budget 400] [--fraction 0.2] [--resume]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, log, write_json
from control_slice import load

from labelwheel.head import HeadConfig, Scaling, fit_codes
from labelwheel.lead.lift import active_learning_lift
from labelwheel.pool import queue_order
from labelwheel.pool.control import control_seed, interleave_control
from labelwheel.semisup import DEFAULT_SEMI
from labelwheel.simulate.loop import Classifier

TOLERANCE = 0.05


def run_seed(
    dataset: str, seed: int, fraction: float, budget: int, batch: int, draws: int
) -> dict[str, Any]:
    """One simulated project; the lift estimate and its truth."""
    started = time.perf_counter()
    xp, yp, xt, yt = load(dataset, seed)
    n_classes = int(max(yp.max(), yt.max()) + 1)
    scaling = Scaling.of(xp)
    labeled = np.zeros(len(yp), dtype=bool)
    order: list[tuple[int, bool]] = []  # (pool row, picked by the control slice), in order
    version = 0
    head = None
    while labeled.sum() < budget:
        unl = np.flatnonzero(~labeled)
        lab = xp[labeled] if labeled.any() else None
        queue = queue_order(xp[unl], lab, strategy="margin", head=head, first_batch=batch)
        positions, control = queue.order, set[int]()
        if head is not None:
            sliced = interleave_control(
                positions, fraction, seed=control_seed(seed, f"v{version}"), keys=unl.tolist()
            )
            positions, control = sliced.order, set(sliced.control)
        for p in positions[: min(batch, budget - int(labeled.sum()))]:
            order.append((int(unl[p]), int(p) in control))
            labeled[unl[p]] = True
        model = Classifier(n_classes, scaling=scaling, semi_supervised=DEFAULT_SEMI, pool=xp)
        model.fit(xp[labeled], yp[labeled])
        head = model.head
        version += 1
    ctrl = np.array([r for r, c in order if c], dtype=np.int64)
    sel = np.array([r for r, c in order if not c], dtype=np.int64)
    est = active_learning_lift(xp[ctrl], yp[ctrl], xp[sel], yp[sel], n_classes, pool=xp, seed=seed)
    out: dict[str, Any] = {"seed": seed, "fraction": fraction, **est.to_dict()}
    if est.lift is not None:
        config = HeadConfig(semi_supervised=DEFAULT_SEMI)

        def test_accuracy(rows: np.ndarray) -> float:
            h = fit_codes(xp[rows], yp[rows], n_classes, config=config, scaling=scaling, pool=xp)
            return h.accuracy(xt, yt)

        t = est.labels
        active = test_accuracy(sel[:t])
        rng = np.random.default_rng(50_000 + seed)
        random = [test_accuracy(rng.choice(len(yp), t, replace=False)) for _ in range(draws)]
        out["truth"] = {
            "active": active,
            "random": float(np.mean(random)),
            "random_sd": float(np.std(random, ddof=1)) if draws > 1 else None,
            "lift": active - float(np.mean(random)),
        }
    out["seconds"] = time.perf_counter() - started
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    got = [r for r in runs if r.get("lift") is not None]
    err = [r["lift"] - r["truth"]["lift"] for r in got]
    cover = [r["interval"][0] <= r["truth"]["lift"] <= r["interval"][1] for r in got]
    return {
        "seeds": len(runs),
        "with_estimate": len(got),
        "labels_per_arm": float(np.mean([r["labels"] for r in got])) if got else None,
        "true_lift_mean": float(np.mean([r["truth"]["lift"] for r in got])) if got else None,
        "true_lift_sd": float(np.std([r["truth"]["lift"] for r in got], ddof=1))
        if len(got) > 1
        else None,
        "estimate_mean": float(np.mean([r["lift"] for r in got])) if got else None,
        "mean_error": float(np.mean(err)) if err else None,
        "mean_abs_error": float(np.mean(np.abs(err))) if err else None,
        "within_5_points": int(sum(abs(e) <= TOLERANCE for e in err)),
        "coverage": float(np.mean(cover)) if cover else None,
        "mean_width": float(np.mean([r["interval"][1] - r["interval"][0] for r in got]))
        if got
        else None,
        "sign_right": int(sum((r["lift"] > 0) == (r["truth"]["lift"] > 0) for r in got)),
        "excludes_zero_and_right": int(
            sum(
                (r["interval"][0] > 0 and r["truth"]["lift"] > 0)
                or (r["interval"][1] < 0 and r["truth"]["lift"] < 0)
                for r in got
            )
        ),
    }


def markdown(data: dict[str, Any]) -> str:
    p, s = data["params"], data["summary"]

    def pts(x: float | None, signed: bool = True) -> str:
        return "–" if x is None else (f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}")

    lines = [
        "# Active learning's lift over random, from the control slice",
        "",
        f"{p['dataset']} (raw pixels), {s['seeds']} seeds, batch {p['batch']}, budget "
        f"{p['budget']}, control fraction {p['fraction']}, selector `margin`, the product's "
        f"head (`{DEFAULT_SEMI}`). Estimate: `labelwheel.lead.lift.active_learning_lift` "
        "(5 folds of the control labels; random arm: the other folds' control labels; active "
        "arm: the first as many selected labels; paired on the held-out fold). Truth at the "
        "same size: test accuracy of the head on the first t selected labels minus the mean of "
        f"{p['draws']} heads on t random pool labels.",
        "",
        "| labels per arm (mean) | true lift (mean ± sd over seeds) | estimate (mean) | "
        "mean error | mean abs error | within ±5 pts | 95 % interval covers truth | "
        "mean width | sign right | interval excludes 0, right sign |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {s['labels_per_arm']:.0f} | {pts(s['true_lift_mean'])} ± "
        f"{pts(s['true_lift_sd'], False)} pts | {pts(s['estimate_mean'])} pts | "
        f"{pts(s['mean_error'])} pts | {pts(s['mean_abs_error'], False)} pts | "
        f"{s['within_5_points']} of {s['with_estimate']} | "
        f"{100 * (s['coverage'] or 0):.0f} % | {pts(s['mean_width'], False)} pts | "
        f"{s['sign_right']} of {s['with_estimate']} | "
        f"{s['excludes_zero_and_right']} of {s['with_estimate']} |",
        "",
        "| seed | control labels | t | random arm | active arm | estimate [95 % CI] | "
        "true random | true active | true lift |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["runs"]:
        if r.get("lift") is None:
            lines.append(f"| {r['seed']} | {r['n_control']} | – | – | – | {r['reason']} | | | |")
            continue
        tr = r["truth"]
        lines.append(
            f"| {r['seed']} | {r['n_control']} | {r['labels']} | "
            f"{pts(r['random_accuracy'], False)} | {pts(r['active_accuracy'], False)} | "
            f"{pts(r['lift'])} [{pts(r['interval'][0])}, {pts(r['interval'][1])}] | "
            f"{pts(tr['random'], False)} | {pts(tr['active'], False)} | {pts(tr['lift'])} |"
        )
    lines += ["", f"Run time: {data['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist5k", choices=["mnist5k", "digits"])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=400)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS / "al_lift"))
    ap.add_argument(
        "--resume", action="store_true", help="keep the seeds already in OUT.json, run the rest"
    )
    args = ap.parse_args()
    out = Path(args.out)
    runs: list[dict[str, Any]] = []
    spent = 0.0
    if args.resume and Path(f"{out}.json").exists():
        import json

        old = json.loads(Path(f"{out}.json").read_text())
        runs, spent = old["runs"], float(old["seconds"])
    started = time.perf_counter()
    for seed in range(args.seeds):
        if any(r["seed"] == seed for r in runs):
            continue
        r = run_seed(args.dataset, seed, args.fraction, args.budget, args.batch, args.draws)
        runs.append(r)
        truth = r.get("truth", {}).get("lift")
        log(f"seed {seed}: estimate {r['lift']} {r['interval']}, truth {truth}")
        # written after every seed: a run that is stopped keeps what it measured (--resume)
        data = {
            "params": {k: v for k, v in vars(args).items() if k != "resume"},
            "summary": summarise(runs),
            "runs": sorted(runs, key=lambda x: x["seed"]),
            "seconds": spent + time.perf_counter() - started,
            "environment": environment(),
        }
        write_json(Path(f"{out}.json"), data)
        Path(f"{out}.md").write_text(markdown(data), encoding="utf-8")
    log(f"wrote {out}.json and .md")


if __name__ == "__main__":
    main()
