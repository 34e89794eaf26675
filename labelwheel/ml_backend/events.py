"""What the backend keeps of a webhook: a small summary, never the raw payload.

Label Studio's ANNOTATION_CREATED/UPDATED carry the whole task, and a task's data can hold a
``data:`` image of many megabytes. The annotation itself is stored in its own table; the events
log (``events`` in :mod:`labelwheel.ml_backend.store`) only needs what explains what happened:
the action, the ids, Label Studio's timestamps, the outcome. :func:`summarize_event` keeps
exactly that, with every string shortened and the whole summary capped at
:data:`MAX_SUMMARY_BYTES`. How long summaries are kept is the store's retention rule
(``LABELWHEEL_EVENTS_MAX`` rows, ``LABELWHEEL_EVENTS_DAYS`` days).

:func:`parse_ls_timestamp` reads Label Studio's ``updated_at`` (ISO 8601, e.g.
``2026-12-07T02:30:00.123456Z``) into integer microseconds since the epoch, the key that orders
annotation updates.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

__all__ = [
    "MAX_STRING",
    "MAX_SUMMARY_BYTES",
    "EventLog",
    "parse_ls_timestamp",
    "summarize_event",
]

MAX_SUMMARY_BYTES = 2048
"""Largest JSON summary stored for one event."""
MAX_STRING = 120
"""Longest string kept in a summary; longer ones become ``"<first chars>…(<n> chars)"``."""

_ANNOTATION_KEYS = (
    "id",
    "task",
    "project",
    "completed_by",
    "updated_by",
    "was_cancelled",
    "ground_truth",
    "lead_time",
    "created_at",
    "updated_at",
    "last_action",
)
_PROJECT_KEYS = ("id", "title", "model_version")
_TASK_KEYS = ("id", "project", "inner_id", "created_at", "updated_at")


def parse_ls_timestamp(value: Any) -> int | None:
    """Label Studio's ``updated_at`` as microseconds since the epoch; None when absent.

    Raises ``ValueError`` for a value that is present but not an ISO 8601 timestamp. A
    timestamp without a zone is read as UTC (Label Studio stores UTC).
    """
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise ValueError(f"not an ISO 8601 timestamp: {str(value)[:80]!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 timestamp: {value[:80]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _short(value: Any) -> Any:
    """A scalar kept as is; a long string shortened; anything else described by its size."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if len(value) <= MAX_STRING:
            return value
        return value[:40] + f"…({len(value)} chars)"
    if isinstance(value, dict):
        return f"<object, {len(value)} keys>"
    if isinstance(value, list):
        return f"<list, {len(value)} items>"
    return f"<{type(value).__name__}>"


def _pick(obj: Any, keys: tuple[str, ...]) -> Any:
    if not isinstance(obj, dict):
        return _short(obj)
    out = {}
    for key in keys:
        if key in obj:
            value = obj[key]
            if isinstance(value, dict) and "id" in value:  # a nested reference: its id
                value = value["id"]
            out[key] = _short(value)
    return out


def _choices(result: Any) -> list[Any]:
    """The chosen values of an annotation result (labels are short; images are not here)."""
    out: list[Any] = []
    if not isinstance(result, list):
        return out
    for item in result[:10]:
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(value, dict):
            continue
        for key in ("choices", "labels", "rectanglelabels", "polygonlabels", "taxonomy"):
            if isinstance(value.get(key), list):
                out.extend(_short(v) for v in value[key][:10])
    return out[:20]


def summarize_event(action: str, payload: Any, **extra: Any) -> str:
    """The JSON summary of one webhook that the events log keeps (at most
    :data:`MAX_SUMMARY_BYTES` bytes). ``extra`` (e.g. ``outcome="stale"``) is added as is."""
    summary: dict[str, Any] = {"action": _short(action)}
    if isinstance(payload, dict):
        if "annotation" in payload:
            annotation = payload["annotation"]
            summary["annotation"] = _pick(annotation, _ANNOTATION_KEYS)
            if isinstance(annotation, dict):
                summary["choices"] = _choices(annotation.get("result"))
        if "annotations" in payload:
            items = payload["annotations"]
            if isinstance(items, list):
                ids = [_short(i.get("id")) if isinstance(i, dict) else _short(i) for i in items]
                summary["annotations"] = ids[:50]
                summary["n_annotations"] = len(items)
            else:
                summary["annotations"] = _short(items)
        if "project" in payload:
            summary["project"] = _pick(payload["project"], _PROJECT_KEYS)
        if "task" in payload:
            summary["task"] = _pick(payload["task"], _TASK_KEYS)
        if "tasks" in payload:
            tasks = payload["tasks"]
            summary["n_tasks"] = len(tasks) if isinstance(tasks, list) else _short(tasks)
        for key, value in payload.items():
            if key not in summary and key not in ("action",) and len(summary) < 24:
                if value is None or isinstance(value, bool | int | float | str):
                    summary[key] = _short(value)
    summary.update({k: _short(v) for k, v in extra.items()})
    text = json.dumps(summary, ensure_ascii=False)
    if len(text.encode("utf-8")) > MAX_SUMMARY_BYTES:  # many long keys: ids and action only
        keep = ("action", "annotation", "project", "task")
        small: dict[str, Any] = {k: summary[k] for k in keep if k in summary}
        small.update({k: _short(v) for k, v in extra.items()})
        small["truncated"] = True
        text = json.dumps(small, ensure_ascii=False)
        if len(text.encode("utf-8")) > MAX_SUMMARY_BYTES:
            text = json.dumps({"action": _short(action), "truncated": True})
    return text


