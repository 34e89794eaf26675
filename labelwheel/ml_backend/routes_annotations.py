"""The annotation path: ``/webhook`` (Label Studio's events) and ``/train`` (older versions).

An annotation is validated and stored durably first (``Store.apply_annotation``: Label Studio's
order, tombstones), then a training is requested once ``LABELWHEEL_RETRAIN_EVERY`` changes are
pending; the request is acknowledged at once. The other events: deletions, ``START_TRAINING``,
new tasks (embedded in the background) and config updates. Registered on the blueprint of
:mod:`labelwheel.ml_backend.plumbing`.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, g, jsonify

from labelwheel.media.storage import task_image_ref
from labelwheel.ml_backend.events import parse_ls_timestamp
from labelwheel.ml_backend.plumbing import (
    bp,
    current_service,
    fail,
    int_field,
    json_body,
    parse_project_id,
)
from labelwheel.ml_backend.validate import parse_id

log = logging.getLogger("labelwheel.ml_backend")

ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED"}


def _labels_of(config: Any, result: list[dict[str, Any]]) -> list[str]:
    """The labels of a result: by the project's config, else every ``value.choices``."""
    if config is not None:
        try:
            return list(config.labels_from_result(result))
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
    labels: list[str] = []
    for item in result:
        value = item.get("value") if isinstance(item, dict) else None
        choices = value.get("choices") if isinstance(value, dict) else None
        if isinstance(choices, list):
            labels.extend(str(c) for c in choices)
    return labels


