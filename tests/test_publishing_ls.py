"""Publishing by import against a real Label Studio: chunks stored once, cold-start predictions
(empty results, scores only) accepted, the project ranks by the imported scores."""

from __future__ import annotations

import time
from typing import Any

import pytest

from labelwheel.label_config import image_classification_config
from labelwheel.ls_api import LabelStudioClient, LabelStudioError
from labelwheel.publishing import (
    PublishPacing,
    import_chunk,
    publish_version,
    push_predictions,
)

LABELS = ["cat", "dog"]


def _project(client: LabelStudioClient, n: int) -> tuple[int, list[int]]:
    pid = int(client.create_project("publishing test", image_classification_config(LABELS))["id"])
    tasks = [{"image": f"https://example.invalid/{i}.png"} for i in range(n)]
    return pid, [int(i) for i in client.import_tasks(pid, tasks)]


def _result(label: str, score: float) -> list[dict[str, Any]]:
    return [
        {
            "from_name": "choice",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": [label]},
            "score": score,
        }
    ]


def _versions(client: LabelStudioClient, pid: int) -> dict[int, list[tuple[str, float]]]:
    out: dict[int, list[tuple[str, float]]] = {}
    for p in client.list_project_predictions(pid):
        out.setdefault(int(p["task"]), []).append((str(p["model_version"]), float(p["score"])))
    return out


def test_push_imports_every_task_once_in_paced_chunks(ls_client: LabelStudioClient) -> None:
    pid, ids = _project(ls_client, 23)
    asked: list[list[int]] = []

    def predict(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        asked.append([int(t["id"]) for t in tasks])
        return [
            {
                "result": _result(LABELS[int(t["id"]) % 2], 0.9),
                "score": (int(t["id"]) % 7) / 7,
                "model_version": "v3",
            }
            for t in tasks
        ]

    seen: list[tuple[int, int]] = []
    tasks = [{"id": i, "data": {}} for i in ids]
    versions = push_predictions(
        ls_client,
        pid,
        tasks,
        predict,
        PublishPacing(chunk_size=10, pause=0.0),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert versions == ["v3"]
    assert [len(c) for c in asked] == [10, 10, 3]
    assert seen == [(10, 23), (20, 23), (23, 23)]
    stored = _versions(ls_client, pid)
    assert sorted(stored) == sorted(ids)
    for task_id in ids:
        assert stored[task_id] == [("v3", pytest.approx((task_id % 7) / 7))]
    task = ls_client.get_task(ids[0])
    choices = task["predictions"][0]["result"][0]["value"]["choices"]
    assert choices == [LABELS[ids[0] % 2]]


def test_cold_start_predictions_without_result_rank_the_project(
    ls_client: LabelStudioClient,
) -> None:
    pid, ids = _project(ls_client, 6)
    order = list(reversed(ids))  # the last task first

    def predict(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"result": [], "score": order.index(int(t["id"])) / 6, "model_version": "v0"}
            for t in tasks
        ]

    written = publish_version(
        ls_client, pid, "v0", predict, pacing=PublishPacing(chunk_size=4, pause=0.0)
    )
    assert written == 6
    assert ls_client.get_project(pid)["model_version"] == "v0"
    ranked = [
        int(t["id"])
        for t in ls_client.iter_tasks(pid, query={"ordering": ["tasks:predictions_score"]})
    ]
    assert ranked == order


def test_a_chunk_is_not_stored_twice_and_bad_tasks_are_refused(
    ls_client: LabelStudioClient,
) -> None:
    pid, ids = _project(ls_client, 3)
    items = [
        {"task": i, "result": _result("cat", 0.5), "score": 0.25 + k, "model_version": "v1"}
        for k, i in enumerate(ids)
    ]
    import_chunk(ls_client, pid, items, busy_retries=2)
    assert all(len(v) == 1 for v in _versions(ls_client, pid).values())
    other, _ = _project(ls_client, 1)
    bad = [{"task": ids[0], "result": [], "score": 0.1, "model_version": "v1"}]
    began = time.monotonic()
    with pytest.raises(LabelStudioError) as err:
        import_chunk(ls_client, other, bad, busy_retries=2)
    assert err.value.status == 400  # a task of another project: refused at once, no retries
    assert time.monotonic() - began < 5
    assert len(_versions(ls_client, pid)[ids[0]]) == 1
