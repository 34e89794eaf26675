"""The learning-curve forecast, checked on real learning curves (sklearn digits)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from labelwheel.head import LinearProbe
from labelwheel.lead.forecast import (
    CurvePoint,
    fit_power_law,
    forecast_labels,
    history_from_versions,
    learning_curve,
    render_forecast_png,
)


def _real_curve(digits: tuple[np.ndarray, np.ndarray], sizes: list[int]) -> dict[int, float]:
    """Accuracy on a fixed held-out set of 400 digits, training on the first m of a shuffle."""
    x, y = digits
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=400, stratify=y, random_state=0)
    order = np.random.default_rng(0).permutation(len(ytr))
    return {
        m: float(np.mean(LinearProbe().fit(xtr[order[:m]], ytr[order[:m]]).predict(xte) == yte))
        for m in sizes
    }


def test_power_law_recovers_known_parameters() -> None:
    n = np.array([10, 20, 40, 80, 160, 320, 640], dtype=float)
    acc = 0.9 - 0.8 * n**-0.5
    fit = fit_power_law(n, acc)
    assert fit.a == pytest.approx(0.9, abs=1e-3)
    assert fit.b == pytest.approx(0.8, rel=0.02)
    assert fit.c == pytest.approx(0.5, rel=0.02)
    assert fit.labels_for(0.85) == pytest.approx((0.8 / 0.05) ** 2, rel=0.02)
    assert math.isinf(fit.labels_for(0.95))


@pytest.mark.slow
def test_forecast_from_first_part_of_real_curve_predicts_the_rest(digits) -> None:
    sizes = [20, 30, 45, 70, 100, 150, 220, 500, 1000, 1397]
    curve = _real_curve(digits, sizes)
    first = [CurvePoint(m, curve[m]) for m in sizes if m <= 220]
    fit = fit_power_law([p.n_labels for p in first], [p.accuracy for p in first])
    for m in (500, 1000, 1397):  # extrapolation 2-6x beyond the data
        assert abs(float(fit.predict(m)) - curve[m]) < 0.03, (m, float(fit.predict(m)), curve[m])
    # The real curve crosses 0.95 between 220 and 1000 labels; the forecast says so.
    fc = forecast_labels(first, 0.95, current_labels=220)
    assert fc.status == "reachable"
    assert fc.more_labels is not None and 50 <= fc.more_labels <= 800
    assert fc.interval is not None and fc.interval[0] <= fc.more_labels
    assert "more labels" in fc.message


def test_too_little_history() -> None:
    fc = forecast_labels([CurvePoint(10, 0.5), CurvePoint(20, 0.6), CurvePoint(20, 0.62)], 0.9)
    assert fc.status == "too_little_history"
    assert fc.more_labels is None and fc.fit is None
    assert "too little history" in fc.message


def test_out_of_reach_when_asymptote_below_target() -> None:
    n = np.array([20, 40, 80, 160, 320, 640])
    pts = [CurvePoint(int(k), float(0.8 - 0.5 * k**-0.7)) for k in n]
    fc = forecast_labels(pts, 0.95)
    assert fc.status == "out_of_reach"
    assert fc.asymptote is not None and fc.asymptote < 0.85
    assert "out of reach" in fc.message


def test_reached_target() -> None:
    pts = [CurvePoint(k, 0.99 - 1.0 * k**-0.5) for k in (25, 50, 100, 400)]
    fc = forecast_labels(pts, 0.9)
    assert fc.status == "reached" and fc.more_labels == 0


@pytest.mark.parametrize("target", [0.0, 1.0, 1.5, -0.1])
def test_bad_target(target: float) -> None:
    with pytest.raises(ValueError, match="target"):
        forecast_labels([], target)


def test_fit_rejects_too_few_points() -> None:
    with pytest.raises(ValueError, match="three"):
        fit_power_law([10, 20], [0.5, 0.6])


def test_cv_learning_curve_rises_on_real_digits(digits) -> None:
    x, y = digits
    pts = learning_curve(x[:500], y[:500], sizes=[20, 60, 180], repeats=2)
    assert [p.n_labels for p in pts] == [20, 60, 180]
    accs = [p.accuracy for p in pts]
    assert accs[0] < accs[2]
    assert 0.8 < accs[2] <= 1.0


def test_learning_curve_empty_with_one_class() -> None:
    x = np.random.default_rng(0).normal(size=(30, 4))
    assert learning_curve(x, np.zeros(30, dtype=int)) == []


def test_history_from_versions_skips_versions_without_accuracy() -> None:
    class V:
        def __init__(self, name: str, n: int, acc: float | None) -> None:
            self.name, self.n_labels, self.cv_accuracy = name, n, acc

    pts = history_from_versions([V("v1", 10, None), V("v2", 20, 0.7), V("v3", 40, 0.8)])
    assert [(p.n_labels, p.accuracy, p.source) for p in pts] == [(20, 0.7, "v2"), (40, 0.8, "v3")]


def test_forecast_png_is_a_png() -> None:
    pts = [CurvePoint(k, 0.97 - 0.9 * k**-0.6) for k in (20, 40, 80, 160)]
    data = render_forecast_png(forecast_labels(pts, 0.95))
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
