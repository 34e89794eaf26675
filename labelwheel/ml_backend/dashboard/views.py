"""``/dashboard``: the HTML page (or the project picker)."""

from __future__ import annotations

import time
from typing import Any

from flask import render_template, request, url_for

from labelwheel.ml_backend import csrf
from labelwheel.ml_backend.dashboard.analysis import _analysis, _forecast, _plan
from labelwheel.ml_backend.dashboard.common import (
    DEFAULT_TARGET,
    DashboardError,
    _client,
    _float_arg,
    _int,
    _ls_errors,
    _project_id,
    _service,
    _store,
    bp,
    log,
)


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
        pool_job=_pool_job(project_id),
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


def _pool_job(project_id: int) -> dict[str, Any] | None:
    """The backend's background pool job of the project (queued / embedding k of N / ranking /
    ready / published / failed), or None when no backend serves this dashboard or none ran."""
    service = _service()
    if service is None:
        return None
    job = service.model.pool_jobs.progress(project_id).get(project_id)
    return dict(job) if job else None


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
