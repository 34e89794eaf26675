"""The first checks of ``labelwheel doctor`` (Label Studio, token, project, label config) and
the state all checks share.

Each ``check_*`` function takes the shared :class:`Doctor` state, returns one
:class:`~labelwheel.doctor.report.Check` and records what later checks need (the client, the
project, the parsed label config). Nothing here changes Label Studio.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from labelwheel.doctor.report import FAIL, PASS, SKIP, Check
from labelwheel.ls_api import LabelStudioClient, LabelStudioError, is_legacy_token

__all__ = [
    "Doctor",
    "DoctorOptions",
    "check_label_config",
    "check_label_studio",
    "check_project",
    "check_token",
    "short_error",
    "skipped",
]

# Label Studio's MLBackendState codes (ml/models.py)


@dataclass(frozen=True)
class DoctorOptions:
    """What to check, and the settings the backend runs with (same variables as the backend)."""

    ls_url: str
    api_key: str
    project_id: int
    backend_url: str | None = None
    basic_auth: tuple[str, str] | None = None
    local_files_root: Path | None = None
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    max_image_bytes: int = 20 * 2**20
    max_image_pixels: int = 40_000_000
    sample_tasks: int = 500
    timeout: float = 10.0


@dataclass
class Doctor:
    """What the checks found so far (later checks build on earlier ones)."""

    options: DoctorOptions
    ls_up: bool = False
    client: LabelStudioClient | None = None
    token_ok: bool = False
    project: dict[str, Any] | None = None
    config: Any = None  # labelwheel.label_config.ClassificationConfig
    ml_backend: dict[str, Any] | None = None
    backend_url: str | None = None
    backend_up: bool = False

    @property
    def ls_url(self) -> str:
        """Label Studio's base URL, without a trailing slash."""
        return self.options.ls_url.strip().rstrip("/")


def skipped(name: str, title: str, why: str) -> Check:
    """A check not run because an earlier one failed."""
    return Check(name, title, SKIP, f"not checked: {why}")


def short_error(exc: BaseException) -> str:
    """An exception as one short line."""
    text = str(exc) or exc.__class__.__name__
    return text if len(text) <= 300 else text[:297] + "..."


# -- Label Studio and the token -----------------------------------------------------------------


def check_label_studio(doc: Doctor) -> Check:
    """``GET /health`` and ``GET /api/version``: Label Studio answers, and which release."""
    name, title = "label_studio", "Label Studio reachable"
    url = doc.ls_url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return Check(
            name,
            title,
            FAIL,
            f"{url!r} is not an http(s) URL",
            fix="pass --url http://HOST:PORT (or set LABEL_STUDIO_URL) to Label Studio's address",
        )
    timeout = doc.options.timeout
    try:
        resp = requests.get(f"{url}/health", timeout=timeout)
    except requests.RequestException as exc:
        return Check(
            name,
            title,
            FAIL,
            f"no answer from {url} ({exc.__class__.__name__})",
            fix="start Label Studio (`label-studio start`) or correct --url / LABEL_STUDIO_URL",
            details={"url": url},
        )
    if resp.status_code != 200:
        return Check(
            name,
            title,
            FAIL,
            f"GET {url}/health answered HTTP {resp.status_code}",
            fix="check that --url / LABEL_STUDIO_URL points at Label Studio itself (no path)",
            details={"url": url, "status": resp.status_code},
        )
    version = None
    try:
        body = requests.get(f"{url}/api/version", timeout=timeout).json()
        release = body.get("release") if isinstance(body, dict) else None
        version = str(release) if release else None
    except (requests.RequestException, ValueError):
        version = None
    doc.ls_up = True
    return Check(
        name,
        title,
        PASS,
        f"{url} answers (Label Studio {version or 'version unknown'})",
        details={"url": url, "version": version},
    )


def _refresh(url: str, refresh_token: str, timeout: float) -> tuple[str | None, str]:
    """Exchange a personal access token for an access token; (access, error message)."""
    try:
        resp = requests.post(
            f"{url}/api/token/refresh/", json={"refresh": refresh_token}, timeout=timeout
        )
    except requests.RequestException as exc:
        return None, f"POST /api/token/refresh/ failed ({exc.__class__.__name__})"
    if resp.status_code != 200:
        return None, f"POST /api/token/refresh/ answered HTTP {resp.status_code}"
    try:
        access = resp.json().get("access")
    except (ValueError, AttributeError):
        access = None
    if not isinstance(access, str) or not access:
        return None, "POST /api/token/refresh/ gave no access token"
    return access, ""


