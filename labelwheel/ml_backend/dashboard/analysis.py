"""What the page shows for one project, computed once and cached for :data:`CACHE_SECONDS`:
the pool, coverage, report and accuracy history; the forecast and plans derived from them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import current_app

from labelwheel.ml_backend.dashboard.common import (
    DashboardError,
    _client,
    _service,
    _settings,
    _state,
    _store,
)

CACHE_SECONDS = 300.0


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
    audit: Any = None
    """The audit of :func:`_audit`, computed on first request (not with the page)."""
    audit_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


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
    from labelwheel.lead.honest import estimate_versions
    from labelwheel.lead.lift import pool_lift
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
    has_control = store is not None and hasattr(store, "control_feedback")
    confidence = store.control_confidence(project_id) if has_control else None
    honest = (
        estimate_versions(store.control_feedback(project_id), confidence) if has_control else None
    )
    report = build_report(
        pool,
        coverage=coverage,
        acceptance=acceptance_rows(pool, store),
        honest=honest,
        honest_confidence=confidence,
        al_lift=pool_lift(pool, store.labelling_order(project_id)) if has_control else None,
    )
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


def _audit(analysis: Analysis) -> Any:
    """:func:`labelwheel.lead.audit.audit_pool` on the analysis' pool, computed once per analysis.

    Held-out tasks follow the audit's convention (data field ``split`` = test, holdout,
    validation...: :func:`labelwheel.lead.audit_io.holdout_mask`). Too few labels or a
    multi-label project is a DashboardError (400) with the audit's message.
    """
    from labelwheel.lead.audit import audit_pool
    from labelwheel.lead.audit_io import annotator_labels, holdout_mask

    with analysis.audit_lock:
        if analysis.audit is None:
            pool = analysis.pool
            held = holdout_mask(pool)
            try:
                analysis.audit = audit_pool(
                    pool,
                    annotator_labels=annotator_labels(pool),
                    holdout=held if held.any() else None,
                )
            except ValueError as exc:
                raise DashboardError(str(exc)) from None
        return analysis.audit
