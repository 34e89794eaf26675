"""The backend checks of ``labelwheel doctor``: the ML backend registered on the project, Label
Studio's own check of it, ``GET /health`` from here, and the project's webhook to it.

Nothing here changes Label Studio or the backend, with one exception that Label Studio itself
makes: reading an ML backend (``GET /api/ml/<id>``) makes Label Studio call the backend's
``/health`` and ``/setup`` and store the state it finds (what its "Model" settings page does).
The webhook's credentials are tried on the backend's ``GET /versions``: the backend checks basic
auth the same way on every endpoint but ``/health``, so what ``/versions`` accepts, ``/webhook``
accepts.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import requests

from labelwheel.doctor.checks import Doctor, short_error, skipped
from labelwheel.doctor.report import FAIL, PASS, WARN, Check
from labelwheel.ls_api import LabelStudioError

__all__ = [
    "check_backend_from_here",
    "check_backend_from_label_studio",
    "check_ml_backend",
    "check_webhook",
]

_ML_STATES = {
    "CO": "connected",
    "DI": "disconnected",
    "ER": "error",
    "TR": "training",
    "PR": "predicting",
}
_WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")


# -- the ML backend -----------------------------------------------------------------------------


def _norm(url: str) -> str:
    return url.strip().rstrip("/")


def check_ml_backend(doc: Doctor) -> Check:
    """The backend is registered as the project's ML backend."""
    pid = doc.options.project_id
    name, title = "ml_backend", "ML backend registered"
    if doc.project is None or doc.client is None:
        return skipped(name, title, "the project could not be read")
    connect = f"labelwheel connect --project {pid} --backend-url URL"
    try:
        backends = doc.client.list_ml_backends(pid)
    except LabelStudioError as exc:
        return Check(name, title, FAIL, f"cannot list ML backends: {short_error(exc)}")
    wanted = _norm(doc.options.backend_url) if doc.options.backend_url else None
    urls = [_norm(str(b.get("url", ""))) for b in backends]
    if not backends:
        return Check(
            name,
            title,
            FAIL,
            f"project {pid} has no ML backend",
            fix=f"run `{connect}` (with the backend's URL as Label Studio reaches it)",
        )
    if wanted is not None:
        chosen = [b for b, u in zip(backends, urls, strict=True) if u == wanted]
        if not chosen:
            return Check(
                name,
                title,
                FAIL,
                f"{wanted} is not among the project's ML backends ({', '.join(urls)})",
                fix=f"run `{connect.replace('URL', wanted)}`, or pass --backend-url with the URL "
                "registered in Label Studio",
                details={"registered": urls},
            )
        ml = chosen[0]
    else:
        ml = backends[0]
    doc.ml_backend = ml
    doc.backend_url = _norm(str(ml.get("url", "")))
    auth = str(ml.get("auth_method") or "NONE")
    details = {
        "id": ml.get("id"),
        "url": doc.backend_url,
        "title": ml.get("title"),
        "auth_method": auth,
        "registered": urls,
    }
    message = f"id {ml.get('id')} at {doc.backend_url} (auth {auth})"
    if len(backends) > 1:
        return Check(
            name,
            title,
            WARN,
            message + f"; {len(backends)} ML backends are registered: {', '.join(urls)}",
            fix="keep one ML backend per project (Label Studio asks each for predictions); "
            "delete the others in the project's Model settings",
            details=details,
        )
    if auth != "BASIC_AUTH":
        return Check(
            name,
            title,
            WARN,
            message,
            fix="start the backend with BASIC_AUTH_USER/BASIC_AUTH_PASS and run `labelwheel "
            "connect` with them: without basic auth anyone who reaches it can use it",
            details=details,
        )
    return Check(name, title, PASS, message, details=details)


