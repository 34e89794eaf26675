"""Control-slice benchmark: does the random control slice estimate a version's real accuracy?

A simulated project on a real labelled set (MNIST-5k raw pixels by default; digits with
``--dataset digits``), served as the backend serves it: after every batch of 10 labels a new
version (the product's head, :class:`labelwheel.simulate.loop.Classifier`) is trained, the
unlabelled pool is ordered by :func:`labelwheel.pool.queue_order` (selector ``margin`` by
default: the backend's ``adaptive`` costs twice the time and the slice does not depend on
it), and :func:`labelwheel.pool.control.interleave_control` puts the version's random control
slice into the queue. The "annotators" label the first 10 tasks served with their true
labels; each label says whether the serving version's pre-label was right (approval) and whether
the task was a control task. The true accuracy of every version is measured on a held-out test
split the loop never sees.

Estimators compared with the truth, per seed, at the end of the budget:

- ``pooled``: approvals / annotations on control tasks, all versions together (what the backend
  records), against the matching truth: the mean held-out accuracy of the versions that served
  those control tasks. This checks that the slice is unbiased.
- ``recent``: the same over the second half of the budget, against its matching truth.
- ``selected``: approvals on the selected (non-control) tasks, the biased number the product
  shows next to it, against its matching truth.
- ``holdout``: a model trained on every label but the control ones, scored on the control
  labels, against that model's held-out accuracy: the real accuracy of a current version
  estimated from all control labels so far.

Target (issue 12): within ±3 points of the truth in 9 of 10 seeds. The markdown also gives, from
the binomial variance at the measured accuracy, how many control labels (and labels in all, at
each fraction) ±3 points in 9 of 10 seeds needs.

    .venv/bin/python benchmarks/control_slice.py [--dataset mnist5k] [--seeds 10]
        [--budget 400] [--fractions 0.05,0.2,0.5] [--strategy margin]
    # parallel: one process per fraction with --out PART, then --merge PART1.json,PART2.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, log, write_json
from control_slice_md import markdown

from labelwheel.head import HeadConfig, Scaling, cv_accuracy
from labelwheel.lead.honest import (
    ControlLabel,
    LabelledPart,
    PoolConfidence,
    data_wide_accuracy,
    ppi_accuracy,
    wilson,
)
from labelwheel.pool import queue_order
from labelwheel.pool.control import control_seed, interleave_control
from labelwheel.semisup import DEFAULT_SEMI
from labelwheel.simulate.loop import Classifier

TOLERANCE = 0.03
LARGE_SLICES = (20, 50, 100, 200, 300, 400, 800)
Z90 = 1.6448536269514722  # two-sided 90%: "within ±3 points in 9 of 10 seeds"


def load(dataset: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A stratified 75/25 pool/test split of the raw-pixel features (a new split per seed)."""
    from sklearn.model_selection import train_test_split

    from labelwheel.datasets import load_embeddings

    feats = load_embeddings(dataset, backbone="raw")
    xp, xt, yp, yt = train_test_split(
        feats.X, feats.y, test_size=0.25, random_state=seed, stratify=feats.y
    )
    return xp, yp, xt, yt


