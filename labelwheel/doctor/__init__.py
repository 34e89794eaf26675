"""``labelwheel doctor``: checks of a project's whole path, each with a pass/fail line and the fix.

In order: Label Studio reachable (URL, version); the API token valid and its kind (legacy or
personal access token, and that a personal access token refreshes); the project readable; its
label config servable; the ML backend registered; Label Studio's own check of that backend
(``GET /api/ml/<id>``: its ``/health`` and ``/setup``); the backend reachable from here; the
webhook present, active and carrying an ``Authorization`` header the backend accepts; then for
each storage of the project and each URL form found in a sample of its tasks, one image fetched
end to end and decoded.

:func:`run_doctor` returns the :class:`Check` list; :func:`exit_code` is 0 when none failed
(warnings and skipped checks allowed) and 1 otherwise. A check that needs an earlier one that
failed is reported as skipped.
"""

from __future__ import annotations

from labelwheel.doctor.backend import (
    check_backend_from_here,
    check_backend_from_label_studio,
    check_ml_backend,
    check_webhook,
)
from labelwheel.doctor.checks import (
    Doctor,
    DoctorOptions,
    check_label_config,
    check_label_studio,
    check_project,
    check_token,
)
from labelwheel.doctor.media import check_media
from labelwheel.doctor.report import (
    FAIL,
    PASS,
    SKIP,
    WARN,
    Check,
    exit_code,
    render_json,
    render_text,
)

__all__ = [
    "FAIL",
    "PASS",
    "SKIP",
    "WARN",
    "Check",
    "DoctorOptions",
    "exit_code",
    "render_json",
    "render_text",
    "run_doctor",
]


def run_doctor(options: DoctorOptions) -> list[Check]:
    """Run every check in order; later checks build on what earlier ones found."""
    doc = Doctor(options)
    checks = [
        check_label_studio(doc),
        check_token(doc),
        check_project(doc),
        check_label_config(doc),
        check_ml_backend(doc),
        check_backend_from_label_studio(doc),
        check_backend_from_here(doc),
        check_webhook(doc),
    ]
    checks.extend(check_media(doc))
    return checks
