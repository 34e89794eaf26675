"""What ``labelwheel doctor`` reports: one :class:`Check` per line, as text or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "FAIL",
    "PASS",
    "SKIP",
    "STATUSES",
    "WARN",
    "Check",
    "exit_code",
    "render_json",
    "render_text",
]

PASS = "pass"
WARN = "warn"
FAIL = "fail"
SKIP = "skip"
STATUSES = (PASS, WARN, FAIL, SKIP)


@dataclass
class Check:
    """The outcome of one check.

    ``name`` is stable (for scripts: ``label_studio``, ``token``, ``storage:localfiles:3``,
    ``media:upload`` ...); ``title`` and ``message`` are for people; ``fix`` says what to do when
    the status is ``fail`` or ``warn``; ``details`` holds the facts measured.
    """

    name: str
    title: str
    status: str
    message: str
    fix: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    @property
    def failed(self) -> bool:
        """True for a failed check (the command then exits 1)."""
        return self.status == FAIL

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def exit_code(checks: Sequence[Check]) -> int:
    """0 when no check failed (warnings and skips allowed), else 1."""
    return 1 if any(c.failed for c in checks) else 0


_TAGS = {PASS: "PASS", WARN: "WARN", FAIL: "FAIL", SKIP: "SKIP"}


def render_text(checks: Sequence[Check]) -> str:
    """One line per check (``[PASS] title: message``), with an indented ``fix:`` line under each
    failure or warning, and a summary line."""
    lines: list[str] = []
    for check in checks:
        lines.append(f"[{_TAGS[check.status]}] {check.title}: {check.message}")
        if check.fix and check.status in (FAIL, WARN):
            lines.append(f"       fix: {check.fix}")
    counts = {s: sum(1 for c in checks if c.status == s) for s in STATUSES}
    verdict = "some checks failed" if exit_code(checks) else "all checks passed"
    lines.append(
        f"{verdict}: {counts[PASS]} passed, {counts[WARN]} warnings, {counts[FAIL]} failed, "
        f"{counts[SKIP]} skipped"
    )
    return "\n".join(lines)


def render_json(checks: Sequence[Check]) -> str:
    """``{"ok": bool, "checks": [...]}`` as one JSON document."""
    return json.dumps(
        {"ok": exit_code(checks) == 0, "checks": [c.to_dict() for c in checks]}, indent=2
    )
