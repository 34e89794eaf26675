"""Read-only views of the model versions: ``/versions`` (JSON) and ``/metrics`` (Prometheus).

A version's details: its CV accuracy, the approvals and corrections of its pre-labels, the
honest accuracy from its random control slice, and whether it serves (with its pool ranking's
progress). Registered on the blueprint of :mod:`labelwheel.ml_backend.plumbing`.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from labelwheel.ml_backend.model import COLD_START_VERSION
from labelwheel.ml_backend.plumbing import bp, current_service, parse_project_id
from labelwheel.ml_backend.store import Version


def _version_details(service: Any, version: Version) -> dict[str, Any]:
    """One version's entry in ``/versions``: accuracy, feedback, honest accuracy, serving."""
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
    """The version's real accuracy from its control slice (plain and by PPI)."""
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
    service = current_service()
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
    service = current_service()
    return Response(
        service.metrics.render(service), mimetype="text/plain; version=0.0.4; charset=utf-8"
    )
