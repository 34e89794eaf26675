"""Peers side by side (issue 3, benchmark 2): modAL and scikit-activeml in the same loop as ours.

Every strategy, ours or a peer's, runs inside :func:`labelwheel.simulate.run_simulation`: same
pool/test split, same classifier (logistic regression, C=1, on standardised features; peers that
fit their own model get the same estimator), same seeds, batch 10, from 0 labels.

Peers:

* modAL 0.4.2 query functions with our fitted classifier: ``uncertainty_sampling`` (least
  confidence), ``margin_sampling`` and ``uncertainty_batch_sampling`` (ranked batch; it reads
  ``X_training`` and ``on_transformed`` from a learner, so it gets a small read-only view).
  modAL's ``ActiveLearner.teach()`` is not used: it calls scikit-learn's ``check_X_y`` with
  ``force_all_finite``, which scikit-learn ≥ 1.8 removed (TypeError); the check below records it.
* scikit-activeml ``skactiveml.pool``: ``TypiClust``, ``ProbCover``, ``Badge`` (with
  ``SklearnClassifier(LogisticRegression)``), ``CoreSet``; unlabelled = NaN labels.

Writes ``results/peers_<dataset>.{json,csv,png,md}``.
Usage: ``python benchmarks/peers.py --dataset digits [--seeds 10 --budget 300]``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import RESULTS, environment, load_split, log, write_json
from label_efficiency import merge

from labelwheel.simulate import Picker, RoundState, SimulationResults, run_simulation

# ours next to the peer that implements the same idea
PAIRS: list[tuple[str, str]] = [
    ("least_confidence", "modAL uncertainty_sampling"),
    ("margin", "modAL margin_sampling"),
    ("ranked_batch", "modAL uncertainty_batch_sampling"),
    ("typiclust", "skactiveml TypiClust"),
    ("probcover", "skactiveml ProbCover"),
    ("badge", "skactiveml Badge"),
    ("kcenter", "skactiveml CoreSet"),
]


class _LearnerView:
    """The attributes modAL's ranked batch reads from an ActiveLearner, over our classifier."""

    def __init__(self, state: RoundState) -> None:
        self._state = state
        self.on_transformed = False
        labeled = state.embeddings[state.labeled]
        self.X_training = labeled if len(labeled) else None

    def predict_proba(self, X: np.ndarray, **_: Any) -> np.ndarray:
        return self._state.model.predict_proba(X)


def _first(result: Any) -> np.ndarray:
    return np.asarray(result[0] if isinstance(result, tuple) else result, dtype=np.int64)


def modal_picker(kind: str) -> Picker:
    """A modAL query function as a simulator strategy (indices mapped back to the pool)."""
    from modAL.batch import uncertainty_batch_sampling
    from modAL.uncertainty import margin_sampling, uncertainty_sampling

    def pick(n: int, state: RoundState) -> np.ndarray:
        unlabeled = np.flatnonzero(~state.labeled)
        X = state.embeddings[unlabeled]
        if kind == "uncertainty":
            local = _first(uncertainty_sampling(state.model, X, n_instances=n))
        elif kind == "margin":
            local = _first(margin_sampling(state.model, X, n_instances=n))
        else:
            local = _first(uncertainty_batch_sampling(_LearnerView(state), X, n_instances=n))
        return unlabeled[local]

    return pick


def skactiveml_picker(kind: str) -> Picker:
    """A scikit-activeml pool strategy as a simulator strategy (NaN = unlabelled)."""
    from skactiveml.classifier import SklearnClassifier
    from skactiveml.pool import Badge, CoreSet, ProbCover, TypiClust
    from sklearn.linear_model import LogisticRegression

    def pick(n: int, state: RoundState) -> np.ndarray:
        X = state.embeddings.astype(np.float64)
        y = np.where(state.labeled, state.y, np.nan).astype(np.float64)
        seed = state.seed % (2**31)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "TypiClust":
                picked = TypiClust(random_state=seed).query(X, y, batch_size=n)
            elif kind == "ProbCover":
                picked = ProbCover(random_state=seed).query(X, y, batch_size=n)
            elif kind == "CoreSet":
                picked = CoreSet(random_state=seed).query(X, y, batch_size=n)
            else:
                clf = SklearnClassifier(
                    LogisticRegression(tol=state.model.tol, max_iter=state.model.max_iter),
                    classes=np.arange(state.n_classes),
                    random_state=seed,
                )
                picked = Badge(random_state=seed).query(X, y, clf=clf, batch_size=n)
        return np.asarray(picked, dtype=np.int64)

    return pick


def peer_pickers() -> dict[str, Callable[[], Picker]]:
    """Display name -> factory of the picker (a factory so import errors are caught per peer)."""
    return {
        "modAL uncertainty_sampling": lambda: modal_picker("uncertainty"),
        "modAL margin_sampling": lambda: modal_picker("margin"),
        "modAL uncertainty_batch_sampling": lambda: modal_picker("batch"),
        "skactiveml TypiClust": lambda: skactiveml_picker("TypiClust"),
        "skactiveml ProbCover": lambda: skactiveml_picker("ProbCover"),
        "skactiveml Badge": lambda: skactiveml_picker("Badge"),
        "skactiveml CoreSet": lambda: skactiveml_picker("CoreSet"),
    }


