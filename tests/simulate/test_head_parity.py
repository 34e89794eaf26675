"""The simulator, the data-lead tools and the backend train and predict through one head.

The simulator's accuracy at N labels must be exactly what the backend's own training path (its
``Model.fit``, in its separate training process) gives on the same labels, and the lead tools'
probabilities exactly the backend head's: otherwise the simulator's figures promise nothing
about the product.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from labelwheel.head import Scaling
from labelwheel.lead.plan import fit_probabilities
from labelwheel.simulate import run_simulation


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = load_digits()
    x = d.data.astype(np.float32)
    return tuple(train_test_split(x, d.target, test_size=0.25, random_state=0, stratify=d.target))


@pytest.fixture
def backend_model(tmp_path: Path):
    from labelwheel.ml_backend.config import Settings
    from labelwheel.ml_backend.link import LabelStudioLink
    from labelwheel.ml_backend.model import Model
    from labelwheel.ml_backend.store import Store

    settings = Settings.from_env({}, {"MODEL_DIR": str(tmp_path)})
    store = Store(settings.model_dir)
    model = Model(settings, store, LabelStudioLink(settings))
    yield model
    model.close()
    store.close()


@pytest.mark.parametrize("strategy,budget", [("random", 80), ("margin", 40)])
def test_simulator_accuracy_equals_backend_head(split, backend_model, strategy, budget) -> None:
    x_pool, x_test, y_pool, y_test = split
    results = run_simulation(
        x_pool, y_pool, x_test, y_test, [strategy], budget=budget, batch_size=20, seeds=[3]
    )
    picked = results.picks[strategy][0]
    assert len(picked) == budget == len(set(picked))
    simulated = float(results.accuracy[strategy][0, -1])

    labels = tuple(str(c) for c in range(10))
    label_sets = [[str(int(y_pool[i]))] for i in picked]
    head, metrics = backend_model.fit(
        x_pool[picked], label_sets, labels, False, Scaling.of(x_pool), x_pool
    )
    served = head.accuracy(x_test, y_test)
    assert served == simulated
    assert metrics["n_labels"] == budget
    assert metrics["semi_supervised"] == "spreading"  # the default of all three
    assert 0.3 < served <= 1.0  # a real model, not a constant

    # The lead tools' probabilities are the backend head's, to the last bit.
    lead = fit_probabilities(x_pool[picked], y_pool[picked], x_pool, 10)
    assert lead is not None
    np.testing.assert_allclose(lead, head.predict_proba(x_pool), rtol=0, atol=1e-12)


def test_backend_head_differs_from_a_mismatched_one(split, backend_model) -> None:
    """The parity above is not vacuous: another standardisation gives another accuracy."""
    x_pool, x_test, y_pool, _ = split
    picked = list(range(0, 300, 7))
    labels = tuple(str(c) for c in range(10))
    label_sets = [[str(int(y_pool[i]))] for i in picked]
    pooled, _ = backend_model.fit(x_pool[picked], label_sets, labels, False, Scaling.of(x_pool))
    alone, _ = backend_model.fit(x_pool[picked], label_sets, labels, False, None)
    assert not np.allclose(pooled.predict_proba(x_test), alone.predict_proba(x_test))


@pytest.fixture
def semi_backend_model(tmp_path: Path):
    from labelwheel.ml_backend.config import Settings
    from labelwheel.ml_backend.link import LabelStudioLink
    from labelwheel.ml_backend.model import Model
    from labelwheel.ml_backend.store import Store

    env = {"MODEL_DIR": str(tmp_path), "LABELWHEEL_HEAD_SEMI": "spreading"}
    settings = Settings.from_env({}, env)
    store = Store(settings.model_dir)
    model = Model(settings, store, LabelStudioLink(settings))
    yield model
    model.close()
    store.close()


def test_semi_supervised_simulator_equals_backend_head(split, semi_backend_model, tmp_path) -> None:
    """With the semi-supervised head, the backend's training process reads the pool from the
    ``.npy`` file a ranking saves (memory-mapped) and fits exactly the simulator's head."""
    x_pool, x_test, y_pool, y_test = split
    budget = 40
    results = run_simulation(
        x_pool,
        y_pool,
        x_test,
        y_test,
        ["margin"],
        budget=budget,
        batch_size=20,
        seeds=[3],
        semi_supervised="spreading",
    )
    picked = results.picks["margin"][0]
    simulated = float(results.accuracy["margin"][0, -1])
    labels = tuple(str(c) for c in range(10))
    label_sets = [[str(int(y_pool[i]))] for i in picked]
    pool_file = tmp_path / "pool.npy"
    np.save(pool_file, x_pool)
    head, metrics = semi_backend_model.fit(
        x_pool[picked], label_sets, labels, False, Scaling.of(x_pool), pool_file
    )
    assert metrics["semi_supervised"] == "spreading"
    assert "semi_supervised_skipped" not in metrics
    assert head.accuracy(x_test, y_test) == simulated

    plain, plain_metrics = semi_backend_model.fit(
        x_pool[picked], label_sets, labels, False, Scaling.of(x_pool), None
    )
    assert plain_metrics["semi_supervised"] == "none"
    assert "not been ranked" in plain_metrics["semi_supervised_skipped"]
    assert not np.allclose(plain.predict_proba(x_test), head.predict_proba(x_test))

    pool_file.write_bytes(b"not an array")  # a damaged pool file: the plain head, said so
    _, damaged = semi_backend_model.fit(
        x_pool[picked], label_sets, labels, False, Scaling.of(x_pool), pool_file
    )
    assert damaged["semi_supervised"] == "none"
    assert "cannot be read" in damaged["semi_supervised_skipped"]
