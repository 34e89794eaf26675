"""Request plumbing of the ML backend: the one blueprint, the app hooks and request parsing.

The endpoints register on :data:`bp` (blueprint ``ml_backend``) from three rooms:
:mod:`~labelwheel.ml_backend.routes` (Label Studio's protocol: ``/health``, ``/setup``,
``/predict``), :mod:`~labelwheel.ml_backend.routes_annotations` (``/webhook``, ``/train``) and
:mod:`~labelwheel.ml_backend.routes_versions` (``/versions``, ``/metrics``); ``create_app`` imports
all three before it registers the blueprint.

Every response is JSON (``/metrics``: Prometheus text); every error is
``{"error": <short code>, "message": <what to fix>}`` with a 4xx status.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import time
from typing import TYPE_CHECKING, Any, NoReturn

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from labelwheel.ml_backend.validate import BadInput, parse_id, parse_json_object, parse_project_ref

if TYPE_CHECKING:
    from labelwheel.ml_backend import BackendService

log = logging.getLogger("labelwheel.ml_backend")

bp = Blueprint("ml_backend", __name__)

OPEN_ENDPOINTS = {"ml_backend.health"}


class ApiError(Exception):
    """An error answered as JSON with a 4xx status."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def fail(status: int, error: str, message: str) -> NoReturn:
    """Stop the request: answered as ``{"error": error, "message": message}`` with ``status``."""
    raise ApiError(status, error, message)


def _error_response(status: int, error: str, message: str) -> Response:
    response = jsonify({"error": error, "message": message})
    response.status_code = status
    return response


def current_service() -> BackendService:
    """The app's ``BackendService`` (settings, store, model, worker, metrics)."""
    service: BackendService = current_app.extensions["labelwheel"]
    return service


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


def _forked(service: Any) -> Response:
    """The answer of an app that was created in another process and forked: its training
    thread, pool jobs and MODEL_DIR lock stayed in that process (gunicorn ``--preload``)."""
    message = (
        f"this backend was created in process {service.pid} and forked into process "
        f"{os.getpid()} (gunicorn --preload?): its training thread and MODEL_DIR lock stayed in "
        "the first process, so nothing would train here. Run gunicorn without --preload."
    )
    if getattr(service, "fork_logged", None) != os.getpid():  # once per process
        service.fork_logged = os.getpid()
        log.error("%s", message)
    return _error_response(503, "forked_app", message)


def install_hooks(app: Flask) -> None:
    """Register auth, request metrics and JSON error handlers on the app."""

    @app.before_request
    def _before() -> Response | None:
        g.lw_started = time.perf_counter()
        service = current_service()
        if service.pid != os.getpid():
            return _forked(service)
        user, password = service.settings.basic_auth_user, service.settings.basic_auth_pass
        if not (user and password) or request.endpoint in OPEN_ENDPOINTS:  # auth off, or open
            return None
        if _check_basic_auth(user, password):
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
            current_service().metrics.observe_request(
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


def json_body() -> dict[str, Any]:
    """The JSON object of the request (BadInput → 400: empty, malformed, nested too deep).
    Read once, not cached: a /predict body of data: URIs is not kept twice."""
    return parse_json_object(request.get_data(cache=False))


def parse_project_id(value: Any, field: str = "project") -> int:
    """Label Studio's project reference (``"<id>.<created_ts>"``, an int, or a project dict);
    ids are ASCII digits within SQLite's 64-bit range (BadInput → 400 otherwise)."""
    return parse_project_ref(value, field)


def int_field(obj: dict[str, Any], key: str, where: str) -> int:
    """The id ``obj[key]`` (BadInput → 400 naming ``<where>.<key>`` when it is not one)."""
    return parse_id(obj.get(key), f"{where}.{key}")


def config_or_400(service: Any, xml: Any, project_id: int | None) -> Any:
    """The label config sent in the request (``xml``), else the one stored for ``project_id``;
    400 when the sent one is not usable or none is known."""
    from labelwheel.label_config import UnsupportedConfigError

    if isinstance(xml, str) and xml.strip():
        try:
            return service.parse_config(xml)
        except UnsupportedConfigError as exc:
            fail(400, "unsupported_label_config", str(exc))
        except ValueError as exc:
            fail(400, "invalid_label_config", str(exc))
    if xml is not None and not isinstance(xml, str):
        fail(400, "bad_request", "label_config must be a string of XML")
    config = service.config_for(project_id) if project_id is not None else None
    if config is None:
        fail(
            400,
            "no_label_config",
            "no label config known for this project: send label_config or call /setup first",
        )
    return config
