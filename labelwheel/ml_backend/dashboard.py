"""``/dashboard``: the data lead's page, served by the ML backend behind the same basic auth.

Read-only views of one Label Studio project: coverage map, learning curve with the forecast,
budget planner, pre-label acceptance per version and class balance, drawn as PNGs (matplotlib,
Agg; no JavaScript library, no CDN). The planner's "write view" button is the one write: it saves
the Data Manager view "labelwheel: next N" exactly as ``labelwheel plan`` does.

The backend service (``current_app.extensions["labelwheel"]``) provides Label Studio's URL and
key, the store (model versions, acceptance) and the embedding cache. Without it (the blueprint in
a plain Flask app) the dashboard reads Label Studio directly with
``app.config["LABELWHEEL_DASHBOARD"]`` (keys ``url``, ``api_key``, ``cache_dir``, ``model_dir``,
``backbone``, ``image_size``) or the environment (``LABEL_STUDIO_URL``,
``LABEL_STUDIO_API_KEY``, ``MODEL_DIR``, ...).

Endpoints (all GET but the planner write):

=====================================  ============================================================
``/dashboard``                          HTML page (``?project=ID&target=0.95&budget=N&strategy=S``)
``/dashboard/api/summary``              JSON: report, clusters, forecast, acceptance
``/dashboard/api/plan``                 JSON: the picks for ``budget`` (nothing written)
``POST /dashboard/api/plan``            write the view; JSON body or form ``project, budget, ...``
                                        with a CSRF token (:mod:`labelwheel.ml_backend.csrf`)
``/dashboard/api/csrf``                 JSON: ``{"csrf_token": ...}`` for scripts that write
``/dashboard/coverage.png`` etc.        the plots: coverage, forecast, balance, acceptance
=====================================  ============================================================
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from labelwheel.ml_backend import csrf
from labelwheel.ml_backend.validate import BadInput, parse_id_text, parse_json_object

log = logging.getLogger("labelwheel.dashboard")

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/dashboard/static",
)

CACHE_SECONDS = 300.0
STATE_KEY = "labelwheel_dashboard"
DEFAULT_TARGET = 0.95


class DashboardError(Exception):
    """A request the dashboard cannot serve: answered with ``status`` and a message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Analysis:
    """Everything the page shows for one project, computed once and cached for a while."""

    project_id: int
    title: str
    computed: float
    pool: Any
    coverage: Any
    report: Any
    history: list[Any]
    history_kind: str
    pngs: dict[str, bytes] = field(default_factory=dict)


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.project_locks: dict[int, threading.Lock] = {}
        self.analyses: dict[int, Analysis] = {}


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


def _embedder(service: Any) -> Any:
    """Embed through the backend's model (its fetch policy and cache), if it runs here."""
    return None if service is None else service.model.embed_refs


def _analysis(project_id: int, refresh: bool = False) -> Analysis:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state = _state(app)
    with state.lock:
        plock = state.project_locks.setdefault(project_id, threading.Lock())
    with plock:
        cached = state.analyses.get(project_id)
        if cached and not refresh and time.time() - cached.computed < CACHE_SECONDS:
            return cached
        analysis = _compute(project_id)
        with state.lock:
            state.analyses[project_id] = analysis
        return analysis


def _compute(project_id: int) -> Analysis:
    from labelwheel.lead.coverage import analyse_coverage
    from labelwheel.lead.report import build_report
    from labelwheel.lead.sources import acceptance_rows, accuracy_history
    from labelwheel.pool import default_cache_dir, load_project_pool

    conf = _settings()
    client = _client()
    store = _store()
    try:
        pool = load_project_pool(
            client,
            project_id,
            backbone=str(conf["backbone"]),
            image_size=int(conf["image_size"]),
            cache_dir=Path(conf["cache_dir"]) if conf.get("cache_dir") else default_cache_dir(),
            embed=_embedder(_service()),
        )
    except ValueError as exc:
        status = 404 if "not found" in str(exc) else 400
        raise DashboardError(str(exc), status) from None
    coverage = analyse_coverage(pool)
    report = build_report(pool, coverage=coverage, acceptance=acceptance_rows(pool, store))
    history, kind = accuracy_history(pool, store)
    return Analysis(
        project_id=project_id,
        title=pool.source,
        computed=time.time(),
        pool=pool,
        coverage=coverage,
        report=report,
        history=history,
        history_kind=kind,
    )


def _forecast(analysis: Analysis, target: float) -> Any:
    from labelwheel.lead.forecast import forecast_labels

    return forecast_labels(analysis.history, target, current_labels=analysis.pool.n_labeled)


