"""Pool-based active-learning simulator: how many labels does each selector save?

The loop, for every seed and every strategy:

1. Start with no labels. The selectors see the pool's features standardised with the pool's
   statistics (in pool-based active learning the unlabelled features are known), as the
   backend's queue does (:func:`labelwheel.pool.queue_order`).
2. Each round, the strategy picks ``batch_size`` unlabelled samples. Strategies that need
   probabilities get the current classifier's ``predict_proba`` over the pool (uniform while fewer
   than two classes are labelled). ``bald`` gets a bootstrap committee: ``committee_size``
   logistic regressions, each fitted on a resample (with replacement) of the labelled set, their
   probabilities stacked to ``(T, N, C)``.
3. The picked samples' labels are revealed, the product's head (:mod:`labelwheel.head`, the one
   the ML backend serves, standardised with the pool's statistics as the backend does) is
   refitted on everything labelled so far, and its accuracy on a held-out test split is
   recorded. With a single class labelled it predicts that class.
4. Repeat until ``budget`` labels.

Every seed also shuffles the pool order, so no result depends on how the data set is sorted.
The reference, "full-data accuracy", is the same classifier fitted on the whole labelled pool;
:func:`labels_to_reach` reads off the labels a curve needs to reach a fraction of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from labelwheel.head import DEFAULT_CONFIG, Head, HeadConfig, Scaling, fit_codes
from labelwheel.semisup import DEFAULT_SEMI
from labelwheel.simulate.results import SimulationResults

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

# --------------------------------------------------------------------------------------------
# classifier


class Classifier:
    """The product's head (:mod:`labelwheel.head`) over a fixed set of ``n_classes``.

    ``predict_proba`` always returns ``(n, n_classes)`` columns: classes not seen in training get
    probability 0 (then a tiny floor so that logarithms stay finite). With fewer than two classes
    in training it predicts the single class seen (accuracy) and uniform probabilities (so that
    uncertainty strategies do not mistake "no model" for confidence): the backend serves no
    pre-label then, and ranks with its cold-start selector.
    """

    def __init__(
        self,
        n_classes: int,
        C: float = DEFAULT_CONFIG.C,
        max_iter: int = DEFAULT_CONFIG.max_iter,
        tol: float = DEFAULT_CONFIG.tol,
        scaling: Scaling | None = None,
        calibrate: bool = True,
        semi_supervised: str = DEFAULT_SEMI,
        pool: np.ndarray | None = None,
    ) -> None:
        self.n_classes = n_classes
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.scaling = scaling
        self.pool = pool
        self.config = HeadConfig(
            C=C, tol=tol, max_iter=max_iter, calibrate=calibrate, semi_supervised=semi_supervised
        )
        self.head: Head | None = None
        self._constant: int = 0

    def fit(self, X: np.ndarray, y: np.ndarray) -> Classifier:
        """Fit on labelled rows; ``y`` holds class indices in ``0..n_classes-1``."""
        y = np.asarray(y, dtype=np.int64)
        classes = np.unique(y)
        self.head = None
        if len(classes) < 2:
            self._constant = int(classes[0]) if len(classes) else 0
            return self
        self.head = fit_codes(
            X, y, self.n_classes, config=self.config, scaling=self.scaling, pool=self.pool
        )
        return self

    @property
    def is_fitted(self) -> bool:
        """True once two or more classes have been seen."""
        return self.head is not None

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_classes)`` probabilities; uniform when fewer than two classes were seen."""
        n = X.shape[0]
        if self.head is None:
            return np.full((n, self.n_classes), 1.0 / self.n_classes)
        out = np.maximum(self.head.predict_proba(X), 1e-12)
        return out / out.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class index per row."""
        if self.head is None:
            return np.full(X.shape[0], self._constant, dtype=np.int64)
        return self.head.predict(X)

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy on ``(X, y)``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))


# --------------------------------------------------------------------------------------------
# strategies as "pickers"


@dataclass
class RoundState:
    """What a strategy may look at in one round of the simulation.

    ``embeddings`` are the pool features standardised with the pool's statistics (what the
    selectors see, as in the backend's queue); ``features`` the same rows as the head takes them;
    ``probabilities`` the current classifier's ``(N, C)`` probabilities over the pool;
    ``labeled`` the boolean mask of revealed samples; ``y`` the pool labels, valid only where
    ``labeled`` is true; ``model`` the fitted :class:`Classifier`; ``seed`` differs per round.
    """

    embeddings: np.ndarray
    features: np.ndarray
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
                    self.n_classes,
                    C=self.model.C,
                    max_iter=self.model.max_iter,
                    tol=self.model.tol,
                    scaling=self.model.scaling,
                )
                member.fit(self.features[sample], self.y[sample])
                members.append(member.predict_proba(self.features))
            self._committee = np.stack(members)
        return self._committee


class Picker(Protocol):
    """A strategy in the simulator: return up to ``n`` distinct unlabelled pool indices."""

    def __call__(self, n: int, state: RoundState) -> np.ndarray: ...


def selector_picker(strategy: str, *, balanced: bool = False, **params: Any) -> Picker:
    """A :class:`Picker` that calls ``labelwheel.selectors.select(strategy, ...)``; with
    ``balanced``, :func:`labelwheel.selectors.balance.balanced_select` (class-balanced batches)."""
    from labelwheel.selectors import select
    from labelwheel.selectors.balance import balanced_select

    choose = balanced_select if balanced else select

    def pick(n: int, state: RoundState) -> np.ndarray:
        probs = state.committee_probabilities() if strategy == "bald" else state.probabilities
        picked = choose(
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
    C: float = DEFAULT_CONFIG.C,
    tol: float = DEFAULT_CONFIG.tol,
    committee_size: int = 5,
    strategy_params: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = False,
    on_round: Callable[[str, int, int, float], None] | None = None,
    meta: Mapping[str, Any] | None = None,
    threads: int | None = 1,
    semi_supervised: str = DEFAULT_SEMI,
    balanced: bool = False,
) -> SimulationResults:
    """Run the pool-based active-learning loop for every strategy and seed.

    ``strategies`` is a list of selector names (see ``labelwheel.selectors.STRATEGIES``) or a
    mapping from a display name to a selector name or a :class:`Picker` (used by the peer
    benchmarks to run other libraries in the same loop). ``seeds`` is a list of seeds or a count
    (seeds ``0..count-1``). ``strategy_params`` passes extra keyword arguments to ``select`` per
    strategy name. ``C`` and ``tol`` are the head's (:class:`labelwheel.head.HeadConfig`).
    ``results.picks`` holds the pool indices each run labelled, in order. Accuracy is recorded
    after every batch: at ``batch_size, 2·batch_size, …, budget`` labels.
    ``on_round(strategy, seed, n_labels, accuracy)`` is called after each.

    ``semi_supervised``: the head's use of the unlabelled pool
    (:attr:`labelwheel.head.HeadConfig.semi_supervised`; the pool's features are passed to it).

    ``balanced``: selector names run with class-balanced batches
    (:func:`labelwheel.selectors.balance.balanced_select`).

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
            semi_supervised=semi_supervised,
            balanced=balanced,
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
    semi_supervised: str = DEFAULT_SEMI,
    balanced: bool = False,
) -> SimulationResults:
    HeadConfig(semi_supervised=semi_supervised)  # a clear error for an unknown mode, up front
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
            picker_params = dict(params.get(spec, {}))
            pickers[display] = selector_picker(spec, balanced=balanced, **picker_params)
        elif callable(spec):
            pickers[display] = spec
        else:
            raise ValueError(f"strategy {display!r} must be a selector name or a callable")
    if not pickers:
        raise ValueError("no strategies given")

    scaling = Scaling.of(X_pool)  # the pool's statistics, as the backend's queue and head use
    X_pool = X_pool.astype(np.float32)
    X_test = X_test.astype(np.float32)
    Z_pool = scaling.apply(X_pool)
    # the reference is fitted to convergence (scikit-learn's default tolerance)
    full = Classifier(n_classes, C=C, max_iter=2000, tol=1e-4, scaling=scaling, calibrate=False)
    full_accuracy = full.fit(X_pool, y_enc).score(X_test, y_test_enc)

    points = [*range(batch_size, budget, batch_size), budget]
    accuracy = {name: np.zeros((len(seed_list), len(points))) for name in pickers}
    select_seconds: dict[str, list[float]] = {name: [] for name in pickers}
    picks: dict[str, list[list[int]]] = {name: [] for name in pickers}

    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seed_list) * len(pickers) * len(points), unit="round", desc="simulate")
    try:
        for s_i, seed in enumerate(seed_list):
            order = np.random.default_rng(seed).permutation(n_pool)
            Z = np.ascontiguousarray(Z_pool[order])
            X = np.ascontiguousarray(X_pool[order])
            y = y_enc[order]
            for name, picker in pickers.items():
                if bar is not None:
                    bar.set_postfix_str(f"{name} seed {seed}")
                labeled = np.zeros(n_pool, dtype=bool)
                taken: list[int] = []
                model = Classifier(n_classes, C=C, tol=tol, scaling=scaling)
                spent = 0.0
                for p_i, target_n in enumerate(points):
                    n_new = target_n - int(labeled.sum())
                    state = RoundState(
                        embeddings=Z,
                        features=X,
                        probabilities=model.predict_proba(X),
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
                    taken.extend(int(order[i]) for i in picked)
                    model = Classifier(
                        n_classes,
                        C=C,
                        tol=tol,
                        scaling=scaling,
                        semi_supervised=semi_supervised,
                        pool=X_pool,
                    )
                    model.fit(X[labeled], y[labeled])
                    acc = model.score(X_test, y_test_enc)
                    accuracy[name][s_i, p_i] = acc
                    if on_round is not None:
                        on_round(name, seed, target_n, acc)
                    if bar is not None:
                        bar.update(1)
                select_seconds[name].append(spent)
                picks[name].append(taken)
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
        meta={**dict(meta or {}), "semi_supervised": semi_supervised, "balanced": balanced},
        picks=picks,
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