def _result_list(value: Any, where: str) -> list[dict[str, Any]]:
    """A result list (None → empty); 400 naming ``where`` when it is not a list of objects."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        fail(400, "bad_request", f"{where} must be a list of result objects")
    return value


def _store_annotation(
    service: Any,
    action: str,
    annotation: Any,
    task: Any,
    project: Any,
    payload: dict[str, Any] | None,
) -> tuple[int, int]:
    """Validate and durably store one annotation; returns (project id, pending changes)."""
    if not isinstance(annotation, dict):
        fail(400, "bad_request", "annotation must be an object")
    ann_id = int_field(annotation, "id", "annotation")
    result = _result_list(annotation.get("result"), "annotation.result")
    if not isinstance(task, dict):
        task = annotation.get("task") if isinstance(annotation.get("task"), dict) else {}
    if isinstance(annotation.get("task"), int) and not isinstance(annotation.get("task"), bool):
        task_id = parse_id(annotation["task"], "annotation.task")
    else:
        task_id = (
            int_field(task, "id", "task") if task else int_field(annotation, "task", "annotation")
        )
    if isinstance(project, dict) and "id" in project:
        project_id = parse_project_id(project, "project.id")
    elif "project" in annotation:
        project_id = parse_project_id(annotation.get("project"), "annotation.project")
    else:
        fail(400, "bad_request", "project (or annotation.project) is required")
    config = None
    if isinstance(project, dict) and isinstance(project.get("label_config"), str):
        try:
            config = service.parse_config(project["label_config"])
        except ValueError:
            config = None
        else:
            service.store.remember_label_config(project_id, config.xml)
    if config is None:
        config = service.config_for(project_id)
    labels = _labels_of(config, result)
    data = task.get("data") if isinstance(task, dict) else None
    image_ref = None
    if isinstance(data, dict):
        if config is not None:
            ref = data.get(config.data_key)
        else:
            strings = [v for v in data.values() if isinstance(v, str)]
            ref = strings[0] if len(strings) == 1 else None
        if isinstance(ref, str) and ref.strip():
            image_ref = task_image_ref(ref, task_id, project_id)
    feedback, prediction_version = None, None
    prediction = annotation.get("prediction")
    was_cancelled = bool(annotation.get("was_cancelled"))
    if isinstance(prediction, dict) and isinstance(prediction.get("result"), list):
        predicted = _labels_of(config, [r for r in prediction["result"] if isinstance(r, dict)])
        version = prediction.get("model_version")
        if not isinstance(version, str) and isinstance(project, dict):
            version = project.get("model_version")
        prediction_version = version if isinstance(version, str) else None
        if predicted and not was_cancelled:
            feedback = "approval" if sorted(predicted) == sorted(labels) else "correction"
    try:  # Label Studio's time of this annotation state: the order in which events apply
        ls_updated_us = parse_ls_timestamp(annotation.get("updated_at"))
    except ValueError as exc:
        fail(400, "bad_request", f"annotation.updated_at: {exc}")
    write = service.store.apply_annotation(
        annotation_id=ann_id,
        task_id=task_id,
        project_id=project_id,
        labels=labels,
        image_ref=image_ref,
        was_cancelled=was_cancelled,
        feedback=feedback,
        prediction_version=prediction_version,
        action=action,
        payload=payload,
        ls_updated_us=ls_updated_us,
    )
    g.lw_annotation_outcome = write.outcome  # stored, duplicate, stale or deleted
    return project_id, int(write.pending)


def _maybe_retrain(service: Any, project_id: int, pending: int) -> str | None:
    """Request a training when ``pending`` changes reach ``retrain_every``; its state or None."""
    every = service.settings.retrain_every
    if every > 0 and pending >= every:
        return str(service.worker.request_training(project_id))
    return None


@bp.post("/webhook")
def webhook() -> Response:
    """Label Studio events: store first, enqueue work, acknowledge at once."""
    service = current_service()
    body = json_body()
    action = body.get("action")
    if not isinstance(action, str) or not action:
        fail(400, "bad_request", "action (a Label Studio webhook action name) is required")
    service.metrics.count_event(action)
    project = body.get("project")
    if action in ANNOTATION_ACTIONS:
        if "annotation" not in body:
            fail(400, "bad_request", f"{action} needs an annotation object")
        project_id, pending = _store_annotation(
            service, action, body.get("annotation"), body.get("task"), project, body
        )
        outcome = g.get("lw_annotation_outcome", "stored")
        if outcome != "stored":  # older than what is stored, a repeat, or a deleted id
            return jsonify({"status": "ignored", "outcome": outcome, "project": project_id})
        training = _maybe_retrain(service, project_id, pending)
        return jsonify({"status": "stored", "project": project_id, "training": training})
    if action == "ANNOTATIONS_DELETED":
        items = body.get("annotations")
        if not isinstance(items, list):
            fail(400, "bad_request", "ANNOTATIONS_DELETED needs annotations: [{'id': ...}]")
        ids = [
            int_field(item, "id", "annotations[]") if isinstance(item, dict) else None
            for item in items
        ]
        if any(i is None for i in ids):
            fail(400, "bad_request", "annotations must be objects with an integer id")
        deleted_in = parse_project_id(project) if project is not None else None
        found, pending_by_project = service.store.delete_annotations(
            deleted_in, [int(i) for i in ids if i is not None], body
        )
        trainings = {pid: _maybe_retrain(service, pid, n) for pid, n in pending_by_project.items()}
        return jsonify({"status": "deleted", "deleted": found, "training": trainings or None})
    if action == "START_TRAINING":
        if project is None:
            fail(400, "bad_request", "START_TRAINING needs the project")
        project_id = parse_project_id(project)
        if isinstance(project, dict) and isinstance(project.get("label_config"), str):
            _remember_config(service, project_id, project["label_config"])
        service.store.record_event(action, project_id, _project_summary(body))
        state = service.worker.request_training(project_id)
        return jsonify({"status": "training " + state, "project": project_id})
    if action == "TASKS_CREATED":
        tasks = body.get("tasks")
        if project is None or not isinstance(tasks, list):
            fail(400, "bad_request", "TASKS_CREATED needs project and tasks")
        project_id = parse_project_id(project)
        if isinstance(project, dict) and isinstance(project.get("label_config"), str):
            _remember_config(service, project_id, project["label_config"])
        config = service.config_for(project_id)
        refs: list[str] = []
        if config is not None:
            for task in tasks:
                data = task.get("data") if isinstance(task, dict) else None
                ref = data.get(config.data_key) if isinstance(data, dict) else None
                if isinstance(ref, str) and ref.strip():
                    refs.append(task_image_ref(ref, task.get("id"), project_id))
        service.store.record_event(
            action, project_id, {"action": action, "project": project_id, "tasks": len(tasks)}
        )
        service.model.invalidate_pool(project_id)
        service.worker.request_embedding(project_id, refs)
        return jsonify({"status": "embedding queued", "tasks": len(refs)})
    if action == "PROJECT_UPDATED":
        if not isinstance(project, dict):
            fail(400, "bad_request", "PROJECT_UPDATED needs the project object")
        project_id = parse_project_id(project)
        xml = project.get("label_config")
        status = "ignored"
        if isinstance(xml, str) and xml.strip():
            status = (
                "config updated"
                if _remember_config(service, project_id, xml)
                else ("config not supported")
            )
        service.store.record_event(action, project_id, _project_summary(body))
        return jsonify({"status": status, "project": project_id})
    return jsonify({"status": "ignored", "action": action})


def _project_summary(body: dict[str, Any]) -> dict[str, Any]:
    """What the events log keeps of a project event: the action and a few project fields."""
    project = body.get("project")
    if isinstance(project, dict):
        keep = ("id", "title", "model_version", "label_config")
        return {"action": body.get("action"), "project": {k: project.get(k) for k in keep}}
    return {"action": body.get("action"), "project": project}


def _remember_config(service: Any, project_id: int, xml: str) -> bool:
    """Store a project's new label config; False (logged, previous one kept) if unusable."""
    try:
        config = service.parse_config(xml)
    except ValueError as exc:
        log.warning(
            "project %d: label config not usable, keeping the previous one: %s", project_id, exc
        )
        return False
    service.store.remember_label_config(project_id, config.xml)
    return True


@bp.post("/train")
def train() -> Response:
    """Older Label Studio versions: ``{"annotations": [...], "project": ...}`` → store, train."""
    service = current_service()
    body = json_body()
    items = body.get("annotations")
    if not isinstance(items, list):
        fail(400, "bad_request", "annotations must be a list of annotation objects")
    project = body.get("project")
    project_id = parse_project_id(project) if project is not None else None
    xml = body.get("label_config")
    if project_id is not None and isinstance(xml, str):
        _remember_config(service, project_id, xml)
    stored: set[int] = set()
    for item in items:
        if not isinstance(item, dict):
            fail(400, "bad_request", "annotations must be objects")
        task = item.get("task") if isinstance(item.get("task"), dict) else None
        proj: Any = project if project is not None else item.get("project")
        if proj is None and task is not None:
            proj = task.get("project")
        pid, _ = _store_annotation(
            service,
            "TRAIN",
            item,
            task,
            {"id": parse_project_id(proj)} if proj is not None else None,
            None,
        )
        stored.add(pid)
    if project_id is not None:
        stored.add(project_id)
    states = {pid: service.worker.request_training(pid) for pid in sorted(stored)}
    return jsonify({"status": "training queued", "annotations": len(items), "training": states})
