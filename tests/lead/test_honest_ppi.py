"""The prediction-powered estimate (labelwheel.lead.honest.ppi_accuracy) on synthetic draws whose
true accuracy is known: unbiased whatever the calibration, narrower than the plain proportion
when the confidence is informative, with the nominal coverage."""

from __future__ import annotations

import numpy as np
import pytest

from labelwheel.lead.honest import (
    PPI_MIN_LABELS,
    ControlLabel,
    PoolConfidence,
    ppi_accuracy,
    wilson,
)


def _pool(rng: np.random.Generator, size: int = 20_000) -> np.ndarray:
    """Per-task probability that the pre-label is right: mostly confident, a hard tail."""
    easy = rng.beta(12, 1.2, size=size)
    hard = rng.beta(2, 2, size=size)
    return np.where(rng.random(size) < 0.8, easy, hard)


def _draws(
    true_p: np.ndarray,
    shown: np.ndarray,
    n: int,
    draws: int,
    seed: int,
) -> tuple[list[tuple[float, tuple[float, float]]], list[tuple[float, tuple[float, float]]]]:
    """``draws`` control slices of ``n`` tasks: (PPI, plain) estimates with intervals.
    ``true_p``: the real chance each pre-label is right; ``shown``: the confidence the model
    reports (calibrated when equal to ``true_p``)."""
    rng = np.random.default_rng(seed)
    pools = {"v1": PoolConfidence(len(shown), float(shown.mean()), float(shown.var()))}
    ppi, plain = [], []
    for _ in range(draws):
        rows = rng.choice(len(true_p), size=n, replace=False)
        ok = rng.random(n) < true_p[rows]
        labels = [
            ControlLabel("v1", bool(y), float(c)) for y, c in zip(ok, shown[rows], strict=True)
        ]
        est = ppi_accuracy(labels, pools)
        assert est.estimate is not None and est.interval is not None
        ppi.append((est.estimate, est.interval))
        k = int(ok.sum())
        plain.append((k / n, wilson(k, n) or (0.0, 1.0)))
    return ppi, plain


def _coverage(rows: list[tuple[float, tuple[float, float]]], truth: float) -> float:
    return float(np.mean([lo <= truth <= hi for _, (lo, hi) in rows]))


def _width(rows: list[tuple[float, tuple[float, float]]]) -> float:
    return float(np.mean([hi - lo for _, (lo, hi) in rows]))


def test_calibrated_confidence_narrows_the_interval_with_the_right_coverage() -> None:
    true_p = _pool(np.random.default_rng(0))
    truth = float(true_p.mean())
    ppi, plain = _draws(true_p, true_p, n=100, draws=600, seed=1)
    # unbiased: the mean over 600 draws within 3 standard errors of the truth
    errors = np.array([e for e, _ in ppi]) - truth
    assert abs(errors.mean()) < 3 * errors.std() / np.sqrt(len(errors))
    # nominal 95%: 600 draws put the observed coverage within about ±2 points of it
    assert 0.91 <= _coverage(ppi, truth) <= 0.985
    # narrower than Wilson, and a smaller error: the confidence explains part of the variance
    assert _width(ppi) < 0.9 * _width(plain)
    plain_rmse = np.sqrt(np.mean((np.array([e for e, _ in plain]) - truth) ** 2))
    assert np.sqrt(np.mean(errors**2)) < 0.95 * plain_rmse


def test_overconfident_model_stays_unbiased() -> None:
    true_p = _pool(np.random.default_rng(2))
    truth = float(true_p.mean())
    shown = np.clip(true_p + 0.12, 0.0, 1.0)  # the model claims 12 points more than it has
    assert shown.mean() - truth > 0.08
    ppi, _ = _draws(true_p, shown, n=60, draws=600, seed=3)
    errors = np.array([e for e, _ in ppi]) - truth
    assert abs(errors.mean()) < 3 * errors.std() / np.sqrt(len(errors))
    assert _coverage(ppi, truth) >= 0.9


def test_useless_confidence_is_no_worse_than_plain() -> None:
    rng = np.random.default_rng(4)
    true_p = np.full(10_000, 0.8)
    shown = rng.random(10_000)  # says nothing about which pre-labels are right
    ppi, plain = _draws(true_p, shown, n=80, draws=400, seed=5)
    assert _coverage(ppi, 0.8) >= 0.9
    assert _width(ppi) < 1.1 * _width(plain)


def test_few_labels_fall_back_to_the_plain_proportion() -> None:
    labels = [ControlLabel("v3", i % 3 != 0, 0.9) for i in range(PPI_MIN_LABELS - 1)]
    est = ppi_accuracy(labels, {"v3": PoolConfidence(500, 0.85, 0.01)})
    k = sum(lab.correct for lab in labels)
    assert est.method == "plain" and est.lam == 0.0
    assert est.estimate == pytest.approx(k / len(labels))
    assert est.interval == wilson(k, len(labels))
    assert est.n == est.n_confidence == len(labels) and est.pool_n == 500
    empty = ppi_accuracy([], {})
    assert empty.estimate is None and empty.interval is None and empty.method == "plain"


