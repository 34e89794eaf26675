"""Prometheus metrics of one backend app (text exposition format 0.0.4, no global registry).

Request counters and latency histograms are kept in memory per app; version, label and
acceptance gauges are read from the store when ``/metrics`` is scraped.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import Any

WEBHOOK_ACTIONS = frozenset(
    {
        # Label Studio 1.23's webhook actions (webhooks.models.WebhookAction) ...
        "PROJECT_CREATED",
        "PROJECT_UPDATED",
        "PROJECT_DELETED",
        "TASKS_CREATED",
        "TASKS_DELETED",
        "ANNOTATION_CREATED",
        "ANNOTATIONS_CREATED",
        "ANNOTATION_UPDATED",
        "ANNOTATIONS_DELETED",
        "LABEL_LINK_CREATED",
        "LABEL_LINK_UPDATED",
        "LABEL_LINK_DELETED",
        # ... the ML connector's training call, and Label Studio Enterprise's review events
        "START_TRAINING",
        "REVIEW_CREATED",
        "REVIEW_UPDATED",
        "REVIEWS_DELETED",
    }
)
"""Webhook actions counted under their own label; any other string counts as ``other``, so a
client cannot create new time series by inventing actions."""

OTHER = "other"

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Request methods counted under their own label (any other token: ``other``)."""

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 100.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, Any]]) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


MAX_LABEL_SERIES = 200
"""Most ``labelwheel_labels`` series per project (the rest are summed under ``other``)."""


def _bounded_labels(service: Any, project_id: int, counts: dict[str, int]) -> list[tuple[str, int]]:
    """Label counts with a bounded number of series: labels the project's config does not have
    (or past :data:`MAX_LABEL_SERIES`) are summed under ``other``."""
    config = service.config_for(project_id) if hasattr(service, "config_for") else None
    known = set(config.labels) if config is not None else None
    out: dict[str, int] = {}
    for label, n in sorted(counts.items()):
        ok = (known is None or label in known) and len(out) < MAX_LABEL_SERIES
        key = label if ok and label != OTHER else OTHER
        out[key] = out.get(key, 0) + n
    return sorted(out.items())


