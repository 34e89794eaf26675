"""The dashboard's blueprint and what every endpoint shares: where Label Studio is, the store,
request arguments (clear 4xx errors) and the error pages."""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request

from labelwheel.ml_backend.validate import BadInput, parse_id_text, parse_json_object

log = logging.getLogger("labelwheel.dashboard")

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/dashboard/static",
    root_path=str(Path(__file__).resolve().parent.parent),  # ml_backend/templates, /static
)

STATE_KEY = "labelwheel_dashboard"
DEFAULT_TARGET = 0.95


class DashboardError(Exception):
    """A request the dashboard cannot serve: answered with ``status`` and a message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.project_locks: dict[int, threading.Lock] = {}
        self.analyses: dict[int, Any] = {}


def _state(app: Flask) -> _State:
    state = app.extensions.get(STATE_KEY)
    if state is None:
        state = app.extensions.setdefault(STATE_KEY, _State())
    assert isinstance(state, _State)
    return state


def _service() -> Any:
    return current_app.extensions.get("labelwheel")


def _settings() -> dict[str, Any]:
    """Where Label Studio is and how to embed: the backend's settings, else config/env."""
    conf = dict(current_app.config.get("LABELWHEEL_DASHBOARD") or {})
    service = _service()
    if service is not None:
        s = service.settings
        return {
            "backbone": s.backbone,
            "image_size": s.image_size,
            "cache_dir": s.model_dir,
            "model_dir": s.model_dir,
            **conf,
        }
    return {
        "url": conf.get("url") or os.environ.get("LABEL_STUDIO_URL"),
        "api_key": conf.get("api_key") or os.environ.get("LABEL_STUDIO_API_KEY"),
        "model_dir": conf.get("model_dir") or os.environ.get("MODEL_DIR"),
        "cache_dir": conf.get("cache_dir"),
        "backbone": conf.get("backbone")
        or os.environ.get("LABELWHEEL_BACKBONE", "efficientnet-lite0"),
        "image_size": int(
            str(conf.get("image_size") or os.environ.get("LABELWHEEL_IMAGE_SIZE", "224"))
        ),
    }


def _client() -> Any:
    service = _service()
    if service is not None:
        client = service.link.client()
        if client is not None:
            return client
    conf = _settings()
    if not conf.get("url") or not conf.get("api_key"):
        raise DashboardError(
            "Label Studio is unknown: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (or connect "
            "the backend to a project first)",
            503,
        )
    from labelwheel.ls_api import LabelStudioClient

    return LabelStudioClient(str(conf["url"]), str(conf["api_key"]))


def _store() -> Any:
    service = _service()
    if service is not None:
        return service.store
    from labelwheel.lead.sources import open_store

    return open_store(_settings().get("model_dir"))


def _json_body() -> dict[str, Any] | None:
    """The JSON object posted (None when the body is not JSON); DashboardError if malformed,
    nested too deep or not an object."""
    if not request.is_json:
        return None
    try:
        return parse_json_object(request.get_data(cache=True))
    except BadInput as exc:
        raise DashboardError(exc.message) from None


def _project_id(required: bool = True) -> int | None:
    raw = request.values.get("project")
    if raw is None and request.is_json:
        raw = (_json_body() or {}).get("project")
    if raw in (None, ""):
        store = _store()
        ids = store.project_ids() if store is not None else []
        if len(ids) == 1:
            return int(ids[0])
        if required:
            raise DashboardError("which project? add ?project=ID")
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        raise DashboardError(f"project must be a number, got {raw!r}"[:200])
    try:
        pid = parse_id_text(raw, "project")
    except BadInput as exc:
        raise DashboardError(exc.message) from None
    if pid < 1:
        raise DashboardError("project must be a positive number")
    return pid


def _float_arg(name: str, default: float | None, low: float, high: float) -> float | None:
    raw = request.values.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(str(raw))
    except ValueError:
        raise DashboardError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise DashboardError(f"{name} must be between {low:g} and {high:g}, got {raw}")
    return value


def _int(raw: Any, name: str) -> int:
    text = str(raw).strip()
    if not re.fullmatch(r"-?[0-9]{1,18}", text):
        raise DashboardError(f"{name} must be a whole number, got {raw!r}"[:200])
    value = int(text)
    if value < 1:
        raise DashboardError(f"{name} must be at least 1, got {value}")
    return value


def _require_project() -> int:
    pid = _project_id()
    assert pid is not None
    return pid


# --------------------------------------------------------------------------- error handling


@bp.errorhandler(DashboardError)
def _dashboard_error(exc: DashboardError) -> tuple[Response, int] | tuple[str, int]:
    form_post = request.method == "POST" and request.mimetype in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    )  # the page's own form: answer with a page a person can read
    if not form_post and (
        request.path.startswith("/dashboard/api")
        or request.is_json
        or request.path.endswith(".png")
    ):
        return jsonify({"status": "error", "message": exc.message}), exc.status
    return render_template("dashboard_error.html", message=exc.message), exc.status


def _ls_errors(func: Any) -> Any:
    """Label Studio trouble becomes a 502 with a message, never a 500."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import requests

        try:
            return func(*args, **kwargs)
        except DashboardError:
            raise
        except requests.RequestException as exc:
            raise DashboardError(f"cannot reach Label Studio: {exc}", 502) from None
        except RuntimeError as exc:
            if type(exc).__name__ == "LabelStudioError":
                text = str(exc)
                status = 404 if " 404" in text else 502
                raise DashboardError(text, status) from None
            raise

    return wrapper
