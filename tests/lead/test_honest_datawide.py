"""The data-wide estimate (labelwheel.lead.honest.data_wide_accuracy) on synthetic projects
whose accuracy is known: the selector has taken the hard tasks out of the pool, so the control
slice alone (plain or PPI) overestimates the accuracy on the data; weighting in the labelled
share's cross-validated accuracy removes that bias."""

from __future__ import annotations

import numpy as np
import pytest

from labelwheel.lead.honest import (
    ControlLabel,
    LabelledPart,
    PoolConfidence,
    data_wide_accuracy,
    ppi_accuracy,
    wilson,
)


def _project(seed: int, size: int = 10_000, labelled: int = 1_500) -> tuple[np.ndarray, int]:
    """Per-task chance that the pre-label is right on the data, and how many of the hardest
    tasks the selector has labelled (the first ``labelled`` after sorting by that chance)."""
    rng = np.random.default_rng(seed)
    easy = rng.beta(12, 1.2, size=size)
    hard = rng.beta(2, 2, size=size)
    p = np.sort(np.where(rng.random(size) < 0.8, easy, hard))
    return p, labelled


def _slices(
    p: np.ndarray, n_labelled: int, n: int, draws: int, seed: int, with_confidence: bool
) -> tuple[list[float], list[float], list[tuple[float, float]], float]:
    """Control slices of ``n`` labels from the unlabelled part; returns the data-wide and the
    pool-only estimates, the data-wide intervals, and the truth (the mean over the data, the
    labelled share counted by its chance of being right: what cross-validation measures)."""
    rng = np.random.default_rng(seed)
    pool = p[n_labelled:]
    cv = float(p[:n_labelled].mean())
    truth = float(p.mean())
    pools = {"v3": PoolConfidence(len(pool), float(pool.mean()), float(pool.var()))}
    labelled = {"v3": LabelledPart(n_labelled, cv)}
    wide, alone, intervals = [], [], []
    for _ in range(draws):
        rows = rng.choice(len(pool), size=n, replace=False)
        ok = rng.random(n) < pool[rows]
        labels = [
            ControlLabel("v3", bool(y), float(c) if with_confidence else None)
            for y, c in zip(ok, pool[rows], strict=True)
        ]
        est = data_wide_accuracy(labels, pools, labelled)
        assert est.estimate is not None and est.interval is not None
        assert est.n == n and est.n_pool_only == 0
        wide.append(est.estimate)
        intervals.append(est.interval)
        alone_est = ppi_accuracy(labels, pools).estimate
        assert alone_est is not None
        alone.append(alone_est)
    return wide, alone, intervals, truth


@pytest.mark.parametrize("with_confidence", [True, False], ids=["ppi", "plain"])
def test_the_labelled_share_removes_the_easy_pool_bias(with_confidence: bool) -> None:
    p, n_labelled = _project(0)
    wide, alone, intervals, truth = _slices(p, n_labelled, 200, 500, 1, with_confidence)
    err_alone = np.array(alone) - truth
    err_wide = np.array(wide) - truth
    # the pool without its hardest 15 % is easier than the data, by far more than the noise
    assert err_alone.mean() > 0.05
    # data-wide: unbiased within 3 standard errors of the mean over 500 draws
    assert abs(err_wide.mean()) < 3 * err_wide.std() / np.sqrt(len(err_wide))
    coverage = np.mean([lo <= truth <= hi for lo, hi in intervals])
    assert 0.91 <= coverage <= 0.99
    # the labelled share is known exactly (cross-validation covers it): the error shrinks
    # with the unlabelled share's weight
    assert err_wide.std() < err_alone.std()


def test_plain_estimate_is_the_weighted_proportion_and_its_wilson_interval() -> None:
    labels = [ControlLabel("v2", i < 7, None) for i in range(10)]
    pools = {"v2": PoolConfidence(300, 0.9, 0.01)}
    est = data_wide_accuracy(labels, pools, {"v2": LabelledPart(100, 0.5)})
    w = 300 / 400
    assert est.method == "plain"
    assert est.estimate == pytest.approx(w * 0.7 + (1 - w) * 0.5)
    assert est.pool_estimate == pytest.approx(0.7)
    assert est.unlabelled_share == pytest.approx(w)
    assert est.labelled_accuracy == pytest.approx(0.5)
    lo, hi = wilson(7, 10) or (0.0, 1.0)
    assert est.interval == pytest.approx((w * lo + (1 - w) * 0.5, w * hi + (1 - w) * 0.5))


def test_each_version_weighs_with_its_own_shares() -> None:
    # two versions, one label each: the estimate is the mean of each label's own mix
    labels = [ControlLabel("v1", True, None), ControlLabel("v2", False, None)]
    pools = {"v1": PoolConfidence(90, 0.9, 0.0), "v2": PoolConfidence(50, 0.9, 0.0)}
    labelled = {"v1": LabelledPart(10, 0.4), "v2": LabelledPart(50, 0.6)}
    est = data_wide_accuracy(labels, pools, labelled)
    assert est.estimate == pytest.approx(((0.9 * 1 + 0.1 * 0.4) + (0.5 * 0 + 0.5 * 0.6)) / 2)


def test_versions_without_the_inputs_count_for_the_pool_alone_and_say_so() -> None:
    labels = [
        ControlLabel("v1", True, None),  # no CV accuracy for v1 (a class with one label)
        ControlLabel("v2", True, None),  # no pool statistics for v2
        ControlLabel("v3", False, None),
    ]
    pools = {"v1": PoolConfidence(100, 0.9, 0.01), "v3": PoolConfidence(100, 0.8, 0.02)}
    labelled = {
        "v1": LabelledPart(20, None),
        "v2": LabelledPart(20, 0.7),
        "v3": LabelledPart(100, 0.6),
    }
    est = data_wide_accuracy(labels, pools, labelled)
    assert (est.n, est.n_pool_only) == (3, 2)
    assert est.estimate == pytest.approx((1 + 1 + (0.5 * 0 + 0.5 * 0.6)) / 3)
    alone = data_wide_accuracy(labels[:2], pools, labelled)
    assert alone.estimate == pytest.approx(1.0) and alone.labelled_accuracy is None
    assert alone.interval == wilson(2, 2)
    assert data_wide_accuracy([], pools, labelled).estimate is None