def run_seed(
    dataset: str, seed: int, fraction: float, budget: int, batch: int, strategy: str, depth: int
) -> dict[str, Any]:
    """One simulated project; returns the per-label log and the estimators."""
    xp, yp, xt, yt = load(dataset, seed)
    n_classes = int(max(yp.max(), yt.max()) + 1)
    scaling = Scaling.of(xp)

    def classifier() -> Classifier:
        # the product's head: semi-supervised over the pool, as the backend fits it
        return Classifier(n_classes, scaling=scaling, semi_supervised=DEFAULT_SEMI, pool=xp)

    def labelled_part(mask: np.ndarray) -> LabelledPart:
        # the version's cross-validated accuracy on its labels, as the backend records it
        # (labelwheel.head.train_head: the same semi-supervised head in every fold)
        config = HeadConfig(semi_supervised=DEFAULT_SEMI)
        cv = cv_accuracy(xp[mask], yp[mask], config=config, scaling=scaling, pool=xp)
        return LabelledPart(int(mask.sum()), cv)

    labeled = np.zeros(len(yp), dtype=bool)
    # (version, row, control, correct, confidence in the pre-label)
    log_rows: list[tuple[int, int, bool, bool, float]] = []
    truth: dict[int, float] = {}
    pools: dict[str, PoolConfidence] = {}  # version -> its confidence over the unlabelled pool
    labelled: dict[str, LabelledPart] = {}  # version -> its labels and CV accuracy (data-wide)
    version = 0
    started = time.perf_counter()
    while labeled.sum() < budget:
        model = None
        if labeled.any():
            model = classifier().fit(xp[labeled], yp[labeled])
            if not model.is_fitted:
                model = None
        unl = np.flatnonzero(~labeled)
        lab = xp[labeled] if labeled.any() else None
        head = model.head if model is not None else None
        queue = queue_order(
            xp[unl], lab, strategy=strategy, head=head, depth=depth, first_batch=batch
        )
        order = queue.order
        control: set[int] = set()
        if head is not None and fraction > 0:
            sliced = interleave_control(
                order, fraction, seed=control_seed(seed, f"v{version}"), keys=unl.tolist()
            )
            order, control = sliced.order, set(sliced.control)
        served = order[: min(batch, budget - int(labeled.sum()))]
        if model is not None:
            truth[version] = model.score(xt, yt)
            conf = model.predict_proba(xp[unl]).max(axis=1)
            pools[f"v{version}"] = PoolConfidence(len(unl), float(conf.mean()), float(conf.var()))
            pred = model.predict(xp[unl[served]])
            if control & {int(q) for q in served}:  # the data-wide rows need it for these only
                labelled[f"v{version}"] = labelled_part(labeled)
            for p, guess in zip(served, pred, strict=True):
                ok = bool(guess == yp[unl[p]])
                log_rows.append((version, int(unl[p]), p in control, ok, float(conf[p])))
        labeled[unl[served]] = True
        version += 1
    # the final version, trained on every label, and one trained on all but the control labels
    final = classifier().fit(xp[labeled], yp[labeled])
    ctrl_rows = [r for _, r, c, *_ in log_rows if c]
    keep = labeled.copy()
    keep[ctrl_rows] = False
    holdout = classifier().fit(xp[keep], yp[keep])

    def truth_of(rows: list[tuple[int, int, bool, bool, float]]) -> float:
        return float(np.mean([truth[v] for v, *_ in rows]))

    def rate(rows: list[tuple[int, int, bool, bool, float]]) -> dict[str, Any]:
        if not rows:
            return {"estimate": None, "truth": None, "n": 0, "interval": None}
        k = sum(1 for r in rows if r[3])
        return {
            "estimate": k / len(rows),
            "truth": truth_of(rows),
            "n": len(rows),
            "interval": wilson(k, len(rows)),
        }

    def labels_of(rows: list[tuple[int, int, bool, bool, float]]) -> list[ControlLabel]:
        return [ControlLabel(f"v{v}", ok, c) for v, _, _, ok, c in rows]

    def wide(
        rows: list[tuple[int, int, bool, bool, float]],
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        # the data-wide estimate, without the confidences (plain) and with them (PPI)
        if not rows:
            return None
        labels = labels_of(rows)
        return (
            _entry(data_wide_accuracy(_blind(labels), pools, labelled), truth_of(rows)),
            _entry(data_wide_accuracy(labels, pools, labelled), truth_of(rows)),
        )

    def ppi(rows: list[tuple[int, int, bool, bool, float]]) -> dict[str, Any]:
        if not rows:
            return {"estimate": None, "truth": None, "n": 0, "interval": None}
        est = ppi_accuracy(labels_of(rows), pools)
        return {
            "estimate": est.estimate,
            "truth": truth_of(rows),
            "n": len(rows),
            "interval": est.interval,
            "lam": est.lam,
            "method": est.method,
        }

    half = budget // 2
    recent = [r for r in log_rows if r[0] * batch >= half]
    out: dict[str, Any] = {"seed": seed, "fraction": fraction, "budget": budget}
    for name, rows in (
        ("pooled", [r for r in log_rows if r[2]]),
        ("recent", [r for r in recent if r[2]]),
        ("selected", [r for r in log_rows if not r[2]]),
    ):
        out[name] = rate(rows)
    out["pooled_ppi"] = ppi([r for r in log_rows if r[2]])
    out["recent_ppi"] = ppi([r for r in recent if r[2]])
    pooled_wide = wide([r for r in log_rows if r[2]])
    if pooled_wide is not None:
        out["pooled_wide"], out["pooled_wide_ppi"] = pooled_wide
    if ctrl_rows:
        out["holdout"] = {
            "estimate": holdout.score(xp[ctrl_rows], yp[ctrl_rows]),
            "truth": holdout.score(xt, yt),
            "n": len(ctrl_rows),
        }
    else:
        out["holdout"] = {"estimate": None, "truth": holdout.score(xt, yt), "n": 0}
    out["final_accuracy"] = final.score(xt, yt)
    # a larger slice for the final version: n tasks drawn at random from the unlabelled pool
    # (what a control slice of n labels would see), scored against the held-out truth
    # (one version: PPI with the final version's confidence over that pool)
    rest = np.flatnonzero(~labeled)
    draw = np.random.default_rng(10_000 + seed).permutation(rest)
    conf = final.predict_proba(xp[rest]).max(axis=1)
    conf_of = dict(zip(rest.tolist(), conf.tolist(), strict=True))
    final_pool = {"final": PoolConfidence(len(rest), float(conf.mean()), float(conf.var()))}
    final_part = {"final": labelled_part(labeled)}
    out["final_cv_accuracy"] = final_part["final"].accuracy
    right = final.predict(xp[draw]) == yp[draw]
    for key in LARGE_KEYS:
        out[key] = {}
    for n in LARGE_SLICES:
        if n > len(draw):
            continue
        k = int(right[:n].sum())
        out["large_slice"][str(n)] = {
            "estimate": k / n,
            "truth": out["final_accuracy"],
            "n": n,
            "interval": wilson(k, n),
        }
        labels = [
            ControlLabel("final", bool(ok), conf_of[int(r)])
            for r, ok in zip(draw[:n], right[:n], strict=True)
        ]
        est = ppi_accuracy(labels, final_pool)
        out["large_slice_ppi"][str(n)] = {
            "estimate": est.estimate,
            "truth": out["final_accuracy"],
            "n": n,
            "interval": est.interval,
            "lam": est.lam,
            "method": est.method,
        }
        truth_n = out["final_accuracy"]
        wide_ppi = data_wide_accuracy(labels, final_pool, final_part)
        wide_plain = data_wide_accuracy(_blind(labels), final_pool, final_part)
        out["large_slice_wide_ppi"][str(n)] = _entry(wide_ppi, truth_n)
        out["large_slice_wide"][str(n)] = _entry(wide_plain, truth_n)
    out["control_labels"] = len(ctrl_rows)
    out["seconds"] = time.perf_counter() - started
    return out


def _blind(labels: list[ControlLabel]) -> list[ControlLabel]:
    """The labels without their confidences (the plain data-wide estimate)."""
    return [ControlLabel(lab.version, lab.correct, None) for lab in labels]


def _entry(est: Any, truth: float) -> dict[str, Any]:
    """A data-wide estimate (:class:`labelwheel.lead.honest.DataWideEstimate`) as a row."""
    return {
        "estimate": est.estimate,
        "truth": truth,
        "n": est.n,
        "interval": est.interval,
        "method": est.method,
        "lam": est.lam,
        "unlabelled_share": est.unlabelled_share,
        "labelled_accuracy": est.labelled_accuracy,
    }


def within(entry: dict[str, Any]) -> bool | None:
    """Whether an estimator landed within the tolerance of its truth (None: no estimate)."""
    if entry["estimate"] is None:
        return None
    return abs(entry["estimate"] - entry["truth"]) <= TOLERANCE


def needed_control_labels(accuracy: float) -> int:
    """Control labels for |estimate - truth| <= 3 points with probability 0.9 (normal approx)."""
    return math.ceil((Z90 / TOLERANCE) ** 2 * accuracy * (1 - accuracy))


def stats(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Seeds within ±3 points, errors, and (where the entries carry one) the 95% interval's
    coverage of the truth and its mean width."""
    hits = [within(e) for e in entries]
    got = [e for e in entries if e["estimate"] is not None]
    errs = [e["estimate"] - e["truth"] for e in got]
    ivs = [e for e in got if e.get("interval") is not None]
    lams = [e["lam"] for e in got if "lam" in e]
    return {
        "seeds": len(entries),
        "within_3_points": sum(1 for h in hits if h),
        "with_estimate": sum(1 for h in hits if h is not None),
        "mean_error": float(np.mean(errs)) if errs else None,
        "mean_abs_error": float(np.mean(np.abs(errs))) if errs else None,
        "mean_n": float(np.mean([e["n"] for e in entries])) if entries else 0.0,
        "coverage": (
            sum(1 for e in ivs if e["interval"][0] <= e["truth"] <= e["interval"][1]) / len(ivs)
            if ivs
            else None
        ),
        "mean_width": (
            float(np.mean([e["interval"][1] - e["interval"][0] for e in ivs])) if ivs else None
        ),
        "mean_lambda": float(np.mean(lams)) if lams else None,
        "ppi_used": sum(1 for e in got if e.get("method") == "ppi") if lams else None,
    }


ESTIMATORS = (
    "pooled",
    "pooled_ppi",
    "pooled_wide",
    "pooled_wide_ppi",
    "recent",
    "recent_ppi",
    "holdout",
    "selected",
)
LARGE_KEYS = ("large_slice", "large_slice_ppi", "large_slice_wide", "large_slice_wide_ppi")


def summarise(runs: list[dict[str, Any]], fractions: list[float]) -> dict[str, Any]:
    """Per fraction and estimator: seeds within ±3 points, mean error, mean n, coverage."""
    out: dict[str, Any] = {}
    for f in fractions:
        rs = [r for r in runs if r["fraction"] == f]
        row: dict[str, Any] = {"seeds": len(rs)}
        for name in ESTIMATORS:
            if all(name in r for r in rs):
                row[name] = stats([r[name] for r in rs])
        for key in LARGE_KEYS:
            large: dict[str, Any] = {}
            for n in LARGE_SLICES:
                entries = [r[key][str(n)] for r in rs if str(n) in r.get(key, {})]
                if entries:
                    large[str(n)] = stats(entries)
            row[key] = large
        acc = float(np.mean([r["final_accuracy"] for r in rs]))
        row["final_accuracy"] = acc
        row["needed_control_labels"] = needed_control_labels(acc)
        row["needed_labels_at_fraction"] = math.ceil(needed_control_labels(acc) / f)
        out[str(f)] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist5k", choices=["mnist5k", "digits"])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=400)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--fractions", default="0.05,0.2,0.5")
    ap.add_argument("--strategy", default="margin")
    ap.add_argument("--depth", type=int, default=1000)
    ap.add_argument("--out", default=str(RESULTS / "control_slice"))
    ap.add_argument(
        "--merge", help="comma-separated JSON results of parallel runs (one per fraction) to merge"
    )
    args = ap.parse_args()
    if args.merge:
        import json

        parts = [json.loads(Path(p).read_text()) for p in args.merge.split(",")]
        runs = [r for part in parts for r in part["runs"]]
        fractions = sorted({r["fraction"] for r in runs})
        params = {**parts[0]["params"], "fractions": fractions}
        merged = {
            "params": params,
            "summary": summarise(runs, fractions),
            "runs": runs,
            "seconds": sum(part["seconds"] for part in parts),
            "environment": parts[0]["environment"],
        }
        out = Path(args.out)
        write_json(Path(f"{out}.json"), merged)
        Path(f"{out}.md").write_text(markdown(merged), encoding="utf-8")
        log(f"merged {len(parts)} parts into {out} and .md")
        return
    fractions = [float(f) for f in args.fractions.split(",")]
    started = time.perf_counter()
    runs = []
    for f in fractions:
        for seed in range(args.seeds):
            r = run_seed(args.dataset, seed, f, args.budget, args.batch, args.strategy, args.depth)
            runs.append(r)
            log(
                f"fraction {f} seed {seed}: {r['control_labels']} control labels, pooled "
                f"{r['pooled']['estimate']} vs {r['pooled']['truth']:.3f}, holdout "
                f"{r['holdout']['estimate']} vs {r['holdout']['truth']:.3f}, PPI "
                f"{r['pooled_ppi']['estimate']} ({r['seconds']:.0f} s)"
            )
            # the seeds so far, in the final file's form (--merge reads it): a long run that
            # is stopped keeps what it measured
            done = sorted({x["fraction"] for x in runs})
            write_json(
                Path(f"{args.out}.partial.json"),
                {
                    "params": {**vars(args), "fractions": done, "tolerance": TOLERANCE},
                    "summary": summarise(runs, done),
                    "runs": runs,
                    "seconds": time.perf_counter() - started,
                    "environment": environment(),
                },
            )
    data = {
        "params": {**vars(args), "fractions": fractions, "tolerance": TOLERANCE},
        "summary": summarise(runs, fractions),
        "runs": runs,
        "seconds": time.perf_counter() - started,
        "environment": environment(),
    }
    out = Path(args.out)
    write_json(Path(f"{out}.json"), data)
    Path(f"{out}.md").write_text(markdown(data), encoding="utf-8")
    log(f"wrote {out} and .md")


if __name__ == "__main__":
    main()
