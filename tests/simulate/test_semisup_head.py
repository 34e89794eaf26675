"""The semi-supervised head (labelwheel.semisup through labelwheel.head) on real digits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from labelwheel.datasets import load_embeddings
from labelwheel.head import (
    HeadConfig,
    LinearProbe,
    Scaling,
    cv_accuracy,
    fit_codes,
    fit_head,
    load_head,
    save_head,
    train_head,
)
from labelwheel.semisup import DEFAULT_SEMI, pool_graph, pseudo_labels, spread_labels
from labelwheel.simulate import run_simulation

SEMI = HeadConfig(semi_supervised="spreading")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    feats = load_embeddings("digits", backbone="raw")
    X_pool, X_test, y_pool, y_test = train_test_split(
        feats.X, feats.y, test_size=0.25, random_state=0, stratify=feats.y
    )
    return X_pool, y_pool, X_test, y_test


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[6.0, 0, 0, 0], [0, 6.0, 0, 0], [0, 0, 6.0, 0]])
    y = np.repeat(np.arange(3), 100)
    return (centres[y] + rng.normal(size=(300, 4))).astype(np.float32), y


def test_semi_head_beats_plain_head_with_few_labels(digits) -> None:
    X_pool, y_pool, X_test, y_test = digits
    scaling = Scaling.of(X_pool)
    plain, semi = [], []
    with threadpool_limits(1):
        for seed in range(3):
            idx = np.random.default_rng(seed).permutation(len(y_pool))[:20]
            x, y = X_pool[idx], y_pool[idx]
            plain.append(fit_codes(x, y, 10, scaling=scaling).accuracy(X_test, y_test))
            head = fit_codes(x, y, 10, config=SEMI, scaling=scaling, pool=X_pool)
            semi.append(head.accuracy(X_test, y_test))
    # measured (5 seeds, 20 random labels): plain 0.62, semi 0.74
    assert np.mean(semi) >= np.mean(plain) + 0.04, (plain, semi)


def test_without_a_pool_the_semi_config_is_the_plain_head(digits) -> None:
    X_pool, y_pool, X_test, _ = digits
    idx = np.arange(60)
    plain = fit_codes(X_pool[idx], y_pool[idx], 10)
    semi = fit_codes(X_pool[idx], y_pool[idx], 10, config=SEMI)
    np.testing.assert_allclose(plain.predict_proba(X_test), semi.predict_proba(X_test))


def test_the_pool_changes_the_head_only_when_semi_is_on(digits) -> None:
    X_pool, y_pool, X_test, _ = digits
    idx = np.arange(30)
    a = fit_codes(X_pool[idx], y_pool[idx], 10, pool=X_pool)
    b = fit_codes(X_pool[idx], y_pool[idx], 10)
    c = fit_codes(X_pool[idx], y_pool[idx], 10, config=SEMI, pool=X_pool)
    np.testing.assert_allclose(a.predict_proba(X_test), b.predict_proba(X_test))
    assert not np.allclose(c.predict_proba(X_test), b.predict_proba(X_test))


def test_a_semi_versions_cv_accuracy_cross_validates_the_semi_head(digits) -> None:
    # the data-wide real accuracy weighs in the CV accuracy as the version's own accuracy on
    # its labelled share: it must cross-validate the head the version is, not the plain probe
    X_pool, y_pool, _, _ = digits
    idx = np.random.default_rng(4).permutation(len(y_pool))[:40]
    x, y = X_pool[idx], y_pool[idx]
    sets = [[str(v)] for v in y]
    names = [str(i) for i in range(10)]
    scaling = Scaling.of(X_pool)
    with threadpool_limits(1):
        _, semi = train_head(x, sets, names, False, config=SEMI, scaling=scaling, pool=X_pool)
        _, plain = train_head(x, sets, names, False, scaling=scaling)
        by_hand = cv_accuracy(x, y, config=SEMI, scaling=scaling, pool=X_pool)
        plain_by_hand = cv_accuracy(x, y, scaling=scaling)
    assert semi["cv_accuracy"] == by_hand
    assert plain["cv_accuracy"] == plain_by_hand
    # 40 random labels on digits: spreading over the pool helps the held-out folds too
    assert semi["cv_accuracy"] > plain["cv_accuracy"] + 0.03, (semi, plain)


def test_temperature_is_fitted_on_real_labels_and_is_sane(digits) -> None:
    X_pool, y_pool, X_test, y_test = digits
    # 8 labels per class: calibration is on (>= 6 per class)
    idx = np.concatenate([np.flatnonzero(y_pool == c)[:8] for c in range(10)])
    head = fit_codes(X_pool[idx], y_pool[idx], 10, config=SEMI, pool=X_pool)
    assert head.calibrated
    probe = head.estimators[0]
    assert 0.05 < probe.temperature < 20
    # the calibrated confidence is close to the held-out accuracy (no wild over-confidence)
    conf = head.predict_proba(X_test).max(axis=1).mean()
    acc = head.accuracy(X_test, y_test)
    assert abs(conf - acc) < 0.12, (conf, acc)


def test_spreading_labels_blobs_from_one_label_each() -> None:
    x, y = _blobs()
    labelled = np.array([0, 100, 200])
    scores = spread_labels(pool_graph(x, 10), x[labelled], y[labelled], 3)
    assert scores.shape == (300, 3)
    assert np.mean(np.argmax(scores, axis=1) == y) > 0.97
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-9)


def test_pseudo_labels_are_balanced_per_class_and_agree_with_the_probe() -> None:
    x, y = _blobs()
    labelled = np.array([0, 1, 100, 200])  # class 0 has twice the labels

    def probe_says(pool: np.ndarray) -> np.ndarray:
        out = np.zeros((len(pool), 3))
        out[np.arange(len(pool)), y] = 1.0
        out[:10] = [0.0, 0.0, 1.0]  # the probe disagrees on 10 rows of class 0
        return out

    got = pseudo_labels("spreading", x, x[labelled], y[labelled], keep=0.5, predict=probe_says)
    counts = np.bincount(got.classes, minlength=3)
    assert counts.max() - counts.min() <= 6, counts  # half of each class, not of the pool
    assert not np.isin(np.arange(10), got.rows).any()  # disagreement: no pseudo-label
    assert np.all(got.classes == y[got.rows])
    assert np.all((got.confidence > 0) & (got.confidence <= 1))


def test_a_pool_over_the_graph_cap_is_spread_on_a_strided_subset(monkeypatch) -> None:
    """Past MAX_GRAPH_ROWS the graph is built on every k-th row (the kNN search is O(N²));
    the pseudo-labels name rows of the whole pool, of that subset, with their true classes."""
    import labelwheel.semisup as semisup

    x, y = _blobs()
    monkeypatch.setattr(semisup, "MAX_GRAPH_ROWS", 100)
    labelled = np.array([0, 100, 200])
    got = pseudo_labels("spreading", x, x[labelled], y[labelled], keep=1.0)
    assert got.rows.size > 60  # most of the 100 subset rows
    assert np.all(got.rows % 3 == 0)  # 300 rows, cap 100: every 3rd row
    assert np.all(got.classes == y[got.rows])


def test_pool_graph_is_sparse_and_cached() -> None:
    x, _ = _blobs()
    g = pool_graph(x, 10)
    assert g.S.shape == (300, 300)
    assert g.S.nnz <= 2 * 300 * 10
    assert pool_graph(x.copy(), 10) is g  # same content: built once
    assert pool_graph(x + 1.0, 10) is not g


@pytest.mark.parametrize(
    "kwargs",
    [
        {"semi_supervised": "magic"},
        {"pseudo_weight": 0.0},
        {"pseudo_keep": 1.5},
    ],
)
def test_bad_semi_config_is_a_clear_error(kwargs) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        HeadConfig(**kwargs)


def test_semi_head_pickles_and_multilabel_works(tmp_path, digits) -> None:
    X_pool, y_pool, X_test, _ = digits
    idx = np.arange(40)
    sets = [["even" if v % 2 == 0 else "odd"] + (["big"] if v >= 5 else []) for v in y_pool[idx]]
    head, metrics = train_head(
        X_pool[idx], sets, ["even", "odd", "big"], True, config=SEMI, pool=X_pool
    )
    assert metrics["semi_supervised"] == "spreading"
    save_head(head, tmp_path / "h.pkl")
    again = load_head(tmp_path / "h.pkl")
    np.testing.assert_allclose(again.predict_proba(X_test), head.predict_proba(X_test))
    single = fit_head(X_pool[idx], [[str(v)] for v in y_pool[idx]], list("0123456789"), False)
    assert isinstance(single.estimators[0], LinearProbe)


def test_simulator_runs_the_semi_head_and_records_it(digits) -> None:
    X_pool, y_pool, X_test, y_test = digits
    res = run_simulation(
        X_pool, y_pool, X_test, y_test, ["random"], budget=20, seeds=2, semi_supervised="spreading"
    )
    assert res.meta["semi_supervised"] == "spreading"
    default = run_simulation(X_pool, y_pool, X_test, y_test, ["random"], budget=20, seeds=2)
    assert default.meta["semi_supervised"] == DEFAULT_SEMI == "spreading"  # the product's head
    np.testing.assert_array_equal(default.accuracy["random"], res.accuracy["random"])
    plain = run_simulation(
        X_pool, y_pool, X_test, y_test, ["random"], budget=20, seeds=2, semi_supervised="none"
    )
    # same picks (random, same seeds), the semi head is better at 20 labels
    assert res.picks["random"] == plain.picks["random"]
    assert res.accuracy["random"][:, -1].mean() > plain.accuracy["random"][:, -1].mean()
    with pytest.raises(ValueError, match="semi_supervised"):
        run_simulation(
            X_pool, y_pool, X_test, y_test, ["random"], budget=10, seeds=1, semi_supervised="bogus"
        )


def test_backend_training_process_fits_the_same_semi_head_as_the_simulator(digits) -> None:
    from labelwheel.ml_backend.training import FitProcess

    X_pool, y_pool, X_test, y_test = digits
    res = run_simulation(
        X_pool, y_pool, X_test, y_test, ["margin"], budget=30, seeds=[4],
        semi_supervised="spreading",
    )  # fmt: skip
    picked = res.picks["margin"][0]
    labels = tuple(str(c) for c in range(10))
    sets = [[str(int(y_pool[i]))] for i in picked]
    fit = FitProcess()
    try:
        head, metrics = fit.fit(
            X_pool[picked], sets, labels, False, Scaling.of(X_pool),
            semi_supervised="spreading", pool=X_pool,
        )  # fmt: skip
    finally:
        fit.close()
    assert metrics["semi_supervised"] == "spreading"
    assert head.accuracy(X_test, y_test) == float(res.accuracy["margin"][0, -1])


def test_backend_setting_names_the_variable_on_a_bad_mode(tmp_path) -> None:
    from labelwheel.ml_backend.config import ConfigError, Settings

    base = {"MODEL_DIR": str(tmp_path)}
    assert Settings.from_env(base).head_semi == DEFAULT_SEMI == "spreading"
    assert Settings.from_env({**base, "LABELWHEEL_HEAD_SEMI": " None "}).head_semi == "none"
    with pytest.raises(ConfigError, match="LABELWHEEL_HEAD_SEMI"):
        Settings.from_env({**base, "LABELWHEEL_HEAD_SEMI": "magic"})
