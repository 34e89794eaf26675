"""How many more labels a target accuracy needs: an inverse power law fitted to a learning curve.

The curve ``acc(n) = a - b * n**(-c)`` rises with the number of labels ``n`` towards the asymptote
``a``. It is fitted (scipy ``curve_fit``, bounded) to the accuracy history — the cross-validated
accuracy of each model version against the labels it was trained on, or, without versions, a
cross-validated learning curve computed on the labels present. The answer is one of:

* ``reached`` — the latest measurement is already at or above the target;
* ``reachable`` — about K more labels, with an interval from a residual bootstrap;
* ``out_of_reach`` — the fitted asymptote is below the target;
* ``too_little_history`` — fewer than ``min_points`` distinct label counts to fit on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedShuffleSplit

from labelwheel.head import HeadConfig, LinearProbe

_CURVE_HEAD = HeadConfig(calibrate=False)  # the product head; calibration never moves accuracy

MIN_POINTS = 4
MAX_LABELS = 10_000_000  # beyond this a "reachable" answer is meaningless


@dataclass(frozen=True)
class CurvePoint:
    """One measurement: accuracy with ``n_labels`` labels (``source`` says where it came from)."""

    n_labels: int
    accuracy: float
    source: str = "cv"


@dataclass(frozen=True)
class PowerLawFit:
    """Fitted ``acc(n) = a - b * n**(-c)``."""

    a: float
    b: float
    c: float

    def predict(self, n: float | np.ndarray) -> np.ndarray:
        """Accuracy predicted at ``n`` labels."""
        return _power_law(np.asarray(n, dtype=np.float64), self.a, self.b, self.c)

    def labels_for(self, target: float) -> float:
        """Label count at which the curve reaches ``target`` (``inf`` if it never does)."""
        if self.a <= target or self.b <= 0:
            return math.inf if self.a <= target else 1.0
        return float((self.b / (self.a - target)) ** (1.0 / self.c))


@dataclass
class Forecast:
    """The answer to "how many more labels to reach ``target``?"."""

    status: str  # reached | reachable | out_of_reach | too_little_history
    target: float
    current_labels: int
    current_accuracy: float | None
    more_labels: int | None = None
    interval: tuple[int, int | None] | None = None  # (low, high); high None = unbounded
    asymptote: float | None = None
    fit: PowerLawFit | None = None
    points: list[CurvePoint] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = asdict(self)
        out["interval"] = list(self.interval) if self.interval else None
        return out


def _power_law(n: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.power(n, -c)


def fit_power_law(
    n_labels: Sequence[float] | np.ndarray,
    accuracy: Sequence[float] | np.ndarray,
    start: PowerLawFit | None = None,
) -> PowerLawFit:
    """Fit the inverse power law by bounded least squares (0 ≤ a ≤ 1, b ≥ 0, 0.05 ≤ c ≤ 1).

    Larger label counts get more weight (weight ∝ n²: the recent part of the curve says most
    about its tail). ``start`` (e.g. a previous fit) replaces the three default starting points
    with one. Raises ValueError with fewer than three distinct label counts.
    """
    n = np.asarray(n_labels, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    if n.shape != y.shape or n.ndim != 1:
        raise ValueError("n_labels and accuracy must be 1-D sequences of the same length")
    if np.unique(n).size < 3:
        raise ValueError("fitting a learning curve needs at least three distinct label counts")
    if np.any(n <= 0) or not np.all(np.isfinite(y)):
        raise ValueError("label counts must be positive and accuracies finite")
    # Relative weights only: a point's weight grows with the square of its label count, so the
    # recent part of the curve (what is extrapolated) dominates the early steep part. On real
    # curves (benchmarks/lead_forecast.py) this cut the tail error of MNIST several-fold.
    sigma = n.max() / n
    best: tuple[float, np.ndarray] | None = None
    starts: list[tuple[float, float, float]] = []
    if start is not None:
        starts.append((start.a, max(start.b, 1e-6), min(max(start.c, 0.05), 1.0)))
    else:
        for c0 in (0.3, 0.6, 1.0):
            a0 = min(1.0, float(y.max()) + 0.02)
            b0 = max(1e-3, (a0 - float(y.min())) * float(n.min()) ** c0)
            starts.append((a0, b0, c0))
    for p0 in starts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                params, _ = curve_fit(
                    _power_law,
                    n,
                    y,
                    p0=p0,
                    sigma=sigma,
                    bounds=((0.0, 0.0, 0.05), (1.0, np.inf, 1.0)),
                    maxfev=20000,
                )
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum(((y - _power_law(n, *params)) / sigma) ** 2))
        if best is None or sse < best[0]:
            best = (sse, params)
    if best is None:
        raise ValueError("the learning curve could not be fitted")
    a, b, c = (float(v) for v in best[1])
    return PowerLawFit(a=a, b=b, c=c)


def _collapse(points: Sequence[CurvePoint]) -> tuple[np.ndarray, np.ndarray]:
    """Average accuracies measured at the same label count; sorted by label count."""
    by_n: dict[int, list[float]] = {}
    for p in points:
        if p.n_labels > 0 and math.isfinite(p.accuracy):
            by_n.setdefault(int(p.n_labels), []).append(float(p.accuracy))
    ns = np.array(sorted(by_n), dtype=np.float64)
    accs = np.array([float(np.mean(by_n[int(k)])) for k in ns], dtype=np.float64)
    return ns, accs


def forecast_labels(
    points: Sequence[CurvePoint],
    target: float,
    *,
    current_labels: int | None = None,
    min_points: int = MIN_POINTS,
    n_boot: int = 200,
    confidence: float = 0.8,
    seed: int = 0,
) -> Forecast:
    """Forecast how many more labels reach ``target`` accuracy from a learning-curve history.

    ``current_labels`` defaults to the largest label count in the history. The interval is the
    central ``confidence`` range of a residual bootstrap of the fit (high end ``None`` when more
    than the upper tail of bootstrap fits never reach the target).
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"target accuracy must be between 0 and 1 (exclusive), got {target}")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be between 0 and 1")
    ns, accs = _collapse(points)
    current = int(current_labels if current_labels is not None else (ns.max() if ns.size else 0))
    current_acc = float(accs[-1]) if accs.size else None
    result = Forecast(
        status="too_little_history",
        target=target,
        current_labels=current,
        current_accuracy=current_acc,
        points=sorted(points, key=lambda p: p.n_labels),
    )
    if ns.size < max(3, min_points):
        result.message = (
            f"too little history: {ns.size} distinct label count(s), a forecast needs at least "
            f"{max(3, min_points)}"
        )
        return result
    fit = fit_power_law(ns, accs)
    result.fit = fit
    result.asymptote = fit.a
    if current_acc is not None and current_acc >= target:
        result.status = "reached"
        result.more_labels = 0
        result.interval = (0, 0)
        result.message = (
            f"target {target:.3f} already reached: accuracy {current_acc:.3f} with {current} labels"
        )
        return result
    needed = fit.labels_for(target)
    if not math.isfinite(needed) or needed > MAX_LABELS:
        result.status = "out_of_reach"
        result.message = (
            f"target {target:.3f} looks out of reach: the learning curve levels off at about "
            f"{fit.a:.3f}; more labels of the same kind are unlikely to get there (better "
            "features, cleaner labels or a different model might)"
        )
        return result

    # Residual bootstrap: refit on fitted + resampled residuals.
    rng = np.random.default_rng(seed)
    fitted = fit.predict(ns)
    resid = accs - fitted
    boots: list[float] = []
    for _ in range(n_boot):
        y_b = np.clip(fitted + rng.choice(resid, size=resid.size, replace=True), 0.0, 1.0)
        try:
            fb = fit_power_law(ns, y_b, start=fit)
        except ValueError:
            continue
        nb = fb.labels_for(target)
        boots.append(nb if nb <= MAX_LABELS else math.inf)
    more = max(0, math.ceil(needed - current))
    result.status = "reachable"
    result.more_labels = more
    if boots:
        arr = np.array(boots)
        tail = (1.0 - confidence) / 2.0
        lo = float(np.quantile(arr, tail, method="lower"))
        hi = float(np.quantile(arr, 1.0 - tail, method="higher"))
        lo_more = max(0, math.ceil(lo - current)) if math.isfinite(lo) else more
        hi_more = max(0, math.ceil(hi - current)) if math.isfinite(hi) else None
        result.interval = (min(lo_more, more), max(hi_more, more) if hi_more is not None else None)
    if result.interval is None:
        span = "no interval (the bootstrap failed)"
    elif result.interval[1] is None:
        span = f"interval {result.interval[0]:,} – unbounded"
    else:
        span = f"interval {result.interval[0]:,}–{result.interval[1]:,}"
    result.message = (
        f"about {more:,} more labels ({span}, {int(confidence * 100)}%) to reach "
        f"{target:.3f}; the curve levels off at about {fit.a:.3f}"
    )
    return result