def check_backend_from_label_studio(doc: Doctor) -> Check:
    """Label Studio's own check: ``GET /api/ml/<id>`` makes it call the backend's ``/health``
    and ``/setup`` and report the state (connected, disconnected, error)."""
    name, title = "backend_from_label_studio", "backend reachable from Label Studio"
    if doc.ml_backend is None or doc.client is None:
        return skipped(name, title, "no ML backend registered")
    ml_id = int(doc.ml_backend["id"])
    try:
        ml = dict(doc.client.request("GET", f"/api/ml/{ml_id}").json())
    except (LabelStudioError, ValueError, TypeError) as exc:
        return Check(name, title, FAIL, f"cannot read ML backend {ml_id}: {short_error(exc)}")
    code = str(ml.get("state") or "")
    state = _ML_STATES.get(code, code or "unknown")
    error = str(ml.get("error_message") or "").strip()
    details = {"state": state, "error_message": error or None}
    url = doc.backend_url
    if state in ("connected", "training", "predicting"):
        return Check(
            name,
            title,
            PASS,
            f"Label Studio says {state} ({url}/health and /setup answer)",
            details=details,
        )
    if state == "disconnected":
        return Check(
            name,
            title,
            FAIL,
            f"Label Studio cannot reach {url}/health (state disconnected)",
            fix="start the backend (`labelwheel serve`), and register it under an address the "
            "Label Studio server itself can reach (inside Docker, not 127.0.0.1/localhost): "
            f"`labelwheel connect --project {doc.options.project_id} --backend-url URL`",
            details=details,
        )
    hint = "the backend's /setup refused Label Studio"
    if "401" in error:
        hint = "the backend refused Label Studio's basic-auth credentials"
        fix = (
            "run `labelwheel connect` again with the BASIC_AUTH_USER/BASIC_AUTH_PASS the "
            "backend was started with"
        )
    elif "400" in error:
        hint = "the backend's /setup refused the project (usually its label config)"
        fix = "see the label config check; the backend's log says why /setup answered 400"
    else:
        fix = "read the backend's log around the /setup request"
    return Check(
        name,
        title,
        FAIL,
        f"Label Studio reports {state}: {hint}" + (f" ({error[:300]})" if error else ""),
        fix=fix,
        details=details,
    )


def _basic_header(user: str, password: str) -> dict[str, str]:
    raw = f"{user}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}


def _backend_get(doc: Doctor, path: str, headers: dict[str, str]) -> requests.Response:
    assert doc.backend_url is not None
    return requests.get(
        doc.backend_url + path,
        params={"project": doc.options.project_id},
        headers=headers,
        timeout=doc.options.timeout,
    )


def check_backend_from_here(doc: Doctor) -> Check:
    """``GET <backend>/health`` from this machine, and (with credentials) that basic auth is
    accepted."""
    name, title = "backend_from_here", "backend reachable from here"
    url = doc.backend_url or (_norm(doc.options.backend_url) if doc.options.backend_url else None)
    if not url:
        return skipped(name, title, "no backend URL (none registered, no --backend-url)")
    doc.backend_url = url
    try:
        resp = requests.get(f"{url}/health", timeout=doc.options.timeout)
        body = resp.json() if resp.status_code == 200 else None
    except requests.RequestException as exc:
        return Check(
            name,
            title,
            FAIL,
            f"no answer from {url}/health ({exc.__class__.__name__})",
            fix="start the backend with `labelwheel serve` (or check its host/port and firewall)",
            details={"url": url},
        )
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("status") != "UP":
        return Check(
            name,
            title,
            FAIL,
            f"{url}/health answered HTTP {resp.status_code} without status UP",
            fix="check that the URL points at `labelwheel serve`",
            details={"url": url, "status": resp.status_code},
        )
    doc.backend_up = True
    details = {
        "url": url,
        "labelwheel_version": body.get("labelwheel_version"),
        "model_class": body.get("model_class"),
        "backbone": body.get("backbone"),
    }
    message = f"{url} is UP (labelwheel {body.get('labelwheel_version', '?')})"
    if doc.options.basic_auth is not None:
        try:
            auth = _backend_get(doc, "/versions", _basic_header(*doc.options.basic_auth))
        except requests.RequestException as exc:
            return Check(name, title, FAIL, f"GET /versions failed ({exc.__class__.__name__})")
        if auth.status_code == 401:
            return Check(
                name,
                title,
                FAIL,
                message + ", but it refuses the basic-auth credentials given here",
                fix="pass the BASIC_AUTH_USER/BASIC_AUTH_PASS the backend was started with",
                details=details,
            )
        message += "; basic auth accepted"
    return Check(name, title, PASS, message, details=details)


# -- the webhook --------------------------------------------------------------------------------


def _hooks_to(hooks: list[dict[str, Any]], base: str) -> list[dict[str, Any]]:
    out = []
    for hook in hooks:
        url = _norm(str(hook.get("url", "")))
        if url in (base, f"{base}/webhook") or url.startswith(base + "/"):
            out.append(hook)
    return out