class Metrics:
    """Thread-safe counters and histograms of one app."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = {}
        self.latency_count: dict[str, int] = {}
        self.training_runs: dict[str, int] = {"ok": 0, "failed": 0, "skipped": 0}
        self.webhook_events: dict[str, int] = {}
        self.predictions = 0
        self.prediction_failures = 0
        self.predictions_deferred = 0

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count a request and record its latency (unknown methods count as ``other``)."""
        method = method if method in HTTP_METHODS else OTHER
        with self._lock:
            key = (endpoint, method, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            buckets = self.latency.setdefault(endpoint, [0] * len(BUCKETS))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self.latency_sum[endpoint] = self.latency_sum.get(endpoint, 0.0) + seconds
            self.latency_count[endpoint] = self.latency_count.get(endpoint, 0) + 1

    def count_run(self, status: str) -> None:
        """Count a finished training run by outcome."""
        with self._lock:
            self.training_runs[status] = self.training_runs.get(status, 0) + 1

    def count_event(self, action: str) -> None:
        """Count a webhook event by action (actions Label Studio does not send: ``other``)."""
        action = action if action in WEBHOOK_ACTIONS else OTHER
        with self._lock:
            self.webhook_events[action] = self.webhook_events.get(action, 0) + 1

    def count_predictions(self, total: int, failed: int, deferred: int = 0) -> None:
        """Count predictions returned, those without a result because the image failed, and
        tasks left unanswered when a request ran out of its time budget."""
        with self._lock:
            self.predictions += total
            self.prediction_failures += failed
            self.predictions_deferred += deferred

    def render(self, service: Any) -> str:
        """The exposition text: in-memory metrics plus gauges read from the service's store."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        with self._lock:
            family("labelwheel_requests_total", "counter", "HTTP requests by endpoint and status.")
            for (endpoint, method, status), n in sorted(self.requests.items()):
                lbl = _labels([("endpoint", endpoint), ("method", method), ("status", status)])
                out.append(f"labelwheel_requests_total{lbl} {n}")
            family(
                "labelwheel_request_duration_seconds", "histogram", "Request latency by endpoint."
            )
            for endpoint, buckets in sorted(self.latency.items()):
                for bound, n in zip(BUCKETS, buckets, strict=True):
                    lbl = _labels([("endpoint", endpoint), ("le", _num(bound))])
                    out.append(f"labelwheel_request_duration_seconds_bucket{lbl} {n}")
                count = self.latency_count[endpoint]
                lbl = _labels([("endpoint", endpoint), ("le", "+Inf")])
                out.append(f"labelwheel_request_duration_seconds_bucket{lbl} {count}")
                lbl = _labels([("endpoint", endpoint)])
                out.append(
                    f"labelwheel_request_duration_seconds_sum{lbl} "
                    f"{_num(self.latency_sum[endpoint])}"
                )
                out.append(f"labelwheel_request_duration_seconds_count{lbl} {count}")
            family("labelwheel_training_runs_total", "counter", "Training runs by outcome.")
            for outcome, runs in sorted(self.training_runs.items()):
                lbl = _labels([("status", outcome)])
                out.append(f"labelwheel_training_runs_total{lbl} {runs}")
            family("labelwheel_webhook_events_total", "counter", "Webhook events by action.")
            for action, events in sorted(self.webhook_events.items()):
                lbl = _labels([("action", action)])
                out.append(f"labelwheel_webhook_events_total{lbl} {events}")
            family("labelwheel_predictions_total", "counter", "Predictions returned by /predict.")
            out.append(f"labelwheel_predictions_total {self.predictions}")
            family(
                "labelwheel_prediction_image_failures_total",
                "counter",
                "Predictions left empty because the image could not be fetched or decoded.",
            )
            out.append(f"labelwheel_prediction_image_failures_total {self.prediction_failures}")
            family(
                "labelwheel_predictions_deferred_total",
                "counter",
                "Tasks a /predict left unanswered when it ran out of LABELWHEEL_PREDICT_BUDGET.",
            )
            out.append(f"labelwheel_predictions_deferred_total {self.predictions_deferred}")

        deferred = service.model.deferred
        family(
            "labelwheel_predictions_deferred_pending",
            "gauge",
            "Tasks left for later whose predictions Label Studio has not been asked to retrieve.",
        )
        out.append(f"labelwheel_predictions_deferred_pending {deferred.pending()}")
        family(
            "labelwheel_predictions_deferred_retrieved_total",
            "counter",
            "Tasks left for later whose predictions Label Studio was asked to retrieve.",
        )
        out.append(f"labelwheel_predictions_deferred_retrieved_total {deferred.retrieved}")

        store = service.store
        family(
            "labelwheel_model_version_info",
            "gauge",
            "The version serving each project (value 1), with its number of labels.",
        )
        family_rows: list[str] = []
        labels_rows: list[str] = []
        for project_id in store.project_ids():
            name = service.model.version_name(project_id)
            latest = store.latest_version(project_id)
            n_labels = latest.n_labels if latest is not None else 0
            family_rows.append(
                "labelwheel_model_version_info"
                + _labels([("project", project_id), ("version", name), ("n_labels", n_labels)])
                + " 1"
            )
            for label, n in _bounded_labels(service, project_id, store.label_counts(project_id)):
                labels_rows.append(
                    "labelwheel_labels"
                    + _labels([("project", project_id), ("label", label)])
                    + f" {n}"
                )
        out.extend(family_rows)
        family("labelwheel_labels", "gauge", "Training annotations per project and label.")
        out.extend(labels_rows)
        family(
            "labelwheel_prelabel_feedback_total",
            "gauge",
            "Annotations that approved or corrected a pre-label, by project and model version.",
        )
        rate_rows: list[str] = []
        for (project_id, version), counts in sorted(store.feedback_counts().items()):
            for kind in ("approval", "correction"):
                out.append(
                    "labelwheel_prelabel_feedback_total"
                    + _labels([("project", project_id), ("version", version), ("kind", kind)])
                    + f" {counts.get(kind, 0)}"
                )
            total = counts.get("approval", 0) + counts.get("correction", 0)
            if total:
                rate_rows.append(
                    "labelwheel_prelabel_acceptance_rate"
                    + _labels([("project", project_id), ("version", version)])
                    + f" {_num(counts.get('approval', 0) / total)}"
                )
        family(
            "labelwheel_prelabel_acceptance_rate",
            "gauge",
            "Share of pre-labels approved unchanged, by project and model version.",
        )
        out.extend(rate_rows)
        _render_pool_jobs(service, family, out)
        return "\n".join(out) + "\n"


def _render_pool_jobs(service: Any, family: Any, out: list[str]) -> None:
    """Gauges of each project's background pool ranking (see ``ml_backend.pool_jobs``)."""
    from labelwheel.ml_backend.pool_jobs import STATE_CODES

    jobs = service.model.pool_jobs.progress()
    family(
        "labelwheel_pool_job_state",
        "gauge",
        "Pool ranking per project: 0 queued, 1 listing, 2 embedding, 3 ranking, 4 ready, "
        "5 published, -1 failed.",
    )
    for pid, job in jobs.items():
        code = STATE_CODES.get(job["state"], -1)
        out.append("labelwheel_pool_job_state" + _labels([("project", pid)]) + f" {code}")
    family("labelwheel_pool_job_done", "gauge", "Pool images embedded by the current job.")
    for pid, job in jobs.items():
        out.append("labelwheel_pool_job_done" + _labels([("project", pid)]) + f" {job['done']}")
    family("labelwheel_pool_job_total", "gauge", "Pool images the current job embeds.")
    for pid, job in jobs.items():
        out.append("labelwheel_pool_job_total" + _labels([("project", pid)]) + f" {job['total']}")
    family(
        "labelwheel_pool_provisional_pending",
        "gauge",
        "Predictions answered with a provisional score, not yet replaced by the pool ranking.",
    )
    for pid, job in jobs.items():
        out.append(
            "labelwheel_pool_provisional_pending"
            + _labels([("project", pid)])
            + f" {job['provisional_pending']}"
        )
