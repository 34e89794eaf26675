"""HTTP endpoints of the ML backend (Label Studio's ML backend protocol, plus /metrics).

Every response is JSON (``/metrics``: Prometheus text); every error is
``{"error": <short code>, "message": <what to fix>}`` with a 4xx status.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
from typing import Any, NoReturn

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from labelwheel import __version__
from labelwheel.media.storage import task_image_ref
from labelwheel.ml_backend.events import parse_ls_timestamp
from labelwheel.ml_backend.model import COLD_START_VERSION
from labelwheel.ml_backend.store import Version
from labelwheel.ml_backend.validate import BadInput, parse_id, parse_json_object, parse_project_ref

log = logging.getLogger("labelwheel.ml_backend")

bp = Blueprint("ml_backend", __name__)

MODEL_CLASS = "LabelwheelImageClassifier"
OPEN_ENDPOINTS = {"ml_backend.health"}
ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED"}


class ApiError(Exception):
    """An error answered as JSON with a 4xx status."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def _fail(status: int, error: str, message: str) -> NoReturn:
    raise ApiError(status, error, message)


def _error_response(status: int, error: str, message: str) -> Response:
    response = jsonify({"error": error, "message": message})
    response.status_code = status
    return response


def _service() -> Any:
    return current_app.extensions["labelwheel"]


# -- hooks: auth, metrics, errors ------------------------------------------------------------------