def _basic_user(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, _ = decoded.partition(":")
    return user if sep else None


def check_webhook(doc: Doctor) -> Check:
    """The project's webhook to the backend exists, is active, sends annotation events with
    their payload, and carries an ``Authorization`` header the backend accepts."""
    name, title = "webhook", "webhook to the backend"
    if doc.client is None or doc.project is None or not doc.backend_url:
        return skipped(name, title, "no ML backend registered")
    pid = doc.options.project_id
    connect = f"labelwheel connect --project {pid} --backend-url {doc.backend_url}"
    try:
        hooks = _hooks_to(doc.client.list_webhooks(pid), doc.backend_url)
    except LabelStudioError as exc:
        return Check(name, title, FAIL, f"cannot list the project's webhooks: {short_error(exc)}")
    if not hooks:
        return Check(
            name,
            title,
            FAIL,
            f"project {pid} has no webhook to {doc.backend_url}: annotations never reach the "
            "backend",
            fix=f"run `{connect}`",
        )
    hook = hooks[0]
    details: dict[str, Any] = {"id": hook.get("id"), "url": hook.get("url")}
    problems: list[str] = []
    if not hook.get("is_active", True):
        problems.append("it is not active")
    if not hook.get("send_payload", True):
        problems.append("it sends no payload")
    actions = set(hook.get("actions") or [])
    if not hook.get("send_for_all_actions") and not set(_WEBHOOK_ACTIONS) <= actions:
        problems.append(f"it does not send {', '.join(sorted(set(_WEBHOOK_ACTIONS) - actions))}")
    headers = {str(k): str(v) for k, v in (hook.get("headers") or {}).items()}
    auth_header = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    details["has_authorization"] = auth_header is not None
    if problems:
        return Check(
            name,
            title,
            FAIL,
            f"webhook {hook.get('id')}: " + "; ".join(problems),
            fix=f"run `{connect}` (it repairs the webhook)",
            details=details,
        )
    ml_auth = str((doc.ml_backend or {}).get("auth_method") or "NONE")
    if doc.backend_up:
        # the backend checks every request the same way: what /versions accepts, /webhook does
        try:
            resp = _backend_get(doc, "/versions", headers)
        except requests.RequestException as exc:
            return Check(name, title, FAIL, f"GET /versions failed ({exc.__class__.__name__})")
        details["backend_status_with_webhook_headers"] = resp.status_code
        if resp.status_code == 401:
            what = (
                "carries no Authorization header"
                if auth_header is None
                else ("carries an Authorization header the backend refuses")
            )
            return Check(
                name,
                title,
                FAIL,
                f"webhook {hook.get('id')} {what}: the backend answers annotation events 401",
                fix=f"run `{connect}` with the backend's BASIC_AUTH_USER/BASIC_AUTH_PASS (it "
                "puts the same Basic header on the webhook)",
                details=details,
            )
        if resp.status_code != 200:
            return Check(
                name,
                title,
                WARN,
                f"the backend answered HTTP {resp.status_code} to the webhook's headers",
                fix="read the backend's log",
                details=details,
            )
        how = "no basic auth on the backend" if auth_header is None else "auth header accepted"
        return Check(
            name,
            title,
            PASS,
            f"webhook {hook.get('id')} -> {hook.get('url')} ({how})",
            details=details,
        )
    # backend not reachable from here: compare with what Label Studio holds
    if ml_auth == "BASIC_AUTH":
        user = _basic_user(auth_header or "")
        if user is None:
            return Check(
                name,
                title,
                FAIL,
                f"webhook {hook.get('id')} carries no Basic Authorization header, but the ML "
                "backend uses basic auth: annotation events will be refused",
                fix=f"run `{connect}` with the backend's BASIC_AUTH_USER/BASIC_AUTH_PASS",
                details=details,
            )
        if user != (doc.ml_backend or {}).get("basic_auth_user"):
            return Check(
                name,
                title,
                FAIL,
                f"webhook {hook.get('id')} authenticates as {user!r}, the ML backend as "
                f"{(doc.ml_backend or {}).get('basic_auth_user')!r}",
                fix=f"run `{connect}` with the backend's BASIC_AUTH_USER/BASIC_AUTH_PASS",
                details=details,
            )
    return Check(
        name,
        title,
        WARN,
        f"webhook {hook.get('id')} -> {hook.get('url')} looks right, but its header could not be "
        "tried against the backend (not reachable from here)",
        fix="run doctor where the backend is reachable to try the webhook's credentials",
        details=details,
    )
