"""End-to-end: annotators approve and correct pre-labels; "Start training" makes a new version
that Label Studio ranks by, and the Data Manager serves the most informative task first.

The tests of this module share one project (``flywheel``): 60 uploaded demo images, connected
with ``labelwheel connect``, 20 answered and trained once.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from e2e_helpers import (
    annotate,
    chosen_label,
    connect,
    create_project,
    predictions_by_task,
    project_model_version,
    tasks_in_order,
    train_and_wait,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass
class Flywheel:
    project_id: int
    ml_backend_id: int
    view_id: int
    images: dict[int, str]  # task id -> image reference


def _labelled(task: dict) -> bool:
    return bool(task.get("is_labeled")) or int(task.get("total_annotations") or 0) > 0


@pytest.fixture(scope="module")
def flywheel(label_studio, backend, demo_images) -> Flywheel:
    from labelwheel.ls_api import LabelStudioClient

    client = LabelStudioClient(label_studio.url, label_studio.token, timeout=120)
    pid = create_project(client, demo_images.labels)
    ids = client.import_files(pid, demo_images.paths[:60])
    result = connect(client, pid, backend)
    assert result.predicted == 60
    images = {t["id"]: t["data"]["image"] for t in client.iter_tasks(pid)}
    for tid in ids[:20]:
        annotate(client, tid, demo_images.label_of(images[tid]))
    train_and_wait(client, backend, pid, result.ml_backend_id)
    return Flywheel(pid, result.ml_backend_id, result.view_id, images)


def test_e2e_approvals_and_corrections_are_recorded(client, backend, demo_images, flywheel):
    pid = flywheel.project_id
    version = project_model_version(client, pid)
    preds = predictions_by_task(client, pid, version)
    open_tasks = [t for t in client.iter_tasks(pid) if not _labelled(t)]
    prelabelled = [
        (t["id"], chosen_label(preds[t["id"]]["result"]))
        for t in open_tasks
        if t["id"] in preds and chosen_label(preds[t["id"]]["result"])
    ]
    assert len(prelabelled) == len(open_tasks), "every open task is pre-labelled"
    truth = {tid: demo_images.label_of(flywheel.images[tid]) for tid, _ in prelabelled}
    right = [(tid, lab) for tid, lab in prelabelled if lab == truth[tid]]
    wrong = [(tid, lab) for tid, lab in prelabelled if lab != truth[tid]]
    assert len(right) >= 4, "the model after 20 labels gets several digits right"

    def feedback() -> tuple[int, int]:
        for d in backend.versions(pid)["details"]:
            if d["name"] == version:
                return int(d["approvals"]), int(d["corrections"])
        return 0, 0

    approvals0, corrections0 = feedback()
    # The annotator accepts 4 right pre-labels and fixes 4 others (wrong ones first; if the
    # model is right everywhere, they disagree with right ones).
    for tid, label in right[:4]:
        annotate(client, tid, label)
    to_fix = (wrong + right[4:])[:4]
    for tid, label in to_fix:
        fixed = (
            truth[tid] if truth[tid] != label else next(x for x in demo_images.labels if x != label)
        )
        annotate(client, tid, fixed)

    assert wait_for(
        lambda: feedback() == (approvals0 + 4, corrections0 + 4),
        30,
        f"backend counts 4 approvals and 4 corrections of {version}: {feedback()}",
    )
    rate = backend.metric("labelwheel_prelabel_acceptance_rate", project=pid, version=version)
    a, c = feedback()
    assert rate == pytest.approx(a / (a + c))
    details = next(d for d in backend.versions(pid)["details"] if d["name"] == version)
    assert details["acceptance_rate"] == pytest.approx(a / (a + c))


def test_e2e_start_training_reranks_the_queue(client, backend, demo_images, flywheel):
    pid = flywheel.project_id
    old = project_model_version(client, pid)
    for t in [t for t in client.iter_tasks(pid) if not _labelled(t)][:6]:
        annotate(client, t["id"], demo_images.label_of(flywheel.images[t["id"]]))

    new = train_and_wait(client, backend, pid, flywheel.ml_backend_id)

    assert new != old
    assert project_model_version(client, pid) == new
    versions = backend.versions(pid)["versions"]
    assert versions.index(new) > versions.index(old), "versions are monotonic"
    # Predictions of the new version were requested for every unlabelled task.
    preds = predictions_by_task(client, pid, new)
    ordered = tasks_in_order(client, pid, ["tasks:predictions_score"])
    open_tasks = [t for t in ordered if not _labelled(t)]
    assert {t["id"] for t in open_tasks} <= set(preds)
    # Data Manager ordering by prediction score: ascending, the selector's first pick (score
    # 0.0 = rank 0 in the pool) first; labelled tasks (no score of this version) last.
    scores = [preds[t["id"]]["score"] for t in open_tasks]
    assert scores == sorted(scores)
    assert scores[0] == 0.0
    assert [t["id"] for t in ordered[: len(open_tasks)]] == [t["id"] for t in open_tasks]
    # The saved view "labelwheel: most informative first" serves that task next.
    nxt = client.next_task(pid, flywheel.view_id)
    assert nxt is not None
    assert nxt["id"] == open_tasks[0]["id"]
    # And after it is annotated, the next one in the ranking.
    annotate(client, nxt["id"], demo_images.label_of(flywheel.images[nxt["id"]]))
    nxt2 = client.next_task(pid, flywheel.view_id)
    assert nxt2 is not None and nxt2["id"] == open_tasks[1]["id"]
