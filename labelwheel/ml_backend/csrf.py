"""CSRF protection of the dashboard's one write (the planner's "write view" form).

A browser sends basic-auth credentials to the backend by itself, so a page on another site could
post the planner form on the user's behalf. Every POST must therefore carry a token that only a
page served by this backend can know, and must not come from another origin:

- the token is ``<expires>.<nonce>.<hmac>``: signed (HMAC-SHA256) with a key of this app (Flask's
  ``SECRET_KEY`` if set, else random per process), bound to the request's ``Authorization``
  header (the basic-auth user) and valid for :data:`TOKEN_SECONDS`. The dashboard page puts it in
  the form (field ``csrf_token``); scripts get one from ``GET /dashboard/api/csrf`` and send it as
  the ``X-CSRF-Token`` header or a ``csrf_token`` field;
- ``Origin: null`` (sandboxed frames, ``data:`` pages), an ``Origin`` or ``Referer`` of another
  host, and ``Sec-Fetch-Site: cross-site``/``same-site`` are refused whatever the token.

:func:`refusal` says why a request is refused (``None``: allowed); the caller answers 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, request

__all__ = ["TOKEN_FIELD", "TOKEN_HEADER", "TOKEN_SECONDS", "new_token", "refusal"]

TOKEN_FIELD = "csrf_token"
TOKEN_HEADER = "X-CSRF-Token"
TOKEN_SECONDS = 12 * 3600
_KEY = "labelwheel_csrf_key"
_PURPOSE = "dashboard-write"


def _key(app: Flask) -> bytes:
    key = app.extensions.get(_KEY)
    if key is None:
        configured = app.config.get("SECRET_KEY")
        if isinstance(configured, str) and configured:
            key = hashlib.sha256(b"labelwheel-csrf|" + configured.encode()).digest()
        elif isinstance(configured, bytes) and configured:
            key = hashlib.sha256(b"labelwheel-csrf|" + configured).digest()
        else:
            key = secrets.token_bytes(32)
        key = app.extensions.setdefault(_KEY, key)
    assert isinstance(key, bytes)
    return key


def _identity() -> str:
    """Who the token is for: a digest of the credentials the request came with."""
    return hashlib.sha256(request.headers.get("Authorization", "").encode()).hexdigest()


def _mac(expires: str, nonce: str) -> str:
    app: Any = current_app._get_current_object()  # type: ignore[attr-defined]
    message = f"{_PURPOSE}|{expires}|{nonce}|{_identity()}".encode()
    return hmac.new(_key(app), message, hashlib.sha256).hexdigest()


def new_token() -> str:
    """A fresh token for the current request's user (inside a request context)."""
    expires = str(int(time.time()) + TOKEN_SECONDS)
    nonce = secrets.token_urlsafe(12)
    return f"{expires}.{nonce}.{_mac(expires, nonce)}"


def _token_problem(token: str | None) -> str | None:
    if not token:
        return (
            "the form has no CSRF token: reload the dashboard and submit again "
            f"(scripts: GET /dashboard/api/csrf and send the {TOKEN_HEADER} header)"
        )
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isascii() or not parts[0].isdigit():
        return "the CSRF token is malformed: reload the dashboard and submit again"
    expires, nonce, mac = parts
    if not hmac.compare_digest(_mac(expires, nonce), mac):
        return "the CSRF token is not valid here: reload the dashboard and submit again"
    if int(expires[:12]) < time.time():
        return "the CSRF token has expired: reload the dashboard and submit again"
    return None


def _origin_problem() -> str | None:
    origin = request.headers.get("Origin")
    if origin is not None:
        if origin.strip().lower() == "null":
            return "cross-site request refused (Origin: null)"
        if urlsplit(origin).netloc.lower() != request.host.lower():
            return "cross-site request refused (Origin is another site)"
    referer = request.headers.get("Referer")
    if origin is None and referer and urlsplit(referer).netloc.lower() != request.host.lower():
        return "cross-site request refused (Referer is another site)"
    if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
        return "cross-site request refused (Sec-Fetch-Site)"
    return None


def refusal(token: str | None) -> str | None:
    """Why this POST must be refused with a 403 (``None``: it may write)."""
    return _origin_problem() or _token_problem(token)