def _plan(analysis: Analysis, budget: int, strategy: str | None, cost: float | None) -> Any:
    from labelwheel.lead.plan import make_plan

    service = _service()
    if not strategy and service is not None:
        strategy = getattr(service.settings, "strategy", None)  # the backend's configured one
    try:
        return make_plan(analysis.pool, budget, strategy=strategy or None, cost_per_label=cost)
    except ValueError as exc:
        raise DashboardError(str(exc)) from None


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


# --------------------------------------------------------------------------- pages


@bp.get("/dashboard")
@_ls_errors
def page() -> Any:
    """The HTML dashboard."""
    project_id = _project_id(required=False)
    if project_id is None:
        return render_template("dashboard_pick.html", projects=_known_projects())
    target = _float_arg("target", DEFAULT_TARGET, 0.01, 0.999) or DEFAULT_TARGET
    analysis = _analysis(project_id, refresh=request.args.get("refresh") == "1")
    forecast = _forecast(analysis, target)
    plan = None
    plan_error = None
    budget_raw = request.args.get("budget")
    strategy = request.args.get("strategy") or None
    cost = None
    if budget_raw:
        try:
            cost = _float_arg("cost_per_label", None, 0.0, 1e9)
            plan = _plan(analysis, _int(budget_raw, "budget"), strategy, cost)
        except DashboardError as exc:
            plan_error = exc.message
    from labelwheel import selectors

    stamp = int(analysis.computed)
    return render_template(
        "dashboard.html",
        a=analysis,
        rep=analysis.report,
        cov=analysis.coverage,
        forecast=forecast,
        target=target,
        plan=plan,
        plan_error=plan_error,
        budget=budget_raw or "",
        strategy=strategy or "",
        cost=cost,
        strategies=sorted(selectors.STRATEGIES),
        written=request.args.get("written"),
        csrf_token=csrf.new_token(),
        computed_at=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(analysis.computed)),
        img=lambda name, **extra: url_for(
            f"dashboard.{name}_png", project=analysis.project_id, v=stamp, **extra
        ),
    )


def _known_projects() -> list[tuple[int, str]]:
    """(id, title) of the projects the backend has seen, else those Label Studio lists."""
    store = _store()
    ids = [int(i) for i in store.project_ids()] if store is not None else []
    titles: dict[int, str] = {}
    try:
        titles = {int(p["id"]): str(p.get("title") or "") for p in _client().list_projects()}
    except Exception as exc:  # the picker still works with ids typed by hand
        log.info("cannot list Label Studio projects: %s", exc)
    if not ids:
        ids = sorted(titles)
    return [(i, titles.get(i, "")) for i in ids]


def _int(raw: Any, name: str) -> int:
    text = str(raw).strip()
    if not re.fullmatch(r"-?[0-9]{1,18}", text):
        raise DashboardError(f"{name} must be a whole number, got {raw!r}"[:200])
    value = int(text)
    if value < 1:
        raise DashboardError(f"{name} must be at least 1, got {value}")
    return value


# --------------------------------------------------------------------------- JSON


@bp.get("/dashboard/api/summary")
@_ls_errors
def summary() -> Any:
    """Report, clusters, forecast and acceptance of a project as JSON."""
    project_id = _project_id()
    assert project_id is not None
    target = _float_arg("target", DEFAULT_TARGET, 0.01, 0.999) or DEFAULT_TARGET
    a = _analysis(project_id, refresh=request.args.get("refresh") == "1")
    return jsonify(
        {
            "project": project_id,
            "source": a.title,
            "computed": a.computed,
            "report": a.report.to_dict(),
            "coverage": a.coverage.to_dict(a.pool),
            "forecast": {**_forecast(a, target).to_dict(), "history": a.history_kind},
        }
    )


@bp.get("/dashboard/api/plan")
@_ls_errors
def plan_preview() -> Any:
    """The picks for a budget; nothing is written."""
    project_id = _project_id()
    assert project_id is not None
    a = _analysis(project_id)
    cost = _float_arg("cost_per_label", None, 0.0, 1e9)
    plan = _plan(a, _int(request.args.get("budget"), "budget"), request.args.get("strategy"), cost)
    return jsonify({"project": project_id, **plan.to_dict()})


@bp.get("/dashboard/api/csrf")
def csrf_token() -> Any:
    """A CSRF token for scripts that POST (valid for this user for csrf.TOKEN_SECONDS)."""
    return jsonify({"csrf_token": csrf.new_token(), "expires_in": csrf.TOKEN_SECONDS})


