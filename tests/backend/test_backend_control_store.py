"""The PPI and data-wide inputs in the backend's store: a database of the release before them
(control tasks without a confidence, no pool statistics) keeps working, is migrated on open,
and reads back through the read-only record as the estimates need it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from labelwheel.lead.honest import estimate_versions, pooled_estimate
from labelwheel.ml_backend.store import Store
from labelwheel.records import (
    DB_FILENAME,
    BackendRecord,
    ControlConfidence,
    ControlFeedback,
    ControlLabel,
    LabelledPart,
    LabelledTask,
    PoolConfidence,
)

OLD_CONTROL_TABLE = """
CREATE TABLE control_tasks (
    project_id INTEGER NOT NULL,
    version TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (project_id, version, task_id)
);
INSERT INTO control_tasks VALUES (1, 'v1', 10, 0), (1, 'v1', 11, 0);
"""


def _annotate(store: Store, ann_id: int, task_id: int, feedback: str, version: str) -> None:
    store.apply_annotation(
        annotation_id=ann_id,
        task_id=task_id,
        project_id=1,
        labels=["a"],
        image_ref=None,
        was_cancelled=False,
        feedback=feedback,
        prediction_version=version,
        action="ANNOTATION_CREATED",
        payload=None,
    )


def _read_record(path: Path) -> tuple[ControlConfidence, ControlFeedback]:
    """Project 1's control confidences and feedback through the read-only record."""
    rec = BackendRecord(path / DB_FILENAME)
    try:
        return rec.control_confidence(1), rec.control_feedback(1)
    finally:
        rec.close()