def check_modal_teach() -> str:
    """What happens with modAL's own loop (ActiveLearner.teach) on this scikit-learn."""
    from modAL.models import ActiveLearner
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    X, y = load_digits(return_X_y=True)
    try:
        learner = ActiveLearner(
            LogisticRegression(max_iter=200), X_training=X[:20], y_training=y[:20]
        )
    except Exception as exc:
        return f"ActiveLearner(...) fails: {type(exc).__name__}: {exc}"
    try:
        learner.teach(X[20:30], y[20:30])
    except Exception as exc:
        return f"ActiveLearner.teach() fails: {type(exc).__name__}: {exc}"
    return "ActiveLearner.teach() works"


def versions() -> dict[str, str]:
    """Installed versions of the peers."""
    out = {}
    for dist in ("modAL-python", "scikit-activeml", "scikit-learn"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def markdown(
    res: SimulationResults, broken: dict[str, str], teach: str, env: dict, stem: str
) -> str:
    """The side-by-side table."""
    rows = {r["strategy"]: r for r in res.summary()}

    def cell(name: str) -> str:
        if name in broken:
            return f"broken: {broken[name]}"
        if name not in rows:
            return "not run"
        r = rows[name]
        need = "> budget" if r["labels_mean"] is None else f"{r['labels_mean']:.0f}"
        return (
            f"{need} ({r['seeds_reached']}/{r['seeds']}) · mean acc {r['mean_accuracy']:.3f}"
            f" · {r['select_seconds_per_seed']:.2f} s"
        )

    meta = res.meta
    lines = [
        f"# Peers side by side: {meta['dataset']}",
        "",
        f"Features: {meta['features']}. Pool {res.n_pool}, test {res.n_test}, "
        f"{len(res.seeds)} seeds, batch {res.batch_size}, budget {res.budget}, from 0 labels. "
        f"Same split, classifier and seeds for every column. Full-data accuracy "
        f"{res.full_accuracy:.4f}, target {res.target():.4f}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + f"; selectors `{env['selectors_sha']}`.",
        "",
        "Each cell: labels to reach 95% of full accuracy (mean over the seeds that reached it; "
        "seeds reached) · mean test accuracy over the curve · selection seconds per seed "
        "(all rounds).",
        "",
        f"![curves]({stem}.png)",
        "",
        "| idea | labelwheel | peer | peer result |",
        "|---|---|---|---|",
    ]
    if "random" in rows:
        lines.append(f"| random (reference) | {cell('random')} | - | - |")
    for ours, peer in PAIRS:
        lines.append(f"| {ours} | {cell(ours)} | {peer} | {cell(peer)} |")
    lines += ["", "## What breaks", "", f"- modAL: {teach}"]
    for name, message in broken.items():
        lines.append(f"- {name}: {message}")
    if not broken:
        lines.append("- every peer query function ran in this loop")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "mnist5k"], default="digits")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--only", default="", help="comma list of display names to run")
    args = parser.parse_args()

    env = environment() | {"versions": versions()}
    X_pool, y_pool, X_test, y_test, meta = load_split(args.dataset)
    seeds = list(range(args.seeds))
    stem = f"peers_{args.dataset}"
    teach = check_modal_teach()
    log(f"modAL: {teach}")
    order = ["random"] + [name for pair in PAIRS for name in pair]
    if args.only:
        wanted = set(args.only.split(","))
        order = [name for name in order if name in wanted or name == "random"]
    factories = peer_pickers()
    parts: list[SimulationResults] = []
    broken: dict[str, str] = {}
    timings: dict[str, float] = {}
    for name in order:
        t0 = time.time()
        try:
            spec: Any = factories[name]() if name in factories else name
            res = run_simulation(
                X_pool, y_pool, X_test, y_test, {name: spec}, args.budget,
                args.batch_size, seeds, meta=meta,
            )  # fmt: skip
        except Exception as exc:
            broken[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            log(f"{name} BROKEN: {broken[name]}")
            traceback.print_exc()
            continue
        timings[name] = time.time() - t0
        log(f"{name}: {timings[name]:.0f} s, mean acc {res.accuracy[name].mean():.4f}")
        parts.append(res)
        merged = merge(parts)
        merged.save(RESULTS, stem=stem, title=f"{args.dataset}: labelwheel vs peers")
        write_json(
            RESULTS / f"{stem}.json",
            merged.to_dict() | {"broken": broken, "modal_teach": teach, "env": env},
        )
        (RESULTS / f"{stem}.md").write_text(markdown(merged, broken, teach, env, stem))
    merged = merge(parts)
    print(merged.format_summary())


if __name__ == "__main__":
    main()