def default_sizes(n_labelled: int, n_classes: int, n_points: int = 7) -> list[int]:
    """Geometric training-set sizes for a learning curve on ``n_labelled`` labels (up to 90 %)."""
    top = int(n_labelled * 0.9)
    low = max(2 * n_classes, 10)
    if top < low:
        return []
    sizes = np.unique(np.round(np.geomspace(low, top, n_points)).astype(int))
    return [int(s) for s in sizes]


def learning_curve(
    x: np.ndarray,
    y: np.ndarray,
    *,
    sizes: Sequence[int] | None = None,
    repeats: int | None = None,
    seed: int = 0,
) -> list[CurvePoint]:
    """Cross-validated learning curve on the labels present.

    For each size ``m``, ``repeats`` stratified random splits train on ``m`` labels and measure
    accuracy on all the other labels (at least 10 % of them), so small sizes are measured on many
    labels. Returns one point per size with the mean accuracy. Empty when there are too few
    labels or classes. ``repeats`` defaults to 8 below 1,000 labels, 3 above.
    """
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2 or counts.min() < 2:
        keep = np.isin(y, classes[counts >= 2])
        x, y = x[keep], y[keep]
        classes, counts = np.unique(y, return_counts=True)
        if classes.size < 2:
            return []
    if sizes is None:
        sizes = default_sizes(int(y.size), int(classes.size))
    if repeats is None:
        repeats = 8 if y.size < 1000 else 3
    points: list[CurvePoint] = []
    for m in sizes:
        if m < classes.size or m > int(y.size * 0.9):
            continue
        test = int(y.size - m)
        if test < classes.size:
            continue
        split = StratifiedShuffleSplit(
            n_splits=repeats, train_size=int(m), test_size=test, random_state=seed
        )
        accs = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            for tr, te in split.split(x, y):
                model = LinearProbe(_CURVE_HEAD).fit(x[tr], y[tr])
                accs.append(float(np.mean(model.predict(x[te]) == y[te])))
        points.append(CurvePoint(n_labels=int(m), accuracy=float(np.mean(accs)), source="cv"))
    return points