def _check_basic_auth(user: str, password: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    got_user, sep, got_pass = decoded.partition(":")
    if not sep:
        return False
    ok_user = hmac.compare_digest(got_user.encode(), user.encode())
    ok_pass = hmac.compare_digest(got_pass.encode(), password.encode())
    return ok_user and ok_pass


def install_hooks(app: Flask) -> None:
    """Register auth, request metrics and JSON error handlers on the app."""

    @app.before_request
    def _before() -> Response | None:
        g.lw_started = time.perf_counter()
        settings = _service().settings
        if not settings.auth_enabled or request.endpoint in OPEN_ENDPOINTS:
            return None
        if _check_basic_auth(settings.basic_auth_user, settings.basic_auth_pass):
            return None
        response = _error_response(
            401, "unauthorized", "basic auth credentials are missing or wrong"
        )
        response.headers["WWW-Authenticate"] = 'Basic realm="labelwheel"'
        return response

    @app.after_request
    def _after(response: Response) -> Response:
        started = getattr(g, "lw_started", None)
        if started is not None:
            rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
            _service().metrics.observe_request(
                rule, request.method, response.status_code, time.perf_counter() - started
            )
        return response

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return _error_response(exc.status, exc.error, exc.message)

    @app.errorhandler(BadInput)
    def _bad_input(exc: BadInput) -> Response:
        return _error_response(exc.status, exc.error, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        names = {
            404: ("not_found", f"no endpoint {request.path}"),
            405: ("method_not_allowed", f"{request.method} is not allowed on {request.path}"),
            413: (
                "payload_too_large",
                f"request body larger than {current_app.config.get('MAX_CONTENT_LENGTH')} bytes"
                " (LABELWHEEL_MAX_REQUEST_BYTES)",
            ),
        }
        error, message = names.get(code, (exc.name.lower().replace(" ", "_"), exc.description))
        response = _error_response(code, error, str(message))
        if code == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _error_response(500, "internal_error", "unexpected error; see the backend log")


# -- request parsing ----------------------------------------------------------------------------


def _body() -> dict[str, Any]:
    """The JSON object of the request (BadInput → 400: empty, malformed, nested too deep).
    Read once, not cached: a /predict body of data: URIs is not kept twice."""
    return parse_json_object(request.get_data(cache=False))


def parse_project_id(value: Any, field: str = "project") -> int:
    """Label Studio's project reference (``"<id>.<created_ts>"``, an int, or a project dict);
    ids are ASCII digits within SQLite's 64-bit range (BadInput → 400 otherwise)."""
    return parse_project_ref(value, field)


def _int_field(obj: dict[str, Any], key: str, where: str) -> int:
    return parse_id(obj.get(key), f"{where}.{key}")


def _config_or_400(service: Any, xml: Any, project_id: int | None) -> Any:
    from labelwheel.label_config import UnsupportedConfigError

    if isinstance(xml, str) and xml.strip():
        try:
            return service.parse_config(xml)
        except UnsupportedConfigError as exc:
            _fail(400, "unsupported_label_config", str(exc))
        except ValueError as exc:
            _fail(400, "invalid_label_config", str(exc))
    if xml is not None and not isinstance(xml, str):
        _fail(400, "bad_request", "label_config must be a string of XML")
    config = service.config_for(project_id) if project_id is not None else None
    if config is None:
        _fail(
            400,
            "no_label_config",
            "no label config known for this project: send label_config or call /setup first",
        )
    return config


# -- endpoints ------------------------------------------------------------------------------------


@bp.get("/health")
@bp.get("/")
def health() -> Response:
    """Liveness: ``{"status": "UP", ...}``, no auth (Label Studio polls it before predicting)."""
    service = _service()
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
    service = _service()
    body = _body()
    project_id = parse_project_id(body.get("project"))
    schema = body.get("schema")
    if not isinstance(schema, str) or not schema.strip():
        _fail(400, "bad_request", "schema (the project's label config XML) is required")
    config = _config_or_400(service, schema, None)
    hostname = body.get("hostname") if isinstance(body.get("hostname"), str) else None
    token = body.get("access_token") if isinstance(body.get("access_token"), str) else None
    service.link.remember_setup(hostname, token)
    service.store.upsert_project(project_id, label_config=config.xml, hostname=hostname)
    return jsonify({"model_version": service.model.version_name(project_id)})


@bp.post("/predict")
def predict() -> Response:
    """Pre-label and score tasks: ``{"results": [...]}``, one per task, same order."""
    service = _service()
    body = _body()
    tasks = body.get("tasks")
    if not isinstance(tasks, list):
        _fail(400, "bad_request", "tasks must be a list of task objects")
    cap = service.settings.max_predict_tasks
    if len(tasks) > cap:
        _fail(
            413,
            "too_many_tasks",
            f"{len(tasks)} tasks in one /predict request; at most {cap} are accepted "
            "(LABELWHEEL_MAX_PREDICT_TASKS); select fewer tasks per 'Retrieve predictions'",
        )
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            _fail(400, "bad_request", f"tasks[{i}] must be an object, got {type(task).__name__}")
        if task.get("id") is not None:
            parse_id(task["id"], f"tasks[{i}].id")
    if "project" not in body:
        _fail(400, "bad_request", "project is required (Label Studio sends '<id>.<timestamp>')")
    project_id = parse_project_id(body.get("project"))
    config = _config_or_400(service, body.get("label_config"), project_id)
    if service.store.get_project(project_id) is None or body.get("label_config"):
        row = service.store.get_project(project_id)
        if row is None or row.get("label_config") != config.xml:
            service.store.upsert_project(project_id, label_config=config.xml)
    if not tasks:
        return jsonify({"results": []})
    results, image_failures = service.model.predict(project_id, config, tasks)
    service.metrics.count_predictions(len(results), image_failures)
    return jsonify({"results": results, "model_version": service.model.version_name(project_id)})


def _labels_of(config: Any, result: list[dict[str, Any]]) -> list[str]:
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
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        _fail(400, "bad_request", f"{where} must be a list of result objects")
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
        _fail(400, "bad_request", "annotation must be an object")
    ann_id = _int_field(annotation, "id", "annotation")
    result = _result_list(annotation.get("result"), "annotation.result")
    if not isinstance(task, dict):
        task = annotation.get("task") if isinstance(annotation.get("task"), dict) else {}
    if isinstance(annotation.get("task"), int) and not isinstance(annotation.get("task"), bool):
        task_id = parse_id(annotation["task"], "annotation.task")
    else:
        task_id = (
            _int_field(task, "id", "task") if task else _int_field(annotation, "task", "annotation")
        )
    if isinstance(project, dict) and "id" in project:
        project_id = parse_project_id(project, "project.id")
    elif "project" in annotation:
        project_id = parse_project_id(annotation.get("project"), "annotation.project")
    else:
        _fail(400, "bad_request", "project (or annotation.project) is required")
    config = None
    if isinstance(project, dict) and isinstance(project.get("label_config"), str):
        try:
            config = service.parse_config(project["label_config"])
        except ValueError:
            config = None
        else:
            row = service.store.get_project(project_id)
            if row is None or row.get("label_config") != config.xml:
                service.store.upsert_project(project_id, label_config=config.xml)
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
        _fail(400, "bad_request", f"annotation.updated_at: {exc}")
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
    every = service.settings.retrain_every
    if every > 0 and pending >= every:
        return str(service.worker.request_training(project_id))
    return None


@bp.post("/webhook")
def webhook() -> Response:
    """Label Studio events: store first, enqueue work, acknowledge at once."""
    service = _service()
    body = _body()
    action = body.get("action")
    if not isinstance(action, str) or not action:
        _fail(400, "bad_request", "action (a Label Studio webhook action name) is required")
    service.metrics.count_event(action)
    project = body.get("project")
    if action in ANNOTATION_ACTIONS:
        if "annotation" not in body:
            _fail(400, "bad_request", f"{action} needs an annotation object")
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
            _fail(400, "bad_request", "ANNOTATIONS_DELETED needs annotations: [{'id': ...}]")
        ids = [
            _int_field(item, "id", "annotations[]") if isinstance(item, dict) else None
            for item in items
        ]
        if any(i is None for i in ids):
            _fail(400, "bad_request", "annotations must be objects with an integer id")
        deleted_in = parse_project_id(project) if project is not None else None
        found, pending = service.store.delete_annotations(
            deleted_in, [int(i) for i in ids if i is not None], body
        )
        trainings = {pid: _maybe_retrain(service, pid, n) for pid, n in pending.items()}
        return jsonify({"status": "deleted", "deleted": found, "training": trainings or None})
    if action == "START_TRAINING":
        if project is None:
            _fail(400, "bad_request", "START_TRAINING needs the project")
        project_id = parse_project_id(project)
        if isinstance(project, dict) and isinstance(project.get("label_config"), str):
            _remember_config(service, project_id, project["label_config"])
        service.store.record_event(action, project_id, _project_summary(body))
        state = service.worker.request_training(project_id)
        return jsonify({"status": "training " + state, "project": project_id})
    if action == "TASKS_CREATED":
        tasks = body.get("tasks")
        if project is None or not isinstance(tasks, list):
            _fail(400, "bad_request", "TASKS_CREATED needs project and tasks")
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
            _fail(400, "bad_request", "PROJECT_UPDATED needs the project object")
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
    project = body.get("project")
    if isinstance(project, dict):
        keep = ("id", "title", "model_version", "label_config")
        return {"action": body.get("action"), "project": {k: project.get(k) for k in keep}}
    return {"action": body.get("action"), "project": project}


def _remember_config(service: Any, project_id: int, xml: str) -> bool:
    try:
        config = service.parse_config(xml)
    except ValueError as exc:
        log.warning(
            "project %d: label config not usable, keeping the previous one: %s", project_id, exc
        )
        return False
    row = service.store.get_project(project_id)
    if row is None or row.get("label_config") != config.xml:
        service.store.upsert_project(project_id, label_config=config.xml)
    return True


@bp.post("/train")
def train() -> Response:
    """Older Label Studio versions: ``{"annotations": [...], "project": ...}`` → store, train."""
    service = _service()
    body = _body()
    items = body.get("annotations")
    if not isinstance(items, list):
        _fail(400, "bad_request", "annotations must be a list of annotation objects")
    project = body.get("project")
    project_id = parse_project_id(project) if project is not None else None
    xml = body.get("label_config")
    if project_id is not None and isinstance(xml, str):
        _remember_config(service, project_id, xml)
    stored: set[int] = set()
    for item in items:
        if not isinstance(item, dict):
            _fail(400, "bad_request", "annotations must be objects")
        task = item.get("task") if isinstance(item.get("task"), dict) else None
        proj: Any = project if project is not None else item.get("project")
        if proj is None and task is not None:
            proj = task.get("project")
        pid, _ = _store_annotation(
            service, "TRAIN", item, task, {"id": parse_project_id(proj)} if proj else None, None
        )
        stored.add(pid)
    if project_id is not None:
        stored.add(project_id)
    states = {pid: service.worker.request_training(pid) for pid in sorted(stored)}
    return jsonify({"status": "training queued", "annotations": len(items), "training": states})


def _version_details(service: Any, version: Version) -> dict[str, Any]:
    feedback = service.store.feedback_counts(version.project_id).get(
        (version.project_id, version.name), {"approval": 0, "correction": 0}
    )
    total = feedback["approval"] + feedback["correction"]
    serving = service.model.version_name(version.project_id) == version.name
    return {
        "project": version.project_id,
        "name": version.name,
        "created": version.created,
        "n_labels": version.n_labels,
        "cv_accuracy": version.cv_accuracy,
        "metrics": version.metrics,
        "approvals": feedback["approval"],
        "corrections": feedback["correction"],
        "acceptance_rate": feedback["approval"] / total if total else None,
        # real accuracy from the version's random control slice, next to the accuracy on the
        # selected tasks (labelwheel.lead.honest)
        "honest": _honest(service, version),
        "serving": serving,
        # the serving version's pool ranking job (state, "embedding k of N", ...); None otherwise
        "pool": service.model.pool_jobs.progress(version.project_id).get(version.project_id)
        if serving
        else None,
    }


def _honest(service: Any, version: Version) -> dict[str, Any]:
    from labelwheel.lead.honest import honest_estimate, with_ppi

    counts = service.store.control_feedback(version.project_id).get(version.name, {})

    def pair(kind: str) -> tuple[int, int]:
        c = counts.get(kind, {})
        return int(c.get("approval", 0)), int(c.get("correction", 0))

    # "ppi": the same real accuracy by prediction-powered inference (the version's confidence
    # over its whole pool, its bias corrected on the control labels), beside the plain one
    out = with_ppi(
        honest_estimate(version.name, pair("control"), pair("selected")),
        service.store.control_confidence(version.project_id),
    ).to_dict()
    out["control_fraction"] = service.settings.control_fraction
    return out


@bp.get("/versions")
def versions() -> Response:
    """Model versions: ``{"versions": [names], "details": [...], "runs": [...], "pool": [...]}``
    (``pool``: each project's background pool ranking, e.g. ``embedding 120 of 20000``)."""
    service = _service()
    raw = request.args.get("project")
    project_id = parse_project_id(raw) if raw is not None else None
    rows = service.store.versions(project_id)
    names: list[str] = []
    for version in rows:
        if version.name not in names:
            names.append(version.name)
    runs = service.store.runs(project_id)[:50]
    return jsonify(
        {
            "versions": names,
            "details": [_version_details(service, v) for v in rows],
            "runs": runs,
            "pool": [job for job in service.model.pool_jobs.progress(project_id).values()],
            "message": "" if names else f"no trained version yet; serving {COLD_START_VERSION}",
        }
    )


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition."""
    service = _service()
    return Response(
        service.metrics.render(service), mimetype="text/plain; version=0.0.4; charset=utf-8"
    )