class EventLog:
    """The events table of the store: summaries only, pruned by the retention rule (a mixin of
    :class:`labelwheel.ml_backend.store.Store`, which provides the connection)."""

    _events_max: int | None = None
    _events_max_age: float | None = None
    _events_since_prune = 0

    if TYPE_CHECKING:  # provided by Store

        def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]: ...

    def configure_events(self, max_rows: int | None, max_age_s: float | None) -> None:
        """The events log's retention rule: keep at most ``max_rows`` events (0 = log none) and
        none older than ``max_age_s`` seconds; None = no limit. The row limit holds at every
        insert; the age limit is applied now and every 200 events."""
        self._events_max = max_rows
        self._events_max_age = max_age_s
        self.prune_events()

    def _log_event(
        self,
        conn: sqlite3.Connection,
        action: str,
        project_id: int | None,
        payload: Any,
        now: float,
        **extra: Any,
    ) -> None:
        if self._events_max == 0:
            return
        cur = conn.execute(
            "INSERT INTO events (received, action, project_id, payload) VALUES (?,?,?,?)",
            (now, action[:64], project_id, summarize_event(action, payload, **extra)),
        )
        if self._events_max is not None and cur.lastrowid is not None:
            # ids only grow: everything up to the newest id - max goes (usually one row)
            conn.execute("DELETE FROM events WHERE id <= ?", (cur.lastrowid - self._events_max,))
        self._events_since_prune += 1

    def _maybe_prune(self) -> None:
        if self._events_since_prune >= 200:  # the age rule, now and then
            self.prune_events()

    def prune_events(self) -> int:
        """Apply the retention rule now; returns how many events were deleted."""
        self._events_since_prune = 0
        removed = 0
        if self._events_max is None and self._events_max_age is None:
            return 0
        with self.transaction() as conn:
            if self._events_max is not None:
                cur = conn.execute(
                    "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?",
                    (self._events_max,),
                )
                removed += int(cur.rowcount)
            if self._events_max_age is not None:
                cur = conn.execute(
                    "DELETE FROM events WHERE received < ?", (time.time() - self._events_max_age,)
                )
                removed += int(cur.rowcount)
        return removed

    def compact_events(self, max_bytes: int = 4096) -> int:
        """Replace logged payloads larger than ``max_bytes`` (raw webhooks stored by earlier
        releases) with their summaries; returns how many rows were rewritten."""
        rows = self.query(
            "SELECT id FROM events WHERE length(CAST(payload AS BLOB)) > ?", (max_bytes,)
        )
        for start in range(0, len(rows), 100):
            with self.transaction() as conn:
                for row in rows[start : start + 100]:
                    got = conn.execute(
                        "SELECT action, payload FROM events WHERE id = ?", (row[0],)
                    ).fetchone()
                    try:
                        payload = json.loads(got[1])
                    except ValueError:
                        payload = None
                    conn.execute(
                        "UPDATE events SET payload = ? WHERE id = ?",
                        (summarize_event(str(got[0]), payload, compacted=True), row[0]),
                    )
        return len(rows)

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest logged events (summaries), newest first."""
        rows = self.query("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]

    def record_event(self, action: str, project_id: int | None, payload: dict[str, Any]) -> None:
        """Log a webhook's summary (never its raw payload)."""
        with self.transaction() as conn:
            self._log_event(conn, action, project_id, payload, time.time())
        self._maybe_prune()

    def event_count(self, action: str | None = None) -> int:
        """How many webhook events were logged (of one action, or all)."""
        if action is None:
            return int(self.query("SELECT COUNT(*) FROM events")[0][0])
        return int(self.query("SELECT COUNT(*) FROM events WHERE action = ?", (action,))[0][0])