@bp.post("/dashboard/api/plan")
@_ls_errors
def plan_write() -> Any:
    """Write the view "labelwheel: next N" for the posted budget (the dashboard's one write)."""
    from labelwheel.lead.plan import write_plan_view

    body = _json_body()
    values: dict[str, Any] = dict(body if body is not None else request.form)
    token = request.headers.get(csrf.TOKEN_HEADER) or values.get(csrf.TOKEN_FIELD)
    refused = csrf.refusal(token if isinstance(token, str) else None)
    if refused is not None:
        raise DashboardError(refused, 403)
    project_id = _project_id()
    assert project_id is not None
    budget = _int(values.get("budget"), "budget")
    strategy = values.get("strategy") or None
    cost_raw = values.get("cost_per_label")
    cost = None
    if cost_raw not in (None, ""):
        try:
            cost = float(str(cost_raw))
        except ValueError:
            raise DashboardError("cost_per_label must be a number") from None
        if not math.isfinite(cost) or cost < 0:
            raise DashboardError("cost_per_label must be a non-negative number")
    # Fresh data: the view must hold tasks that are unlabelled now.
    a = _analysis(project_id, refresh=True)
    plan = _plan(a, budget, strategy, cost)
    view = write_plan_view(_client(), project_id, plan, a.pool.tasks)
    if request.is_json:
        return jsonify(
            {
                "project": project_id,
                "view": {"id": view.get("id"), "title": plan.view_title},
                **plan.to_dict(),
            }
        )
    query = {"project": project_id, "budget": budget, "written": plan.view_title}
    if strategy:
        query["strategy"] = strategy
    if cost is not None:
        query["cost_per_label"] = cost
    return redirect(url_for("dashboard.page") + "?" + urlencode(query) + "#planner", code=303)


# --------------------------------------------------------------------------- plots


def _png(data: bytes) -> Response:
    resp = Response(data, mimetype="image/png")
    resp.headers["Cache-Control"] = "private, max-age=60"
    return resp


def _cached_png(a: Analysis, key: str, make: Any) -> Response:
    data = a.pngs.get(key)
    if data is None:
        data = make()
        a.pngs[key] = data
    return _png(data)


@bp.get("/dashboard/coverage.png")
@_ls_errors
def coverage_png() -> Response:
    """The coverage map."""
    from labelwheel.lead.coverage import render_coverage_png

    a = _analysis(_require_project())
    return _cached_png(a, "coverage", lambda: render_coverage_png(a.coverage, title="Coverage map"))


@bp.get("/dashboard/forecast.png")
@_ls_errors
def forecast_png() -> Response:
    """The learning curve with the forecast for ``target``."""
    from labelwheel.lead.forecast import render_forecast_png

    a = _analysis(_require_project())
    target = _float_arg("target", DEFAULT_TARGET, 0.01, 0.999) or DEFAULT_TARGET
    return _cached_png(a, f"forecast-{target}", lambda: render_forecast_png(_forecast(a, target)))


@bp.get("/dashboard/balance.png")
@_ls_errors
def balance_png() -> Response:
    """Class balance as a bar chart."""
    a = _analysis(_require_project())
    counts = a.report.class_balance
    return _cached_png(
        a,
        "balance",
        lambda: _bar_png(
            list(counts), [float(v) for v in counts.values()], "labels", "Class balance"
        ),
    )


@bp.get("/dashboard/acceptance.png")
@_ls_errors
def acceptance_png() -> Response:
    """Pre-label acceptance rate per model version."""
    a = _analysis(_require_project())
    rows = a.report.acceptance
    return _cached_png(
        a,
        "acceptance",
        lambda: _bar_png(
            [r.version for r in rows],
            [float(r.rate or 0.0) for r in rows],
            "accepted unchanged",
            "Pre-label acceptance per version",
            percent=True,
            notes=[f"n={r.total}" for r in rows],
        ),
    )


def _require_project() -> int:
    pid = _project_id()
    assert pid is not None
    return pid


def _bar_png(
    names: list[str],
    values: list[float],
    ylabel: str,
    title: str,
    *,
    percent: bool = False,
    notes: list[str] | None = None,
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if names:
        bars = ax.bar(range(len(names)), values, color="#1f5fbf")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(
            names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center"
        )
        for i, bar in enumerate(bars):
            text = f"{values[i]:.0%}" if percent else f"{values[i]:g}"
            if notes:
                text += f"\n{notes[i]}"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        if percent:
            ax.set_ylim(0, 1.15)
    else:
        ax.text(
            0.5, 0.5, "nothing yet", ha="center", va="center", transform=ax.transAxes, color="#777"
        )
        ax.set_xticks([])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    buf = BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
