"""The SQLite store: training-set rules, versions, connections of short-lived threads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from labelwheel.fsio import atomic_write_bytes
from labelwheel.ml_backend.store import Store


def record(store: Store, ann_id: int, task_id: int, labels: list[str], **kw: object) -> int:
    args = {
        "annotation_id": ann_id,
        "task_id": task_id,
        "project_id": 1,
        "labels": labels,
        "image_ref": f"/data/upload/1/{task_id}.png",
        "was_cancelled": False,
        "feedback": None,
        "prediction_version": None,
        "action": "ANNOTATION_CREATED",
        "payload": {"id": ann_id},
    }
    args.update(kw)
    return store.apply_annotation(**args).pending  # type: ignore[arg-type]


def test_training_set_rules(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert record(store, 1, 10, ["a"]) == 1
    record(store, 2, 10, ["b"])  # a second annotation of task 10: the newest wins
    record(store, 3, 11, [], was_cancelled=True)  # skipped
    record(store, 4, 12, ["a"])
    assert record(store, 5, 13, []) == 5  # no choice made
    store.delete_annotations(1, [4], None)
    assert [(a.id, a.labels) for a in store.training_set(1)] == [(2, ("b",))]
    assert store.labelled_task_ids(1) == {10, 11, 13}
    assert store.take_pending_changes(1) == 6
    assert store.take_pending_changes(1) == 0
    assert store.event_count("ANNOTATION_CREATED") == 5


def test_versions_are_monotonic_and_survive_reopening(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.latest_version(1) is None
    n = store.next_version_number(1)
    store.add_version(1, n, 10, 0.9, {"x": 1}, str(tmp_path / "a.pkl"))
    store.add_version(1, store.next_version_number(1), 12, None, {}, str(tmp_path / "b.pkl"))
    store.add_version(2, store.next_version_number(2), 3, None, {}, str(tmp_path / "c.pkl"))
    store.close()
    again = Store(tmp_path)
    assert [v.name for v in again.versions(1)] == ["v1", "v2"]
    assert again.latest_version(1).n_labels == 12
    assert again.latest_version(2).name == "v1"
    run = again.start_run(1)
    assert again.mark_interrupted_runs() == 1
    assert again.runs(1)[0]["id"] == run and again.runs(1)[0]["status"] == "interrupted"


def test_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for _ in range(40):  # like a thread-per-request server
        t = threading.Thread(target=store.get_project, args=(1,))
        t.start()
        t.join()
    store.get_project(1)
    assert len(store._connections) <= 2


def test_a_finished_threads_connection_serves_the_next_thread(tmp_path: Path) -> None:
    store = Store(tmp_path)
    used: list[Any] = []  # the connections themselves (an id could be reused once freed)

    def request(project_id: int) -> None:
        store.upsert_project(project_id, label_config=f"<View>{project_id}</View>")
        assert store.get_project(project_id)["label_config"] == f"<View>{project_id}</View>"
        used.append(store._conn())

    for i in range(10):  # like a thread-per-request server, one request at a time
        t = threading.Thread(target=request, args=(i + 1,))
        t.start()
        t.join()
    assert all(c is used[0] for c in used)  # one connection, passed from thread to thread
    assert [store.get_project(i + 1)["id"] for i in range(10)] == list(range(1, 11))


def test_a_connection_left_in_a_transaction_is_not_passed_on(tmp_path: Path) -> None:
    import sqlite3

    store = Store(tmp_path)
    left: list[sqlite3.Connection] = []

    def dies_mid_transaction() -> None:
        conn = store._conn()
        conn.execute("BEGIN IMMEDIATE")  # and the thread ends without COMMIT or ROLLBACK
        left.append(conn)

    t = threading.Thread(target=dies_mid_transaction)
    t.start()
    t.join()
    got: list[sqlite3.Connection] = []
    t = threading.Thread(target=lambda: (store.upsert_project(7), got.append(store._conn())))
    t.start()
    t.join()
    assert got and got[0] is not left[0]  # a fresh connection ...
    with pytest.raises(sqlite3.ProgrammingError):  # ... and the other one closed (lock released)
        left[0].execute("SELECT 1")
    assert store.get_project(7) is not None


def test_atomic_write_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "artifact.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["artifact.bin"]


def test_training_queue_survives_reopening_and_counts_requests(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.queue_training(1)
    store.queue_training(2)
    store.queue_training(1)  # coalesced into one row
    store.close()
    store = Store(tmp_path)
    assert store.queued_trainings() == [(2, 0), (1, 0)]  # oldest request first
    token = store.training_started(1)
    store.queue_training(1)  # asked again while it runs: one more training is owed
    assert store.training_finished(1, token) is True
    token = store.training_started(1)
    assert store.training_finished(1, token) is False
    assert store.queued_trainings() == [(2, 0)]
    token = store.training_started(2)  # then the process dies ...
    store.close()
    store = Store(tmp_path)
    assert store.queued_trainings() == [(2, 1)]  # ... and the attempt was counted
    assert store.training_started(3) == 0  # nothing owed: a direct training
    assert store.training_finished(3, 0) is False


def test_new_directories_are_made_durable(tmp_path: Path, monkeypatch: Any) -> None:
    import labelwheel.fsio as fsio

    synced: list[Path] = []
    real = fsio.fsync_dir

    def spy(directory: Path) -> None:
        synced.append(Path(directory))
        real(directory)

    monkeypatch.setattr(fsio, "fsync_dir", spy)
    target = tmp_path / "projects" / "7" / "v1.pkl"
    atomic_write_bytes(target, b"head")
    # each new directory's entry (in its parent), then the renamed file's entry
    assert synced == [tmp_path, tmp_path / "projects", tmp_path / "projects" / "7"]
    synced.clear()
    atomic_write_bytes(target.with_name("v2.pkl"), b"head 2")
    assert synced == [tmp_path / "projects" / "7"]
    assert target.read_bytes() == b"head"


def test_image_refs_are_kept_and_annotations_stay_durable(tmp_path: Path) -> None:
    """Reference -> hash pairs are a cache (committed without waiting for the disk); the
    connection is back to synchronous=FULL for the annotations that follow."""
    store = Store(tmp_path)
    refs = {f"/data/local-files/?d={i}.png": f"{i:064x}" for i in range(700)}  # > one IN chunk
    store.remember_image_hashes(refs)
    store.remember_image_hashes({})
    assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    record(store, 1, 10, ["a"])
    again = Store(tmp_path)
    wanted = [*list(refs)[::7], "/data/upload/never-seen.png"]
    assert again.image_hashes(wanted) == {r: refs[r] for r in list(refs)[::7]}
    assert again.image_hash("/data/local-files/?d=3.png") == refs["/data/local-files/?d=3.png"]
    assert [a.id for a in again.training_set(1)] == [1]
