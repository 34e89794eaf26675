"""Active learning's lift over random picks from the control slice (labelwheel.lead.lift):
paired on held-out control labels, at equal labels per arm, with a clear reason when it cannot
be measured."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from labelwheel.datasets import load_embeddings
from labelwheel.lead.lift import LIFT_MIN_CONTROL, active_learning_lift, pool_lift


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    feats = load_embeddings("digits", backbone="raw")
    return feats.X.astype(np.float32), feats.y.astype(np.int64)


def _split(
    x: np.ndarray, y: np.ndarray, m: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``m`` random control labels and the rest of the set as candidates for selection."""
    rest_x, ctrl_x, rest_y, ctrl_y = train_test_split(x, y, test_size=m, random_state=seed)
    return ctrl_x, ctrl_y, rest_x, rest_y


def test_picks_from_three_classes_lose_to_random_picks(digits) -> None:
    x, y = digits
    cx, cy, rx, ry = _split(x, y, 80, 0)
    narrow = np.flatnonzero(ry < 3)  # a selector stuck on classes 0-2
    est = active_learning_lift(cx, cy, rx[narrow], ry[narrow], 10, pool=x, semi_supervised="none")
    assert est.lift is not None and est.interval is not None
    assert est.labels == 64 and est.n_control == 80 and est.folds == 5
    # the active arm can only be right on the ~30 % of random tasks of classes 0-2
    assert est.active_accuracy is not None and est.active_accuracy < 0.4
    assert est.random_accuracy is not None and est.random_accuracy > 0.8
    assert est.lift == pytest.approx(est.active_accuracy - est.random_accuracy)
    assert est.interval[1] < 0, est


def test_picks_like_random_ones_show_no_lift(digits) -> None:
    x, y = digits
    cx, cy, rx, ry = _split(x, y, 100, 1)
    est = active_learning_lift(cx, cy, rx, ry, 10, pool=x, semi_supervised="none")
    assert est.lift is not None and est.interval is not None
    # both arms are random draws of the same set: the interval holds 0, the lift is small
    assert est.interval[0] <= 0.0 <= est.interval[1], est
    assert abs(est.lift) < 0.08


def test_the_semi_supervised_head_is_the_default_and_runs(digits) -> None:
    x, y = digits
    cx, cy, rx, ry = _split(x, y, 30, 2)
    est = active_learning_lift(cx, cy, rx, ry, 10, pool=x)
    assert est.lift is not None and est.labels == 24 and est.reason == ""
    assert est.to_dict()["interval"] == list(est.interval or ())


def test_too_few_labels_say_why(digits) -> None:
    x, y = digits
    few = active_learning_lift(x[:10], y[:10], x[10:200], y[10:200], 10, semi_supervised="none")
    assert few.lift is None and f"at least {LIFT_MIN_CONTROL}" in few.reason
    short = active_learning_lift(x[:50], y[:50], x[50:60], y[50:60], 10, semi_supervised="none")
    assert short.lift is None and "10 labels on selected tasks" in short.reason
    one_class = np.flatnonzero(y == 3)[:60]
    flat = active_learning_lift(
        x[:40], y[:40], x[one_class], y[one_class], 10, semi_supervised="none"
    )
    assert flat.lift is None and "fewer than two classes" in flat.reason


def test_bad_arguments_are_clear_errors(digits) -> None:
    x, y = digits
    with pytest.raises(ValueError, match="folds"):
        active_learning_lift(x[:40], y[:40], x[40:], y[40:], 10, folds=1)
    with pytest.raises(ValueError, match="same number of rows"):
        active_learning_lift(x[:40], y[:39], x[40:], y[40:], 10)


def test_pool_lift_takes_the_recorded_order_and_labels(digits) -> None:
    from labelwheel.pool import Pool
    from labelwheel.records import LabelledTask

    x, y = digits
    names = [f"d{v}" for v in y]
    pool = Pool.from_arrays(x, [None] * len(y), classes=[f"d{i}" for i in range(10)])
    ids = pool.ids.tolist()
    rng = np.random.default_rng(5)
    picks = rng.permutation(len(y))[:120]
    control = set(picks[::3].tolist())  # every third label a random pick
    order = [LabelledTask(int(ids[p]), p in control, (names[p],)) for p in picks]
    order.append(LabelledTask(10**9, True, ("d1",)))  # a task the pool no longer has
    order.append(LabelledTask(int(ids[-1]), False, ("zz",)))  # a label not among the classes
    got = pool_lift(pool, order, seed=3)
    ctrl = [p for p in picks if p in control]
    sel = [p for p in picks if p not in control]
    want = active_learning_lift(x[ctrl], y[ctrl], x[sel], y[sel], 10, pool=x, seed=3)
    assert (got.n_control, got.n_selected) == (len(ctrl), len(sel)) == (40, 80)
    assert got.lift == pytest.approx(want.lift) and got.interval == want.interval
    multi = Pool.from_arrays(x, [None] * len(y), classes=["a", "b"])
    multi.multi_label = True
    assert "multi-label" in pool_lift(multi, order).reason