def _jwt_claims(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def check_token(doc: Doctor) -> Check:
    """The API key is valid; which kind it is; for a personal access token, that it refreshes."""
    name, title = "token", "API token valid"
    if not doc.ls_up:
        return skipped(name, title, "Label Studio is not reachable")
    key = doc.options.api_key.strip()
    url, timeout = doc.ls_url, doc.options.timeout
    legacy = is_legacy_token(key)
    kind = "legacy token" if legacy else "personal access token"
    details: dict[str, Any] = {"kind": "legacy" if legacy else "personal_access_token"}
    if legacy:
        headers = {"Authorization": f"Token {key}"}
        fix = (
            "copy the token again from Label Studio (Account & Settings > Legacy Token); if your "
            "organisation turned legacy tokens off, create a personal access token and use it"
        )
    else:
        access, error = _refresh(url, key, timeout)
        if access is None:
            return Check(
                name,
                title,
                FAIL,
                f"the key is not a 40-hex legacy token, and as a personal access token it does "
                f"not refresh: {error}",
                fix="create a new personal access token in Label Studio (Account & Settings > "
                "Personal Access Token) and pass it with --api-key / LABEL_STUDIO_API_KEY",
                details=details,
            )
        exp = _jwt_claims(access).get("exp")
        if isinstance(exp, int | float):
            details["access_expires_in_s"] = round(float(exp) - time.time())
        headers = {"Authorization": f"Bearer {access}"}
        fix = "create a new personal access token in Label Studio and use it"
    try:
        resp = requests.get(f"{url}/api/current-user/whoami", headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        return Check(
            name, title, FAIL, f"whoami failed ({exc.__class__.__name__})", fix=fix, details=details
        )
    if resp.status_code != 200:
        return Check(
            name,
            title,
            FAIL,
            f"Label Studio refused the {kind} "
            f"(HTTP {resp.status_code} on /api/current-user/whoami)",
            fix=fix,
            details=details,
        )
    try:
        user = resp.json()
    except ValueError:
        user = {}
    who = str(user.get("email") or user.get("username") or user.get("id") or "?")
    details["user"] = who
    doc.client = LabelStudioClient(url, key, timeout=max(timeout, 30.0))
    doc.token_ok = True
    extra = ""
    if not legacy:
        left = details.get("access_expires_in_s")
        extra = "; refresh works" + (f" (access token valid {left} s)" if left is not None else "")
    return Check(name, title, PASS, f"{kind} of {who}{extra}", details=details)


# -- the project and its label config -----------------------------------------------------------


def check_project(doc: Doctor) -> Check:
    """The project exists and this user can read it."""
    pid = doc.options.project_id
    name, title = "project", f"project {pid}"
    if doc.client is None:
        return skipped(name, title, "no valid token")
    try:
        project = doc.client.get_project(pid)
    except LabelStudioError as exc:
        return Check(
            name,
            title,
            FAIL,
            f"cannot read project {pid}: {short_error(exc)}",
            fix="check --project: the id is in the project's URL (/projects/ID/...), and the "
            "token's user must be a member of its organisation",
        )
    doc.project = project
    tasks = project.get("task_number")
    return Check(
        name,
        title,
        PASS,
        f"{project.get('title')!r}, {tasks if tasks is not None else '?'} tasks",
        details={"title": project.get("title"), "tasks": tasks},
    )


def check_label_config(doc: Doctor) -> Check:
    """The project's label config is one the backend can serve."""
    name, title = "label_config", "label config servable"
    if doc.project is None:
        return skipped(name, title, "the project could not be read")
    from labelwheel.label_config import UnsupportedConfigError, parse_classification_config

    xml = str(doc.project.get("label_config") or "")
    try:
        config = parse_classification_config(xml)
    except UnsupportedConfigError as exc:
        return Check(
            name,
            title,
            FAIL,
            f"labelwheel cannot serve this config: {short_error(exc)}",
            fix='use an image classification config: an <Image name=... value="$image"/> and a '
            "<Choices toName=...> of static <Choice> values (see the templates in "
            "labelwheel/label_config/templates)",
        )
    doc.config = config
    mode = "multi-label" if config.multi_label else "single-label"
    return Check(
        name,
        title,
        PASS,
        f"{mode} classification of ${config.data_key} into {len(config.labels)} labels",
        details={
            "data_key": config.data_key,
            "from_name": config.from_name,
            "to_name": config.to_name,
            "labels": list(config.labels),
            "multi_label": config.multi_label,
        },
    )
