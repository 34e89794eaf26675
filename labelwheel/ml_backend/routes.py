"""Label Studio's ML backend protocol: ``/health``, ``/setup`` and ``/predict``.

Registered on the blueprint of :mod:`labelwheel.ml_backend.plumbing` (auth, JSON errors and
request parsing live there); annotations arrive by :mod:`~labelwheel.ml_backend.routes_annotations`,
versions and metrics are read by :mod:`~labelwheel.ml_backend.routes_versions`.
"""

from __future__ import annotations

import time

from flask import Response, jsonify

from labelwheel import __version__
from labelwheel.ml_backend.plumbing import (
    bp,
    config_or_400,
    current_service,
    fail,
    json_body,
    parse_project_id,
)
from labelwheel.ml_backend.validate import parse_id

MODEL_CLASS = "LabelwheelImageClassifier"


@bp.get("/health")
@bp.get("/")
def health() -> Response:
    """Liveness: ``{"status": "UP", ...}``, no auth (Label Studio polls it before predicting)."""
    service = current_service()
    status = service.worker.status()
    return jsonify(
        {
            "status": "UP",
            "model_class": MODEL_CLASS,
            "labelwheel_version": __version__,
            "backbone": service.settings.backbone,
            "image_size": service.settings.image_size,
            "backbone_loaded": service.model.backbone_loaded,
            "strategy": service.settings.strategy,
            "training": status["training"],
            "queued": status["queued"],
        }
    )


@bp.post("/setup")
def setup() -> Response:
    """Label Studio connects a project: parse its config, remember it, return the version."""
    service = current_service()
    body = json_body()
    project_id = parse_project_id(body.get("project"))
    schema = body.get("schema")
    if not isinstance(schema, str) or not schema.strip():
        fail(400, "bad_request", "schema (the project's label config XML) is required")
    config = config_or_400(service, schema, None)
    hostname = body.get("hostname") if isinstance(body.get("hostname"), str) else None
    token = body.get("access_token") if isinstance(body.get("access_token"), str) else None
    service.link.remember_setup(hostname, token)
    service.store.upsert_project(project_id, label_config=config.xml, hostname=hostname)
    return jsonify({"model_version": service.model.version_name(project_id)})


@bp.post("/predict")
def predict() -> Response:
    """Pre-label and score tasks: ``{"results": [...]}``, one per task, same order."""
    started = time.monotonic()
    service = current_service()
    body = json_body()
    tasks = body.get("tasks")
    if not isinstance(tasks, list):
        fail(400, "bad_request", "tasks must be a list of task objects")
    cap = service.settings.max_predict_tasks
    if len(tasks) > cap:
        fail(
            413,
            "too_many_tasks",
            f"{len(tasks)} tasks in one /predict request; at most {cap} are accepted "
            "(LABELWHEEL_MAX_PREDICT_TASKS); select fewer tasks per 'Retrieve predictions'",
        )
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            fail(400, "bad_request", f"tasks[{i}] must be an object, got {type(task).__name__}")
        if task.get("id") is not None:
            parse_id(task["id"], f"tasks[{i}].id")
    if "project" not in body:
        fail(400, "bad_request", "project is required (Label Studio sends '<id>.<timestamp>')")
    project_id = parse_project_id(body.get("project"))
    config = config_or_400(service, body.get("label_config"), project_id)
    if body.get("label_config") or service.store.get_project(project_id) is None:
        service.store.remember_label_config(project_id, config.xml)
    if not tasks:
        return jsonify({"results": []})
    budget = service.settings.predict_budget
    deadline = started + budget if budget > 0 else None
    results, image_failures, deferred = service.model.predict(project_id, config, tasks, deadline)
    service.metrics.count_predictions(len(results) - deferred, image_failures, deferred)
    return jsonify({"results": results, "model_version": service.model.version_name(project_id)})
