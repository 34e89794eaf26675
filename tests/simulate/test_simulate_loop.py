"""The simulation loop, its classifier and labels_to_reach, on real digits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from labelwheel.datasets import load_embeddings
from labelwheel.simulate import Classifier, RoundState, labels_to_reach, run_simulation


@pytest.fixture(scope="module")
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    feats = load_embeddings("digits", backbone="raw")
    X_pool, X_test, y_pool, y_test = train_test_split(
        feats.X, feats.y, test_size=0.25, random_state=0, stratify=feats.y
    )
    return X_pool, y_pool, X_test, y_test


# ---------------------------------------------------------------- labels_to_reach


@pytest.mark.parametrize(
    ("accuracy", "target", "expected"),
    [
        ([0.5, 0.8, 0.9], 0.8, 20),  # reaching exactly counts
        ([0.5, 0.8, 0.9], 0.85, 30),
        ([0.5, 0.8, 0.9], 0.4, 10),
        ([0.5, 0.8, 0.9], 0.95, None),  # never reached
        ([0.9, 0.5, 0.9], 0.85, 10),  # the first crossing, even if it dips later
    ],
)
def test_labels_to_reach_known_answers(
    accuracy: list[float], target: float, expected: int | None
) -> None:
    assert labels_to_reach(([10, 20, 30], accuracy), target) == expected


def test_labels_to_reach_rejects_bad_curves() -> None:
    with pytest.raises(ValueError, match="same length"):
        labels_to_reach(([10, 20], [0.5]), 0.5)
    with pytest.raises(ValueError, match="increasing"):
        labels_to_reach(([20, 10], [0.5, 0.6]), 0.5)


# ---------------------------------------------------------------- classifier


def test_classifier_with_one_class_predicts_it_with_uniform_probabilities() -> None:
    X = np.arange(12, dtype=float).reshape(6, 2)
    model = Classifier(n_classes=3).fit(X[:2], np.array([2, 2]))
    assert not model.is_fitted
    np.testing.assert_array_equal(model.predict(X), [2] * 6)
    np.testing.assert_allclose(model.predict_proba(X), 1 / 3)


def test_classifier_fills_unseen_classes_with_near_zero_columns() -> None:
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-3, 1, (20, 2)), rng.normal(3, 1, (20, 2))])
    y = np.repeat([0, 2], 20)
    model = Classifier(n_classes=4).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (40, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1)
    assert proba[:, [1, 3]].max() < 1e-9
    assert model.score(X, y) > 0.95


# ---------------------------------------------------------------- the loop


def _first_unlabelled(n: int, state: RoundState) -> np.ndarray:
    return np.flatnonzero(~state.labeled)[:n]


def test_curve_points_and_custom_picker(digits_split) -> None:
    X_pool, y_pool, X_test, y_test = digits_split
    seen: list[tuple[int, int]] = []

    def picker(n: int, state: RoundState) -> np.ndarray:
        seen.append((n, int(state.labeled.sum())))
        assert state.probabilities.shape == (len(y_pool), 10)
        assert (state.y[~state.labeled] == -1).all()  # unrevealed labels stay hidden
        return _first_unlabelled(n, state)

    res = run_simulation(
        X_pool, y_pool, X_test, y_test, {"first": picker}, budget=25, batch_size=10, seeds=[3]
    )
    np.testing.assert_array_equal(res.labels, [10, 20, 25])
    assert seen == [(10, 0), (10, 10), (5, 20)]
    assert res.accuracy["first"].shape == (1, 3)
    assert 0.9 < res.full_accuracy <= 1.0
    assert res.seeds == [3]


def test_bald_committee_is_a_stratified_bootstrap(digits_split) -> None:
    X_pool, y_pool, X_test, y_test = digits_split
    shapes = []

    def picker(n: int, state: RoundState) -> np.ndarray:
        if state.labeled.sum() >= 20:
            committee = state.committee_probabilities()
            shapes.append(committee.shape)
            # members were fitted on different resamples, so they disagree somewhere
            assert np.abs(committee[0] - committee[1]).max() > 1e-3
            np.testing.assert_allclose(committee.sum(axis=2), 1)
        return _first_unlabelled(n, state)

    run_simulation(X_pool, y_pool, X_test, y_test, {"p": picker}, 30, 10, [0], committee_size=4)
    assert shapes == [(4, len(y_pool), 10)]


def test_same_seed_same_curve(digits_split) -> None:
    X_pool, y_pool, X_test, y_test = digits_split
    a = run_simulation(X_pool, y_pool, X_test, y_test, ["random"], 40, 10, [5])
    b = run_simulation(X_pool, y_pool, X_test, y_test, ["random"], 40, 10, [5])
    c = run_simulation(X_pool, y_pool, X_test, y_test, ["random"], 40, 10, [6])
    np.testing.assert_array_equal(a.accuracy["random"], b.accuracy["random"])
    assert not np.array_equal(a.accuracy["random"], c.accuracy["random"])


def test_margin_beats_random_on_real_digits(digits_split) -> None:
    """Mean accuracy between 50 and 200 labels: margin clearly ahead of random.

    Measured over 20 seeds (raw pixels, batch 10): margin leads by 0.011 to 0.084 per seed
    (mean 0.038, std 0.016); the mean over any 4 consecutive seeds was at least 0.026. The
    assertion asks for 0.015 on average over seeds 0-3 and a lead in at least 3 of the 4.
    """
    X_pool, y_pool, X_test, y_test = digits_split
    res = run_simulation(
        X_pool, y_pool, X_test, y_test, ["random", "margin"], budget=200, batch_size=10, seeds=4
    )
    window = (res.labels >= 50) & (res.labels <= 200)
    lead = res.accuracy["margin"][:, window].mean(axis=1) - res.accuracy["random"][:, window].mean(
        axis=1
    )
    assert lead.mean() > 0.015, lead
    assert (lead > 0).sum() >= 3, lead


def test_summary_reports_labels_to_target_and_ratio(digits_split) -> None:
    X_pool, y_pool, X_test, y_test = digits_split
    res = run_simulation(X_pool, y_pool, X_test, y_test, ["random", "margin"], 300, 30, 2)
    rows = {r["strategy"]: r for r in res.summary()}
    for name in ("random", "margin"):
        needed = res.labels_needed(name)
        assert len(needed) == 2
        if rows[name]["seeds_reached"] == 2:
            assert rows[name]["labels_mean"] == pytest.approx(np.mean(needed))
    assert rows["random"]["ratio_to_random"] == pytest.approx(1.0)
    text = res.format_summary()
    assert "margin" in text and "full-data accuracy" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": 5000}, "exceeds the pool"),
        ({"budget": 0}, "budget"),
        ({"batch_size": 0}, "batch_size"),
        ({"seeds": []}, "at least one seed"),
        ({"strategies": ["nope"]}, "unknown strategy 'nope'"),
        ({"strategies": {"x": 3}}, "selector name or a callable"),
    ],
)
def test_bad_arguments_are_value_errors(digits_split, kwargs: dict, message: str) -> None:
    X_pool, y_pool, X_test, y_test = digits_split
    args = {"strategies": ["random"], "budget": 20, "batch_size": 10, "seeds": 1} | kwargs
    with pytest.raises(ValueError, match=message):
        run_simulation(X_pool, y_pool, X_test, y_test, **args)


def test_bad_data_is_a_value_error(digits_split) -> None:
    X_pool, y_pool, X_test, y_test = digits_split
    broken = X_pool.copy()
    broken[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        run_simulation(broken, y_pool, X_test, y_test, ["random"], 20)
    with pytest.raises(ValueError, match="same number of columns"):
        run_simulation(X_pool, y_pool, X_test[:, :10], y_test, ["random"], 20)
    with pytest.raises(ValueError, match="one label per row"):
        run_simulation(X_pool, y_pool[:-1], X_test, y_test, ["random"], 20)


def test_a_picker_that_breaks_the_contract_is_caught(digits_split) -> None:
    X_pool, y_pool, X_test, y_test = digits_split

    def repeats(n: int, state: RoundState) -> np.ndarray:
        return np.zeros(n, dtype=np.int64)

    with pytest.raises(RuntimeError, match="duplicate"):
        run_simulation(X_pool, y_pool, X_test, y_test, {"bad": repeats}, 20, 10, 1)
