"""``/dashboard/api/...``: the JSON endpoints (summary, planner preview and write, CSRF token,
the audit's suspects)."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

from flask import jsonify, redirect, request, url_for

from labelwheel.ml_backend import csrf
from labelwheel.ml_backend.dashboard.analysis import _analysis, _audit, _forecast, _plan
from labelwheel.ml_backend.dashboard.common import (
    DEFAULT_TARGET,
    DashboardError,
    _client,
    _float_arg,
    _int,
    _json_body,
    _ls_errors,
    _project_id,
    bp,
)


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


AUDIT_LIMIT = 20
"""Suspects the audit endpoint returns unless ``limit`` says otherwise (at most 500)."""


@bp.get("/dashboard/api/audit")
@_ls_errors
def audit() -> Any:
    """The audit's suspects (top ``limit``, most suspicious first) and its summary; nothing is
    written (``labelwheel audit`` writes the Label Studio view)."""
    project_id = _project_id()
    assert project_id is not None
    limit = _int(request.args.get("limit") or AUDIT_LIMIT, "limit")
    if limit > 500:
        raise DashboardError(f"limit must be at most 500, got {limit}")
    a = _analysis(project_id, refresh=request.args.get("refresh") == "1")
    data = _audit(a).to_dict()
    suspects = data.pop("suspects")
    return jsonify(
        {
            "project": project_id,
            "computed": a.computed,
            **data,
            "suspects_total": len(suspects),
            "suspects": suspects[:limit],
        }
    )
