"""The honest measure (labelwheel.lead.honest) on known counts, and its query on a real record."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from labelwheel.lead.honest import (
    estimate_versions,
    honest_estimate,
    lift_interval,
    pooled_estimate,
    wilson,
)
from labelwheel.records import BackendRecord, read_control_feedback


def test_wilson_known_values() -> None:
    lo, hi = wilson(8, 10) or (0, 0)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson(0, 20) or (0, 0)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    assert wilson(0, 0) is None
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_newcombe_difference_known_values() -> None:
    # Newcombe (1998), example (b): 56/70 - 48/80 = 0.2, 95% CI 0.0524 to 0.3339 (method 10)
    lo, hi = lift_interval(56, 70, 48, 80) or (0, 0)
    assert lo == pytest.approx(0.0524, abs=1e-4) and hi == pytest.approx(0.3339, abs=1e-4)
    assert lift_interval(1, 1, 0, 0) is None


def test_estimate_and_lift() -> None:
    est = honest_estimate("v2", control=(18, 2), selected=(60, 40))
    assert est.control_n == 20 and est.real_accuracy == pytest.approx(0.9)
    assert est.selected_accuracy == pytest.approx(0.6)
    assert est.lift == pytest.approx(0.3)
    assert est.real_interval is not None and est.real_interval[0] < 0.9 < est.real_interval[1]
    assert est.lift_interval is not None and 0 < est.lift_interval[0] < 0.3 < est.lift_interval[1]
    d = est.to_dict()
    assert d["real_interval"] == list(est.real_interval) and d["version"] == "v2"
    empty = honest_estimate("v1", (0, 0), (3, 1))
    assert empty.real_accuracy is None and empty.lift is None and empty.lift_interval is None


def test_more_control_labels_narrow_the_interval() -> None:
    widths = []
    for n in (20, 80, 320):
        iv = honest_estimate("v1", (int(n * 0.9), n - int(n * 0.9)), (0, 0)).real_interval
        assert iv is not None
        widths.append(iv[1] - iv[0])
    assert widths[0] > widths[1] > widths[2]


def test_versions_in_order() -> None:
    counts = {
        "v10": {"control": {"approval": 1, "correction": 0}},
        "v2": {"selected": {"approval": 1, "correction": 1}},
        "cold": {},
    }
    assert [e.version for e in estimate_versions(counts)] == ["v2", "v10", "cold"]


def _db(path: Path, with_control: bool) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE annotations (id INTEGER PRIMARY KEY, task_id INTEGER, project_id INTEGER,"
        " feedback TEXT, prediction_version TEXT, deleted INTEGER)"
    )
    rows = [
        (1, 10, 1, "approval", "v1", 0),  # control of v1
        (2, 11, 1, "correction", "v1", 0),  # control of v1
        (3, 12, 1, "correction", "v1", 0),  # selected
        (4, 11, 1, "approval", "v2", 0),  # control of v1 only, annotated on v2: selected
        (5, 13, 1, "approval", "v1", 1),  # deleted
        (6, 10, 2, "approval", "v1", 0),  # other project
    ]
    conn.executemany("INSERT INTO annotations VALUES (?, ?, ?, ?, ?, ?)", rows)
    if with_control:
        conn.execute(
            "CREATE TABLE control_tasks (project_id INTEGER, version TEXT, task_id INTEGER,"
            " created REAL)"
        )
        conn.executemany("INSERT INTO control_tasks VALUES (1, 'v1', ?, 0)", [(10,), (11,), (13,)])
    conn.commit()
    conn.close()


def test_control_feedback_query_on_a_read_only_record(tmp_path: Path) -> None:
    _db(tmp_path / "a.sqlite3", with_control=True)
    rec = BackendRecord(tmp_path / "a.sqlite3")
    try:
        got = rec.control_feedback(1)
    finally:
        rec.close()
    assert got["v1"]["control"] == {"approval": 1, "correction": 1}
    assert got["v1"]["selected"] == {"approval": 0, "correction": 1}
    assert got["v2"]["selected"] == {"approval": 1, "correction": 0}
    assert got["v2"]["control"] == {"approval": 0, "correction": 0}


def test_control_feedback_without_the_table(tmp_path: Path) -> None:
    _db(tmp_path / "b.sqlite3", with_control=False)
    conn = sqlite3.connect(tmp_path / "b.sqlite3")
    try:
        got = read_control_feedback(lambda sql, p: conn.execute(sql, p).fetchall(), 1)
    finally:
        conn.close()
    assert got["v1"]["control"] == {"approval": 0, "correction": 0}
    assert got["v1"]["selected"] == {"approval": 1, "correction": 2}


def test_pooled_row_sums_the_versions() -> None:
    rows = estimate_versions(
        {
            "v1": {"control": {"approval": 1, "correction": 1}, "selected": {"approval": 2}},
            "v2": {"control": {"approval": 3, "correction": 0}, "selected": {"correction": 4}},
        }
    )
    pooled = pooled_estimate(rows)
    assert pooled.version == "all versions"
    assert (pooled.control_n, pooled.control_correct) == (5, 4)
    assert (pooled.selected_n, pooled.selected_correct) == (6, 2)
    assert pooled.real_accuracy == pytest.approx(0.8)
    assert pooled.lift == pytest.approx(0.8 - 2 / 6)
