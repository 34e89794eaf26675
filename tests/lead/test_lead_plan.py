"""Budget plans on real digits: picks, reasons, bits, cost, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labelwheel.lead.plan import make_plan, view_payload
from labelwheel.pool import Pool


def _pool(digits, labelled_classes=range(5), per_class=10, n=600) -> Pool:
    x, y = digits
    x, y = x[:n], y[:n]
    labels: list[str | None] = [None] * n
    for c in labelled_classes:
        for i in np.flatnonzero(y == c)[:per_class]:
            labels[i] = str(c)
    return Pool.from_arrays(
        x, labels, ids=np.arange(1001, 1001 + n), classes=[str(c) for c in range(10)]
    )


def test_plan_picks_unlabelled_tasks_most_informative_first(digits) -> None:
    pool = _pool(digits)
    plan = make_plan(pool, 25, strategy="margin", cost_per_label=0.4)
    assert len(plan.picks) == 25 and plan.budget == 25
    ids = [p.task_id for p in plan.picks]
    assert len(set(ids)) == 25
    labelled_ids = set(pool.ids[pool.labeled_mask].tolist())
    assert not set(ids) & labelled_ids
    assert [p.rank for p in plan.picks] == list(range(1, 26))
    utilities = [p.utility for p in plan.picks]
    assert utilities == sorted(utilities, reverse=True)  # margin: most uncertain first
    assert all(0.0 <= p.bits <= math.log2(10) + 1e-9 for p in plan.picks)
    assert plan.total_cost == pytest.approx(10.0)
    assert all(p.cost == 0.4 for p in plan.picks)
    assert {p.reason for p in plan.picks} <= {"anomaly", "uncovered cluster", "uncertain"}
    assert plan.model_trained
    assert plan.view_title == "labelwheel: next 25"


def test_uncovered_clusters_are_named(digits) -> None:
    # Only classes 0-4 labelled: a diversity strategy picks from the unlabelled half and says so.
    pool = _pool(digits)
    plan = make_plan(pool, 30, strategy="kcenter")
    reasons = [p.reason for p in plan.picks]
    assert reasons.count("uncovered cluster") >= 5


def test_cold_start_falls_back_and_uses_max_bits(digits) -> None:
    pool = _pool(digits, labelled_classes=[])
    plan = make_plan(pool, 5, strategy="entropy")
    assert not plan.model_trained
    assert plan.strategy != "entropy" and any("needs a model" in n for n in plan.notes)
    assert all(p.bits == pytest.approx(math.log2(10)) for p in plan.picks)


@pytest.mark.parametrize(
    ("budget", "match"),
    [(0, "positive"), (-3, "positive"), (10_000, "larger than the unlabelled pool")],
)
def test_bad_budgets(digits, budget: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_plan(_pool(digits), budget, strategy="margin")


def test_unknown_strategy_and_bad_cost(digits) -> None:
    pool = _pool(digits)
    with pytest.raises(ValueError, match="unknown strategy"):
        make_plan(pool, 3, strategy="psychic")
    with pytest.raises(ValueError, match="cost"):
        make_plan(pool, 3, strategy="margin", cost_per_label=-1)


def test_all_labelled_pool_has_nothing_to_plan() -> None:
    pool = Pool.from_arrays(np.eye(4), ["a", "b", "a", "b"])
    with pytest.raises(ValueError, match="already labelled"):
        make_plan(pool, 1, strategy="random")


def test_view_payload_filters_exactly_the_picks_in_rank_order(digits) -> None:
    plan = make_plan(_pool(digits), 4, strategy="margin")
    payload = view_payload(7, plan)
    data = payload["data"]
    assert payload["project"] == 7 and data["title"] == "labelwheel: next 4"
    assert [f["value"] for f in data["filters"]["items"]] == [p.task_id for p in plan.picks]
    assert data["filters"]["conjunction"] == "or"
    assert data["ordering"] == ["tasks:data.labelwheel_rank"]
