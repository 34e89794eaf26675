"""Pool-based active-learning simulator: how many labels does each selector save?

The loop, for every seed and every strategy:

1. Start with no labels. The pool's features are standardised once (mean and variance of the
   whole pool: in pool-based active learning the unlabelled features are known).
2. Each round, the strategy picks ``batch_size`` unlabelled samples. Strategies that need
   probabilities get the current classifier's ``predict_proba`` over the pool (uniform while fewer
   than two classes are labelled). ``bald`` gets a bootstrap committee: ``committee_size``
   logistic regressions, each fitted on a resample (with replacement) of the labelled set, their
   probabilities stacked to ``(T, N, C)``.
3. The picked samples' labels are revealed, the classifier (logistic regression on the
   standardised features) is refitted on everything labelled so far, and its accuracy on a
   held-out test split is recorded. With a single class labelled it predicts that class.
4. Repeat until ``budget`` labels.

Every seed also shuffles the pool order, so no result depends on how the data set is sorted.
The reference, "full-data accuracy", is the same classifier fitted on the whole labelled pool;
:func:`labels_to_reach` reads off the labels a curve needs to reach a fraction of it.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import click
import numpy as np
from numpy.typing import ArrayLike

DEFAULT_STRATEGIES: tuple[str, ...] = (
    "random",
    "margin",
    "entropy",
    "kcenter",
    "typiclust",
    "badge",
    "cluster_margin",
    "adaptive",
)
"""Strategies the CLI compares when ``--strategies`` is not given."""

TARGET_FRACTION = 0.95
"""Summary target: this fraction of the full-data accuracy."""


# --------------------------------------------------------------------------------------------
# classifier


class Classifier:
    """Logistic regression over a fixed set of ``n_classes`` that tolerates missing classes.

    ``predict_proba`` always returns ``(n, n_classes)`` columns: classes not seen in training get
    probability 0 (then a tiny floor so that logarithms stay finite). With fewer than two classes
    in training it predicts the single class seen (accuracy) and uniform probabilities (so that
    uncertainty strategies do not mistake "no model" for confidence).

    ``tol`` defaults to 1e-3 rather than scikit-learn's 1e-4: on MNIST-5k embeddings it halves
    the fitting time with test accuracy equal to within 0.3 points, and the simulator fits
    one model per round.
    """

    def __init__(
        self, n_classes: int, C: float = 1.0, max_iter: int = 500, tol: float = 1e-3
    ) -> None:
        self.n_classes = n_classes
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.classes_: np.ndarray = np.zeros(0, dtype=np.int64)
        self._model: Any = None
        self._constant: int = 0

    def fit(self, X: np.ndarray, y: np.ndarray, init: Classifier | None = None) -> Classifier:
        """Fit on labelled rows; ``y`` holds class indices in ``0..n_classes-1``.

        ``init``: a fitted classifier whose weights start the optimiser (warm start) when it
        saw the same classes. The loss is convex, so this only changes how many iterations
        the solver needs (about 3× fewer in the simulator), not the optimum it converges to.
        """
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y, dtype=np.int64)
        self.classes_ = np.unique(y)
        self._model = None
        if len(self.classes_) < 2:
            self._constant = int(self.classes_[0]) if len(self.classes_) else 0
            return self
        model = LogisticRegression(C=self.C, max_iter=self.max_iter, tol=self.tol)
        previous = init._model if init is not None else None
        if previous is not None and np.array_equal(previous.classes_, self.classes_):
            model.set_params(warm_start=True)
            model.coef_ = previous.coef_.copy()
            model.intercept_ = previous.intercept_.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y)
        self._model = model
        return self

    @property
    def is_fitted(self) -> bool:
        """True once two or more classes have been seen."""
        return self._model is not None

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_classes)`` probabilities; uniform when fewer than two classes were seen."""
        n = X.shape[0]
        if self._model is None:
            return np.full((n, self.n_classes), 1.0 / self.n_classes)
        out = np.zeros((n, self.n_classes))
        out[:, self._model.classes_] = self._model.predict_proba(X)
        out = np.maximum(out, 1e-12)
        return out / out.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class index per row."""
        if self._model is None:
            return np.full(X.shape[0], self._constant, dtype=np.int64)
        return np.asarray(self._model.predict(X), dtype=np.int64)

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy on ``(X, y)``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))


# --------------------------------------------------------------------------------------------
# strategies as "pickers"


@dataclass
class RoundState:
    """What a strategy may look at in one round of the simulation.

    ``embeddings`` are the standardised pool features (the classifier's inputs);
    ``probabilities`` the current classifier's ``(N, C)`` probabilities over the pool;
    ``labeled`` the boolean mask of revealed samples; ``y`` the pool labels, valid only where
    ``labeled`` is true; ``model`` the fitted :class:`Classifier`; ``seed`` differs per round.
    """

    embeddings: np.ndarray
    probabilities: np.ndarray
    labeled: np.ndarray
    y: np.ndarray
    model: Classifier
    seed: int
    round: int
    n_classes: int
    committee_size: int = 5
    _committee: np.ndarray | None = field(default=None, repr=False)

    def committee_probabilities(self) -> np.ndarray:
        """``(T, N, C)`` probabilities of a bootstrap committee (for ``bald``), cached per round."""
        if self._committee is None:
            idx = np.flatnonzero(self.labeled)
            rng = np.random.default_rng(self.seed)
            members = []
            by_class = [idx[self.y[idx] == c] for c in np.unique(self.y[idx])]
            for _ in range(self.committee_size):
                # stratified bootstrap: every member sees every labelled class
                parts = [rng.choice(members_c, size=len(members_c)) for members_c in by_class]
                sample = np.concatenate(parts) if parts else idx
                member = Classifier(
                    self.n_classes, C=self.model.C, max_iter=self.model.max_iter, tol=self.model.tol
                )
                member.fit(self.embeddings[sample], self.y[sample], init=self.model)
                members.append(member.predict_proba(self.embeddings))
            self._committee = np.stack(members)
        return self._committee


class Picker(Protocol):
    """A strategy in the simulator: return up to ``n`` distinct unlabelled pool indices."""

    def __call__(self, n: int, state: RoundState) -> np.ndarray: ...


def selector_picker(strategy: str, **params: Any) -> Picker:
    """A :class:`Picker` that calls ``labelwheel.selectors.select(strategy, ...)``."""
    from labelwheel.selectors import select

    def pick(n: int, state: RoundState) -> np.ndarray:
        probs = state.committee_probabilities() if strategy == "bald" else state.probabilities
        picked = select(
            strategy,
            n,
            embeddings=state.embeddings,
            probabilities=probs,
            labeled=state.labeled,
            seed=state.seed,
            **params,
        )
        return np.asarray(picked, dtype=np.int64)

    return pick


def available_strategies() -> tuple[str, ...]:
    """``labelwheel.selectors.STRATEGIES`` (raises ``ValueError`` if the library is missing)."""
    try:
        from labelwheel.selectors import STRATEGIES
    except ImportError as exc:
        raise ValueError(f"the selectors library could not be imported: {exc}") from exc
    return tuple(STRATEGIES)


# --------------------------------------------------------------------------------------------
# results


def labels_to_reach(curve: tuple[ArrayLike, ArrayLike], target: float) -> float | None:
    """Labels at which a learning curve first reaches ``target`` accuracy, or ``None``.

    ``curve`` is ``(labels, accuracy)``: two equally long sequences, labels increasing. The
    answer is the first ``labels[i]`` with ``accuracy[i] >= target`` (no interpolation: it is a
    number of labels that was actually tried).
    """
    labels, accuracy = (np.asarray(c, dtype=np.float64) for c in curve)
    if labels.ndim != 1 or labels.shape != accuracy.shape:
        raise ValueError(
            "curve must be (labels, accuracy), two 1-D sequences of the same length; "
            f"got shapes {labels.shape} and {accuracy.shape}"
        )
    if len(labels) > 1 and np.any(np.diff(labels) <= 0):
        raise ValueError("curve labels must be strictly increasing")
    hits = np.flatnonzero(accuracy >= target)
    if len(hits) == 0:
        return None
    value = labels[hits[0]]
    return int(value) if float(value).is_integer() else float(value)


@dataclass
class SimulationResults:
    """Learning curves of several strategies over several seeds.

    ``accuracy[strategy]`` is ``(n_seeds, n_points)``: test accuracy after ``labels[j]`` labels.
    ``select_seconds[strategy]`` is the time spent choosing samples, per seed.
    """

    labels: np.ndarray
    seeds: list[int]
    accuracy: dict[str, np.ndarray]
    select_seconds: dict[str, list[float]]
    full_accuracy: float
    batch_size: int
    budget: int
    n_pool: int
    n_test: int
    n_classes: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def strategies(self) -> list[str]:
        """Strategy names in the order they were run."""
        return list(self.accuracy)

    def target(self, fraction: float = TARGET_FRACTION) -> float:
        """``fraction`` × the full-data accuracy."""
        return fraction * self.full_accuracy

    def labels_needed(self, strategy: str, fraction: float = TARGET_FRACTION) -> list[float | None]:
        """Per seed, labels needed to reach ``fraction`` of full accuracy (``None``: never)."""
        goal = self.target(fraction)
        return [labels_to_reach((self.labels, row), goal) for row in self.accuracy[strategy]]

    def summary(self, fraction: float = TARGET_FRACTION, baseline: str = "random") -> list[dict]:
        """One row per strategy: labels to reach the target (mean, std over seeds), ratio, AUC."""
        rows = []
        base_mean: float | None = None
        if baseline in self.accuracy:
            base = [v for v in self.labels_needed(baseline, fraction) if v is not None]
            base_mean = float(np.mean(base)) if len(base) == len(self.seeds) else None
        for name, acc in self.accuracy.items():
            needed = self.labels_needed(name, fraction)
            reached = [v for v in needed if v is not None]
            mean = float(np.mean(reached)) if reached else None
            all_reached = len(reached) == len(needed)
            rows.append(
                {
                    "strategy": name,
                    "labels_mean": mean,
                    "labels_std": float(np.std(reached)) if reached else None,
                    "seeds_reached": len(reached),
                    "seeds": len(needed),
                    "ratio_to_random": (
                        mean / base_mean
                        if mean is not None and base_mean is not None and all_reached
                        else None
                    ),
                    "mean_accuracy": float(acc.mean()),
                    "final_accuracy": float(acc[:, -1].mean()),
                    "select_seconds_per_seed": float(np.mean(self.select_seconds[name])),
                }
            )
        return rows

    def format_summary(self, fraction: float = TARGET_FRACTION) -> str:
        """The summary as a plain-text table."""
        width = max(18, 2 + max(len(name) for name in self.accuracy))
        lines = [
            f"full-data accuracy {self.full_accuracy:.4f}; target {fraction:.0%} of it = "
            f"{self.target(fraction):.4f}; pool {self.n_pool}, test {self.n_test}, "
            f"{len(self.seeds)} seeds, batch {self.batch_size}, budget {self.budget}",
            f"{'strategy':<{width}}{'labels to target':>22}{'reached':>9}{'vs random':>11}"
            f"{'mean acc':>10}{'select s':>10}",
        ]
        for row in self.summary(fraction):
            if row["labels_mean"] is None:
                needed = f"> {self.budget}"
            else:
                needed = f"{row['labels_mean']:.1f} ± {row['labels_std']:.1f}"
                if row["seeds_reached"] < row["seeds"]:
                    needed += "*"
            ratio = "-" if row["ratio_to_random"] is None else f"{row['ratio_to_random']:.2f}×"
            lines.append(
                f"{row['strategy']:<{width}}{needed:>22}{row['seeds_reached']:>5}/{row['seeds']:<3}"
                f"{ratio:>11}{row['mean_accuracy']:>10.4f}{row['select_seconds_per_seed']:>10.2f}"
            )
        if any(
            r["labels_mean"] is not None and r["seeds_reached"] < r["seeds"]
            for r in self.summary(fraction)
        ):
            lines.append("* mean over the seeds that reached the target within the budget")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (curves, timings, summary, metadata)."""
        return {
            "labels": [int(v) for v in self.labels],
            "seeds": list(self.seeds),
            "accuracy": {k: v.round(6).tolist() for k, v in self.accuracy.items()},
            "select_seconds": self.select_seconds,
            "full_accuracy": self.full_accuracy,
            "target_fraction": TARGET_FRACTION,
            "batch_size": self.batch_size,
            "budget": self.budget,
            "n_pool": self.n_pool,
            "n_test": self.n_test,
            "n_classes": self.n_classes,
            "meta": self.meta,
            "summary": self.summary(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimulationResults:
        """Inverse of :meth:`to_dict`."""
        return cls(
            labels=np.asarray(data["labels"], dtype=np.int64),
            seeds=list(data["seeds"]),
            accuracy={k: np.asarray(v, dtype=np.float64) for k, v in data["accuracy"].items()},
            select_seconds={k: list(v) for k, v in data["select_seconds"].items()},
            full_accuracy=float(data["full_accuracy"]),
            batch_size=int(data["batch_size"]),
            budget=int(data["budget"]),
            n_pool=int(data["n_pool"]),
            n_test=int(data["n_test"]),
            n_classes=int(data["n_classes"]),
            meta=dict(data.get("meta", {})),
        )

    def save(
        self, out_dir: Path | str, stem: str = "curves", title: str | None = None
    ) -> list[Path]:
        """Write ``<stem>.json``, ``<stem>.csv`` (long format) and ``<stem>.png``; return paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path = out / f"{stem}.json"
        json_path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        csv_path = out / f"{stem}.csv"
        with csv_path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["strategy", "seed", "labels", "accuracy"])
            for name, acc in self.accuracy.items():
                for seed, row in zip(self.seeds, acc, strict=True):
                    for n_labels, value in zip(self.labels, row, strict=True):
                        writer.writerow([name, seed, int(n_labels), f"{value:.6f}"])
        png_path = out / f"{stem}.png"
        plot_curves(self, png_path, title=title)
        return [json_path, csv_path, png_path]


def plot_curves(results: SimulationResults, path: Path | str, title: str | None = None) -> None:
    """Plot mean test accuracy per strategy with a ±1 std band over seeds, and the target line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for name, acc in results.accuracy.items():
        mean, std = acc.mean(axis=0), acc.std(axis=0)
        style = "--" if name == "random" else "-"
        (line,) = ax.plot(results.labels, mean, style, label=name, linewidth=1.6)
        ax.fill_between(results.labels, mean - std, mean + std, alpha=0.15, color=line.get_color())
    ax.axhline(results.full_accuracy, color="black", linewidth=0.8, label="full data")
    ax.axhline(
        results.target(), color="grey", linewidth=0.8, linestyle=":", label=f"{TARGET_FRACTION:.0%}"
    )
    ax.set_xlabel("labels")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or f"{len(results.seeds)} seeds, batch {results.batch_size} (mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# the loop


def _check_inputs(
    X_pool: np.ndarray, y_pool: np.ndarray, X_test: np.ndarray, y_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    X_pool = np.asarray(X_pool, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    if X_pool.ndim != 2 or X_test.ndim != 2 or X_pool.shape[1] != X_test.shape[1]:
        raise ValueError(
            "X_pool and X_test must be 2-D feature matrices with the same number of columns; "
            f"got {X_pool.shape} and {X_test.shape}"
        )
    if not (np.isfinite(X_pool).all() and np.isfinite(X_test).all()):
        raise ValueError("features contain NaN or inf")
    y_pool = np.asarray(y_pool)
    y_test = np.asarray(y_test)
    if y_pool.shape != (X_pool.shape[0],) or y_test.shape != (X_test.shape[0],):
        raise ValueError(
            f"y_pool / y_test must be 1-D with one label per row: got {y_pool.shape} for "
            f"{X_pool.shape[0]} pool rows and {y_test.shape} for {X_test.shape[0]} test rows"
        )
    if len(y_test) == 0:
        raise ValueError("the test split is empty")
    classes, encoded = np.unique(np.concatenate([y_pool, y_test]), return_inverse=True)
    if len(classes) < 2:
        raise ValueError("need at least two classes")
    return X_pool, encoded[: len(y_pool)], X_test, encoded[len(y_pool) :], len(classes)


def run_simulation(
    X_pool: np.ndarray,
    y_pool: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    strategies: Sequence[str] | Mapping[str, Picker | str],
    budget: int,
    batch_size: int = 10,
    seeds: Sequence[int] | int = 5,
    *,
    C: float = 1.0,
    tol: float = 1e-3,
    committee_size: int = 5,
    strategy_params: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = False,
    on_round: Callable[[str, int, int, float], None] | None = None,
    meta: Mapping[str, Any] | None = None,
    threads: int | None = 1,
) -> SimulationResults:
    """Run the pool-based active-learning loop for every strategy and seed.

    ``strategies`` is a list of selector names (see ``labelwheel.selectors.STRATEGIES``) or a
    mapping from a display name to a selector name or a :class:`Picker` (used by the peer
    benchmarks to run other libraries in the same loop). ``seeds`` is a list of seeds or a count
    (seeds ``0..count-1``). ``strategy_params`` passes extra keyword arguments to ``select`` per
    strategy name. Accuracy is recorded after every batch: at ``batch_size, 2·batch_size, …,
    budget`` labels. ``on_round(strategy, seed, n_labels, accuracy)`` is called after each.

    ``threads`` caps the BLAS/OpenMP threads while the loop runs (``None``: leave them alone).
    The default, 1, is much faster here: the loop fits hundreds of small models, for which
    multi-threaded BLAS costs more in synchronisation than it saves (10× on a busy 2-core box).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        return _run_simulation(
            X_pool,
            y_pool,
            X_test,
            y_test,
            strategies,
            budget,
            batch_size,
            seeds,
            C=C,
            tol=tol,
            committee_size=committee_size,
            strategy_params=strategy_params,
            progress=progress,
            on_round=on_round,
            meta=meta,
        )


def _run_simulation(
    X_pool: np.ndarray,
    y_pool: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    strategies: Sequence[str] | Mapping[str, Picker | str],
    budget: int,
    batch_size: int,
    seeds: Sequence[int] | int,
    *,
    C: float,
    tol: float,
    committee_size: int,
    strategy_params: Mapping[str, Mapping[str, Any]] | None,
    progress: bool,
    on_round: Callable[[str, int, int, float], None] | None,
    meta: Mapping[str, Any] | None,
) -> SimulationResults:
    X_pool, y_enc, X_test, y_test_enc, n_classes = _check_inputs(X_pool, y_pool, X_test, y_test)
    n_pool = X_pool.shape[0]
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
        raise ValueError(f"budget must be a positive integer, got {budget!r}")
    if budget > n_pool:
        raise ValueError(f"budget {budget} exceeds the pool size {n_pool}")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    seed_list = (
        list(range(seeds)) if isinstance(seeds, int | np.integer) else [int(s) for s in seeds]
    )
    if not seed_list:
        raise ValueError("seeds must name at least one seed")
    if committee_size < 2:
        raise ValueError(f"committee_size must be at least 2, got {committee_size}")

    pickers: dict[str, Picker] = {}
    items = strategies.items() if isinstance(strategies, Mapping) else [(s, s) for s in strategies]
    params = strategy_params or {}
    for display, spec in items:
        if isinstance(spec, str):
            known = available_strategies()
            if spec not in known:
                raise ValueError(f"unknown strategy {spec!r}; choose from {', '.join(known)}")
            pickers[display] = selector_picker(spec, **dict(params.get(spec, {})))
        elif callable(spec):
            pickers[display] = spec
        else:
            raise ValueError(f"strategy {display!r} must be a selector name or a callable")
    if not pickers:
        raise ValueError("no strategies given")

    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X_pool)
    Z_pool = scaler.transform(X_pool).astype(np.float32)
    Z_test = scaler.transform(X_test).astype(np.float32)
    # the reference is fitted to convergence (scikit-learn's default tolerance)
    full = Classifier(n_classes, C=C, max_iter=2000, tol=1e-4).fit(Z_pool, y_enc)
    full_accuracy = full.score(Z_test, y_test_enc)

    points = [*range(batch_size, budget, batch_size), budget]
    accuracy = {name: np.zeros((len(seed_list), len(points))) for name in pickers}
    select_seconds: dict[str, list[float]] = {name: [] for name in pickers}

    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seed_list) * len(pickers) * len(points), unit="round", desc="simulate")
    try:
        for s_i, seed in enumerate(seed_list):
            order = np.random.default_rng(seed).permutation(n_pool)
            Z = np.ascontiguousarray(Z_pool[order])
            y = y_enc[order]
            for name, picker in pickers.items():
                if bar is not None:
                    bar.set_postfix_str(f"{name} seed {seed}")
                labeled = np.zeros(n_pool, dtype=bool)
                model = Classifier(n_classes, C=C, tol=tol)
                spent = 0.0
                for p_i, target_n in enumerate(points):
                    n_new = target_n - int(labeled.sum())
                    state = RoundState(
                        embeddings=Z,
                        probabilities=model.predict_proba(Z),
                        labeled=labeled.copy(),
                        y=np.where(labeled, y, -1),
                        model=model,
                        seed=seed * 100_003 + p_i,
                        round=p_i,
                        n_classes=n_classes,
                        committee_size=committee_size,
                    )
                    t0 = time.perf_counter()
                    picked = np.asarray(picker(n_new, state), dtype=np.int64).ravel()
                    spent += time.perf_counter() - t0
                    _check_picks(name, picked, labeled, n_new)
                    labeled[picked] = True
                    model = Classifier(n_classes, C=C, tol=tol).fit(
                        Z[labeled], y[labeled], init=model
                    )
                    acc = model.score(Z_test, y_test_enc)
                    accuracy[name][s_i, p_i] = acc
                    if on_round is not None:
                        on_round(name, seed, target_n, acc)
                    if bar is not None:
                        bar.update(1)
                select_seconds[name].append(spent)
    finally:
        if bar is not None:
            bar.close()

    return SimulationResults(
        labels=np.asarray(points, dtype=np.int64),
        seeds=seed_list,
        accuracy=accuracy,
        select_seconds=select_seconds,
        full_accuracy=full_accuracy,
        batch_size=int(batch_size),
        budget=int(budget),
        n_pool=n_pool,
        n_test=int(X_test.shape[0]),
        n_classes=n_classes,
        meta=dict(meta or {}),
    )


def _check_picks(name: str, picked: np.ndarray, labeled: np.ndarray, n_new: int) -> None:
    if len(picked) != n_new:
        raise RuntimeError(f"strategy {name!r} returned {len(picked)} samples, expected {n_new}")
    if len(np.unique(picked)) != len(picked):
        raise RuntimeError(f"strategy {name!r} returned duplicate indices")
    if picked.min(initial=0) < 0 or picked.max(initial=0) >= len(labeled):
        raise RuntimeError(f"strategy {name!r} returned indices outside the pool")
    if labeled[picked].any():
        raise RuntimeError(f"strategy {name!r} picked samples that were already labelled")


# --------------------------------------------------------------------------------------------
# data for the CLI


def load_features(
    dataset: str,
    features: str = "backbone",
    image_size: int | None = None,
    backbone: str = "efficientnet-lite0",
    cache_dir: Path | str | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Features ``(X, y, class_names)`` of a named data set or an ``.npz`` file.

    An ``.npz`` holds ``X`` and ``y`` (and optionally ``class_names``). A 2-D ``X`` is used as
    features as it is; a 3-D ``(n, h, w)`` or 4-D ``(n, h, w, 3)`` ``X`` holds images that are
    turned into features like the named sets (``features="raw"`` or ``"backbone"``).
    """
    from labelwheel import datasets

    if features not in ("backbone", "raw"):
        raise ValueError(f"features must be 'backbone' or 'raw', got {features!r}")
    if dataset in datasets.DATASETS:
        name = datasets.RAW if features == "raw" else backbone
        feats = datasets.load_embeddings(
            dataset, backbone=name, image_size=image_size, cache_dir=cache_dir, progress=progress
        )
        return feats.X, feats.y, feats.class_names
    path = Path(dataset)
    if path.suffix != ".npz":
        raise ValueError(
            f"unknown data set {dataset!r}: use one of {', '.join(datasets.DATASETS)} "
            "or a path to an .npz file with arrays X and y"
        )
    if not path.is_file():
        raise ValueError(f"no such file: {dataset}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k]) for k in npz.files if k in ("X", "y", "class_names")}
    except Exception as exc:
        raise ValueError(
            f"could not read {dataset} as an .npz file of numeric arrays (np.savez): {exc}"
        ) from exc
    if not isinstance(arrays, dict) or "X" not in arrays or "y" not in arrays:
        raise ValueError(f"{dataset} must contain arrays named 'X' and 'y'")
    X, y = arrays["X"], arrays["y"]
    names = tuple(str(c) for c in arrays["class_names"]) if "class_names" in arrays else ()
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(f"y must be 1-D with one label per row of X: X {X.shape}, y {y.shape}")
    if X.ndim == 2:
        if not np.issubdtype(X.dtype, np.number):
            raise ValueError(f"X must be numeric, got dtype {X.dtype}")
        X = X.astype(np.float32)
    elif X.ndim in (3, 4):
        images = np.clip(X, 0, 255).astype(np.uint8)
        if features == "raw":
            X = datasets.raw_features(images)
        else:
            from labelwheel.backbone import load_backbone

            size = image_size or 112
            X = load_backbone(backbone, image_size=size, batch_size=64).embed_arrays(images)
    else:
        raise ValueError(f"X must be 2-D features or 3-/4-D images, got shape {X.shape}")
    if not names:
        names = tuple(str(c) for c in np.unique(y))
    return X, y, names


def _parse_seeds(value: str) -> list[int]:
    text = value.strip()
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            count = int(text)
            if count < 1:
                raise click.BadParameter("must be a positive count or a comma-separated list")
            seeds = list(range(count))
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is neither a count (e.g. 5) nor a comma list of seeds (e.g. 0,1,2)"
        ) from exc
    if len(set(seeds)) != len(seeds) or not seeds:
        raise click.BadParameter("seeds must be distinct and at least one")
    return seeds


@click.command("simulate")
@click.option(
    "--dataset",
    default="digits",
    show_default=True,
    help="mnist5k, digits, lfw, or an .npz file with arrays X (features or images) and y.",
)
@click.option(
    "--features",
    type=click.Choice(["backbone", "raw"]),
    default=None,
    help="Backbone embeddings or standardised raw pixels [default: raw for digits, else backbone].",
)
@click.option(
    "--backbone",
    default="efficientnet-lite0",
    show_default=True,
    help="Image backbone for --features backbone (efficientnet-lite0..4, torchvision:<name>).",
)
@click.option(
    "--image-size", type=click.IntRange(16, 1024), default=None, help="Backbone input px."
)
@click.option(
    "--strategies",
    default=",".join(DEFAULT_STRATEGIES),
    show_default=True,
    help="Comma-separated selector names; 'all' for every strategy.",
)
@click.option(
    "--budget", type=click.IntRange(min=1), default=200, show_default=True, help="Labels to reach."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Labels revealed per round.",
)
@click.option("--seeds", default="5", show_default=True, help="A count (5) or a list (0,1,2).")
@click.option(
    "--test-size",
    type=click.FloatRange(0.05, 0.9),
    default=0.25,
    show_default=True,
    help="Held-out fraction (stratified).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("simulation"),
    show_default=True,
    help="Directory for curves.json, curves.csv, curves.png and summary.txt.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Embedding cache [default: $LABELWHEEL_CACHE or ~/.cache/labelwheel].",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def simulate_command(
    dataset: str,
    features: str | None,
    backbone: str,
    image_size: int | None,
    strategies: str,
    budget: int,
    batch_size: int,
    seeds: str,
    test_size: float,
    out_dir: Path,
    cache_dir: Path | None,
    progress: bool,
) -> None:
    """Simulate active learning on a labelled data set and compare selectors to random.

    Starts from zero labels, lets each strategy pick --batch-size samples per round, retrains a
    logistic regression and records held-out accuracy up to --budget labels, for every seed.
    Prints, per strategy, the labels needed to reach 95% of the full-data accuracy.
    """
    from sklearn.model_selection import train_test_split

    seed_list = _parse_seeds(seeds)
    try:
        known = available_strategies()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    if names == ["all"]:
        names = list(known)
    unknown = [s for s in names if s not in known]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown strategy {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(known)}",
            param_hint="--strategies",
        )
    if len(set(names)) != len(names):
        raise click.BadParameter("a strategy is listed twice", param_hint="--strategies")
    feature_kind = features or ("raw" if dataset == "digits" else "backbone")
    try:
        X, y, class_names = load_features(
            dataset, feature_kind, image_size, backbone, cache_dir, progress=progress
        )
    except ValueError as exc:  # unknown data set or backbone, unreadable file, bad image size
        raise click.UsageError(str(exc)) from exc
    try:
        X_pool, X_test, y_pool, y_test = train_test_split(
            X, y, test_size=test_size, random_state=0, stratify=y
        )
    except ValueError as exc:
        raise click.BadParameter(f"cannot split the data: {exc}", param_hint="--dataset") from exc
    if budget > len(y_pool):
        raise click.BadParameter(
            f"budget {budget} exceeds the pool of {len(y_pool)} samples", param_hint="--budget"
        )
    meta = {
        "dataset": dataset,
        "features": feature_kind,
        "backbone": backbone if feature_kind == "backbone" else None,
        "image_size": image_size,
        "test_size": test_size,
        "class_names": list(class_names),
    }
    try:
        results = run_simulation(
            X_pool,
            y_pool,
            X_test,
            y_test,
            names,
            budget=budget,
            batch_size=batch_size,
            seeds=seed_list,
            progress=progress,
            meta=meta,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    paths = results.save(out_dir, title=f"{dataset} ({feature_kind} features)")
    text = results.format_summary()
    (out_dir / "summary.txt").write_text(text + "\n")
    click.echo(text)
    click.echo("wrote " + ", ".join(str(p) for p in [*paths, out_dir / "summary.txt"]))


__all__ = [
    "DEFAULT_STRATEGIES",
    "Classifier",
    "Picker",
    "RoundState",
    "SimulationResults",
    "labels_to_reach",
    "load_features",
    "plot_curves",
    "run_simulation",
    "selector_picker",
    "simulate_command",
]