def test_old_database_is_migrated_and_reads_without_confidences(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.executescript(OLD_CONTROL_TABLE)
    conn.close()
    # the read-only record of the old database: labels without confidence, no pools
    store = Store(tmp_path)
    columns = {r[1] for r in store.query("PRAGMA table_info(control_tasks)", ())}
    assert "confidence" in columns
    assert store.query("SELECT COUNT(*) FROM control_pools", ())[0][0] == 0
    _annotate(store, 1, 10, "approval", "v1")
    _annotate(store, 2, 11, "correction", "v1")
    _annotate(store, 3, 12, "approval", "v1")  # not a control task
    got = store.control_confidence(1)
    assert got.labels == [ControlLabel("v1", True, None), ControlLabel("v1", False, None)]
    assert got.pools == {}
    # old rows keep their place and get a confidence when the version ranks again; a
    # confidence once recorded stays; new tasks count as new
    assert store.record_control_tasks(1, "v1", [10, 11, 13], {10: 0.9, 13: 0.4}) == 1
    assert store.record_control_tasks(1, "v1", [10, 11], {10: 0.1, 11: 0.6}) == 0
    store.record_control_pool(1, "v1", PoolConfidence(500, 0.8, 0.02))
    store.record_control_pool(
        1, "v1", PoolConfidence(480, 0.82, 0.019)
    )  # the last ranking's pool stands
    rows = dict(store.query("SELECT task_id, confidence FROM control_tasks", ()))
    assert rows == {10: 0.9, 11: 0.6, 13: 0.4}
    assert store.control_task_ids(1, "v1") == {10, 11, 13}
    store.close()

    got, counts = _read_record(tmp_path)
    assert got.labels == [ControlLabel("v1", True, 0.9), ControlLabel("v1", False, 0.6)]
    assert got.pools == {"v1": PoolConfidence(480, 0.82, 0.019)}
    # too few labels for PPI: the plain proportion, the same as the Wilson row
    (row,) = estimate_versions(counts, got)
    assert row.ppi is not None and row.ppi.method == "plain"
    assert row.ppi.estimate == pytest.approx(row.real_accuracy)
    assert row.ppi.interval == row.real_interval
    assert row.to_dict()["ppi"]["n"] == 2
    assert pooled_estimate([row], confidence=got).ppi == row.ppi
    assert pooled_estimate([row]).ppi is None


def test_record_reads_a_database_without_the_column_or_the_tables(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.executescript(
        "CREATE TABLE annotations (id INTEGER PRIMARY KEY, task_id INTEGER, project_id INTEGER,"
        " feedback TEXT, prediction_version TEXT, deleted INTEGER);"
        "INSERT INTO annotations VALUES (1, 10, 1, 'approval', 'v1', 0);" + OLD_CONTROL_TABLE
    )
    conn.close()
    rec = BackendRecord(tmp_path / DB_FILENAME)  # read-only: nothing migrated
    try:
        got = rec.control_confidence(1)
    finally:
        rec.close()
    assert got.labels == [ControlLabel("v1", True, None)] and got.pools == {}
    other = tmp_path / "older"
    other.mkdir()
    conn = sqlite3.connect(other / DB_FILENAME)
    conn.execute(
        "CREATE TABLE annotations (id INTEGER PRIMARY KEY, task_id INTEGER, project_id INTEGER,"
        " feedback TEXT, prediction_version TEXT, deleted INTEGER)"
    )
    conn.commit()
    conn.close()
    rec = BackendRecord(other / DB_FILENAME)
    try:
        got = rec.control_confidence(1)
    finally:
        rec.close()
    assert got.labels == [] and got.pools == {}


def test_versions_labelled_share_reads_back_for_the_data_wide_row(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add_version(1, 1, 100, 0.6, {}, "v1.pkl")
    store.add_version(1, 2, 120, None, {}, "v2.pkl")  # no CV accuracy (one label of a class)
    store.add_version(2, 1, 7, 0.9, {}, "p2.pkl")  # another project's version
    store.record_control_tasks(1, "v1", [10, 11, 12], {10: 0.9, 11: 0.6, 12: 0.8})
    store.record_control_tasks(1, "v2", [13], {13: 0.7})
    store.record_control_pool(1, "v1", PoolConfidence(300, 0.85, 0.02))
    store.record_control_pool(1, "v2", PoolConfidence(280, 0.86, 0.02))
    for ann, (task, feedback, version) in enumerate(
        [
            (10, "approval", "v1"),
            (11, "correction", "v1"),
            (12, "approval", "v1"),
            (13, "approval", "v2"),
        ],
        start=1,
    ):
        _annotate(store, ann, task, feedback, version)
    store.close()
    got, counts = _read_record(tmp_path)
    assert got.labelled == {"v1": LabelledPart(100, 0.6), "v2": LabelledPart(120, None)}
    rows = estimate_versions(counts, got)
    v1 = rows[0].data_wide
    assert v1 is not None and v1.method == "plain" and (v1.n, v1.n_pool_only) == (3, 0)
    # 2 of 3 approvals on the pool's 300 tasks, CV 0.6 on the 100 labelled ones
    assert v1.estimate == pytest.approx(0.75 * 2 / 3 + 0.25 * 0.6)
    assert rows[0].to_dict()["data_wide"]["unlabelled_share"] == pytest.approx(0.75)
    v2 = rows[1].data_wide  # no CV accuracy: the pool alone
    assert v2 is not None and v2.estimate == pytest.approx(1.0) and v2.n_pool_only == 1
    pooled = pooled_estimate(rows, confidence=got).data_wide
    assert pooled is not None and (pooled.n, pooled.n_pool_only) == (4, 1)


def test_labelling_order_marks_the_random_picks_of_the_serving_version(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.record_control_tasks(1, "v1", [11, 13])
    store.record_control_tasks(1, "v2", [14])
    _annotate(store, 1, 10, "approval", "v1")
    _annotate(store, 2, 11, "correction", "v1")  # control task of v1, served by v1
    _annotate(store, 3, 13, "approval", "v2")  # in v1's slice, but v2 served it: selected
    _annotate(store, 4, 11, "approval", "v2")  # a second annotation: the first one counts
    _annotate(store, 5, 14, "approval", "v2")
    expected = [
        LabelledTask(10, False, ("a",)),
        LabelledTask(11, True, ("a",)),
        LabelledTask(13, False, ("a",)),
        LabelledTask(14, True, ("a",)),
    ]
    assert store.labelling_order(1) == expected
    assert store.labelling_order(2) == []
    store.close()
    rec = BackendRecord(tmp_path / DB_FILENAME)
    try:
        assert rec.labelling_order(1) == expected
    finally:
        rec.close()