def history_from_versions(versions: Sequence[Any]) -> list[CurvePoint]:
    """Learning-curve points from the backend's model versions (``n_labels``, ``cv_accuracy``)."""
    points = []
    for v in versions:
        acc = getattr(v, "cv_accuracy", None)
        n = int(getattr(v, "n_labels", 0) or 0)
        if acc is not None and n > 0 and math.isfinite(float(acc)):
            points.append(CurvePoint(n_labels=n, accuracy=float(acc), source=str(v.name)))
    return points


def render_forecast_png(forecast: Forecast, title: str = "") -> bytes:
    """Plot the history, the fitted curve up to past the target and the target line (PNG)."""
    from io import BytesIO

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    pts = forecast.points
    if pts:
        ax.plot(
            [p.n_labels for p in pts],
            [p.accuracy for p in pts],
            "o",
            color="#1f5fbf",
            label="measured accuracy",
        )
    top = max([p.n_labels for p in pts], default=10)
    if forecast.more_labels is not None:
        top = max(top, forecast.current_labels + forecast.more_labels)
    if forecast.interval and forecast.interval[1] is not None:
        top = max(top, forecast.current_labels + forecast.interval[1])
    top = int(min(max(top * 1.5, 20), MAX_LABELS))
    if forecast.fit is not None:
        lo = max(1, min((p.n_labels for p in pts), default=1))
        xs = np.geomspace(lo, top, 200)
        ax.plot(xs, forecast.fit.predict(xs), "-", color="#e08a00", label="fitted curve")
        ax.axhline(forecast.fit.a, color="#e08a00", linestyle=":", linewidth=1, label="asymptote")
    ax.axhline(forecast.target, color="#d62728", linestyle="--", linewidth=1, label="target")
    if forecast.status == "reachable" and forecast.more_labels is not None:
        goal = forecast.current_labels + forecast.more_labels
        ax.axvline(goal, color="#2a9d3a", linewidth=1, label=f"≈ {goal:,} labels")
        if forecast.interval is not None:
            hi = forecast.interval[1]
            ax.axvspan(
                forecast.current_labels + forecast.interval[0],
                forecast.current_labels + hi if hi is not None else top,
                color="#2a9d3a",
                alpha=0.12,
            )
    from matplotlib.ticker import FuncFormatter, NullFormatter

    lows = [p.n_labels for p in pts] or [1]
    if top / max(1, min(lows)) > 10:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    ax.set_xlabel("labels")
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"Learning curve: {forecast.status.replace('_', ' ')}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
