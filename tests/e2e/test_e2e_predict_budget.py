"""End-to-end: a "Retrieve predictions" larger than the backend's time budget
(``LABELWHEEL_PREDICT_BUDGET``) is answered in time with the tasks done; Label Studio stores
those and skips the others without an error; once the backend has embedded the rest, it has
Label Studio retrieve exactly them, and every task ends with one prediction."""

from __future__ import annotations

import pytest
from e2e_helpers import add_ml_backend, create_project, predictions_by_task, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

N_TASKS = 60


def test_e2e_retrieve_predictions_over_budget(
    client, ls_sdk, label_studio, backend_factory, demo_images
) -> None:
    backend = backend_factory(
        label_studio.url, label_studio.token, LABELWHEEL_PREDICT_BUDGET="0.05"
    )
    pid = create_project(client, demo_images.labels)
    ids = client.import_files(pid, demo_images.paths[:N_TASKS])
    assert len(ids) == N_TASKS
    log_start = label_studio.log_path.stat().st_size
    add_ml_backend(ls_sdk, pid, backend)
    schema = client.get_project(pid)["label_config"]
    setup = backend.post("/setup", json={"project": f"{pid}.0", "schema": schema})
    version = setup.json()["model_version"]

    # One "Retrieve predictions" for all 60: one /predict, answered within the budget with
    # the images done (at least one backbone pass); the others are left for the next retrieve.
    client.retrieve_predictions(pid)
    first = set(predictions_by_task(client, pid, version))
    deferred = backend.metric("labelwheel_predictions_deferred_total")
    assert first, "the first pass is always answered"
    assert deferred > 0 and len(first) < N_TASKS, (deferred, len(first))

    # Nobody retrieves again: the backend embeds the rest (its pool ranking) and asks Label
    # Studio to retrieve their predictions, which it answers from the embedding cache.
    wait_for(
        lambda: len(predictions_by_task(client, pid, version)) == N_TASKS,
        300,
        "the tasks left for later predicted",
    )
    # (the count moves when Label Studio's action returns, just after it stored the predictions)
    wait_for(
        lambda: backend.metric("labelwheel_predictions_deferred_retrieved_total") == deferred,
        60,
        "the backend's retrieve counted",
    )
    assert backend.metric("labelwheel_predictions_deferred_pending") == 0
    # one prediction per task: none stored twice, none malformed
    per_task = [p["task"] for p in client.list_project_predictions(pid)]
    assert sorted(per_task) == sorted(ids)
    log = label_studio.log_path.read_bytes()[log_start:].decode(errors="replace")
    assert "Number of tasks and responses are not equal" not in log
    assert "incorrect prediction" not in log
