"""The random control slice of the queue (labelwheel.pool.control): pure functions."""

from __future__ import annotations

import numpy as np
import pytest

from labelwheel.pool.control import control_seed, control_share, interleave_control


def test_off_at_zero_keeps_the_queue() -> None:
    order = list(range(50))[::-1]
    out = interleave_control(order, 0.0, seed="1:v1")
    assert out.order == order and out.control == []


def test_about_the_fraction_evenly_spread_and_a_permutation() -> None:
    n = 4000
    order = list(range(n))[::-1]  # the selector's order: last rows first
    keys = [10_000 + i for i in range(n)]
    out = interleave_control(order, 0.05, seed=control_seed(7, "v3"), keys=keys)
    assert sorted(out.order) == list(range(n))
    assert 150 <= len(out.control) <= 250  # binomial(4000, 0.05): 200 +- 3.5 sd
    control = set(out.control)
    positions = [p for p, row in enumerate(out.order) if row in control]
    # every 20th position of the head is a control row, from a random start in 0..19
    start = positions[0]
    assert 0 <= start < 20
    assert positions[:10] == [start + 20 * j for j in range(10)]
    head = out.order[:400]
    assert sum(r in control for r in head) == 20
    # the selected rows keep the selector's relative order
    selected = [r for r in out.order if r not in control]
    assert selected == [r for r in order if r not in control]
    # the control rows are not the selector's favourites: spread over the whole pool
    ranks = np.array([order.index(r) for r in out.control])
    assert ranks.min() < n * 0.1 and ranks.max() > n * 0.9
    assert abs(float(np.median(ranks)) - n / 2) < n * 0.15


def test_deterministic_per_seed_and_stable_per_task() -> None:
    n = 1000
    keys = list(range(5000, 5000 + n))
    a = interleave_control(list(range(n)), 0.1, seed="3:v2", keys=keys)
    b = interleave_control(list(range(n)), 0.1, seed="3:v2", keys=keys)
    c = interleave_control(list(range(n)), 0.1, seed="3:v3", keys=keys)
    assert a == b
    assert set(a.control) != set(c.control)  # a new version draws a new slice
    # the same task stays a control task when the pool changes (rows removed, reordered)
    keep = list(range(0, n, 2))
    sub = interleave_control(
        list(range(len(keep)))[::-1], 0.1, seed="3:v2", keys=[keys[i] for i in keep]
    )
    assert {keep[r] for r in sub.control} == {r for r in a.control if r % 2 == 0}


def test_share_is_uniform() -> None:
    shares = np.array([control_share("9:v1", k) for k in range(20_000)])
    assert 0.0 <= shares.min() and shares.max() < 1.0
    hist, _ = np.histogram(shares, bins=10, range=(0, 1))
    assert hist.min() > 1800 and hist.max() < 2200


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="fraction"):
        interleave_control([0, 1], 1.0, seed=1)
    with pytest.raises(ValueError, match="exactly once"):
        interleave_control([0, 0], 0.1, seed=1)
    with pytest.raises(ValueError, match="keys"):
        interleave_control([0, 1], 0.1, seed=1, keys=[1])
    assert interleave_control([], 0.5, seed=1).order == []


def test_small_pool_more_controls_than_slots() -> None:
    out = interleave_control(list(range(6)), 0.45, seed="x", keys=list(range(6)))
    assert sorted(out.order) == list(range(6))


def test_each_head_position_is_a_control_one_with_the_fraction() -> None:
    # the queue is ranked again after every batch: over versions, the first 10 positions must
    # serve about fraction * 10 control rows, not none (a slot fixed at 19 would never be served)
    n, served = 500, 0
    versions = 400
    for v in range(versions):
        out = interleave_control(list(range(n)), 0.05, seed=control_seed(1, f"v{v}"))
        control = set(out.control)
        served += sum(r in control for r in out.order[:10])
    assert 0.03 < served / (10 * versions) < 0.07
