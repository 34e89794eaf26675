"""The lead tools read the backend's record read-only, through labelwheel.records."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from labelwheel.lead.report import acceptance_from_store
from labelwheel.lead.sources import open_store
from labelwheel.ml_backend.store import Store
from labelwheel.records import DB_FILENAME, BackendRecord, open_record


def _annotate(store: Store, ann_id: int, feedback: str, version: str) -> None:
    store.apply_annotation(
        annotation_id=ann_id,
        task_id=ann_id,
        project_id=3,
        labels=["cat"],
        image_ref=f"/data/upload/3/{ann_id}.png",
        was_cancelled=False,
        feedback=feedback,
        prediction_version=version,
        action="ANNOTATION_CREATED",
        payload=None,
    )


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    store = Store(tmp_path)
    store.add_version(3, 1, 10, 0.6, {"calibrated": False}, "v1.pkl")
    store.add_version(3, 2, 20, 0.8, {"calibrated": True}, "v2.pkl")
    store.add_version(4, 1, 5, None, {}, "p4.pkl")
    for ann_id, feedback, version in [
        (1, "approval", "v1"),
        (2, "correction", "v1"),
        (3, "approval", "v2"),
        (4, "approval", "v2"),
    ]:
        _annotate(store, ann_id, feedback, version)
    store.close()
    return tmp_path


def test_record_reads_what_the_store_wrote(model_dir: Path) -> None:
    record = open_record(model_dir)
    assert isinstance(record, BackendRecord)
    store = Store(model_dir)
    try:
        assert record.versions(3) == store.versions(3)
        assert [v.name for v in record.versions(3)] == ["v1", "v2"]
        assert [v.cv_accuracy for v in record.versions(3)] == [0.6, 0.8]
        assert len(record.versions()) == 3
        assert record.feedback_counts(3) == store.feedback_counts(3)
        assert record.feedback_counts(3) == {
            (3, "v1"): {"approval": 1, "correction": 1},
            (3, "v2"): {"approval": 2, "correction": 0},
        }
        rows = acceptance_from_store(record, 3)
        assert [(r.version, r.approvals, r.corrections) for r in rows] == [
            ("v1", 1, 1),
            ("v2", 2, 0),
        ]
    finally:
        store.close()
        record.close()


def test_record_is_read_only(model_dir: Path) -> None:
    record = open_store(model_dir)
    assert record is not None
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        record.query("DELETE FROM versions")
    record.close()
    assert len(Store(model_dir).versions(3)) == 2


def test_no_record_where_no_backend_ran(tmp_path: Path) -> None:
    assert open_record(tmp_path) is None
    assert open_record(None) is None
    assert not (tmp_path / DB_FILENAME).exists(), "looking never creates a database"