def test_known_numbers_by_hand() -> None:
    # 12 labels, confidence 0.9 on the 8 right ones and 0.6 on the 4 wrong ones
    c = [0.9] * 8 + [0.6] * 4
    y = [True] * 8 + [False] * 4
    pool = PoolConfidence(1000, 0.8, 0.02)
    est = ppi_accuracy([ControlLabel("v1", a, b) for a, b in zip(y, c, strict=True)], {"v1": pool})
    yy, cc = np.array(y, dtype=float), np.array(c)
    cov = np.cov(yy, cc, ddof=1)[0, 1]
    v_pool = pool.var / pool.n
    lam = min(1.0, cov / (np.var(cc, ddof=1) + 12 * v_pool))
    z = yy - lam * (cc - pool.mean)
    theta = z.mean()
    se = np.sqrt(np.var(z, ddof=1) / 12 + lam**2 * v_pool)
    assert est.method == "ppi" and est.lam == pytest.approx(lam)
    assert est.estimate == pytest.approx(theta)
    assert est.interval is not None
    assert est.interval[0] == pytest.approx(theta - 1.959963984540054 * se)
    assert est.interval[1] == pytest.approx(min(1.0, theta + 1.959963984540054 * se))


def test_labels_without_confidence_count_with_lambda_zero() -> None:
    rng = np.random.default_rng(6)
    c = rng.uniform(0.5, 1.0, 40)
    y = rng.random(40) < c
    labels = [ControlLabel("v2", bool(a), float(b)) for a, b in zip(y, c, strict=True)]
    extra = [ControlLabel("v1", True, None), ControlLabel("v9", False, 0.7)]  # v9: no pool stats
    pools = {"v2": PoolConfidence(2000, 0.75, float(np.var(rng.uniform(0.5, 1.0, 2000))))}
    est = ppi_accuracy(labels + extra, pools)
    assert est.n == 42 and est.n_confidence == 40 and est.pool_n == 2000
    lam = est.lam
    z = np.concatenate([y - lam * (c - 0.75), [1.0, 0.0]])
    assert est.estimate == pytest.approx(float(z.mean()))


def test_two_versions_estimate_their_mix() -> None:
    # the pooled row: control labels of two versions with different accuracy, calibrated
    rng = np.random.default_rng(7)
    p1, p2 = _pool(rng, 5000) * 0.8, _pool(rng, 5000)
    pools = {
        "v1": PoolConfidence(5000, float(p1.mean()), float(p1.var())),
        "v2": PoolConfidence(5000, float(p2.mean()), float(p2.var())),
    }
    truth = (30 * p1.mean() + 70 * p2.mean()) / 100
    hits, errors = 0, []
    for _ in range(300):
        labels = []
        for name, p, n in (("v1", p1, 30), ("v2", p2, 70)):
            rows = rng.choice(len(p), size=n, replace=False)
            labels += [ControlLabel(name, bool(rng.random() < p[r]), float(p[r])) for r in rows]
        est = ppi_accuracy(labels, pools)
        assert est.estimate is not None and est.interval is not None
        errors.append(est.estimate - truth)
        hits += est.interval[0] <= truth <= est.interval[1]
    err = np.array(errors)
    assert abs(err.mean()) < 3 * err.std() / np.sqrt(len(err))
    assert hits / 300 >= 0.9


def test_bad_confidence_is_a_clear_error() -> None:
    labels = [ControlLabel("v1", True, 1.5)] * 12
    with pytest.raises(ValueError, match="confidence"):
        ppi_accuracy(labels, {"v1": PoolConfidence(100, 0.8, 0.01)})


def test_prelabel_confidence_in_blocks_on_a_real_head() -> None:
    from labelwheel.head import fit_codes, fit_head
    from labelwheel.pool.confidence import prelabel_confidence, summarise

    rng = np.random.default_rng(8)
    x = np.vstack([rng.normal(0, 1, (30, 5)), rng.normal(2, 1, (30, 5))]).astype(np.float32)
    y = np.repeat([0, 1], 30)
    head = fit_codes(x, y, 3)  # class 2 never seen: probability 0
    c = prelabel_confidence(head, x, block_rows=7)
    assert c == pytest.approx(head.predict_proba(x).max(axis=1))
    assert np.all((c >= 0.5) & (c <= 1.0))  # the max of two non-zero classes
    summary = summarise(c)
    assert (summary.n, summary.mean, summary.var) == (
        60,
        pytest.approx(c.mean()),
        pytest.approx(c.var()),
    )
    assert summarise(np.array([])) == PoolConfidence(0, 0.0, 0.0)

    sets = [("a", "b") if v else ("a",) for v in y]
    multi = fit_head(x, sets, ("a", "b"), True)
    p = multi.predict_proba(x)
    expected = np.prod(np.maximum(p, 1 - p), axis=1)
    assert prelabel_confidence(multi, x, block_rows=8192) == pytest.approx(expected)
    with pytest.raises(ValueError, match="block_rows"):
        prelabel_confidence(head, x, block_rows=0)
