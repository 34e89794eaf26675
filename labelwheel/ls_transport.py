"""The transport under :class:`labelwheel.ls_api.LabelStudioClient`: one Label Studio server, its
API key, and one code path for requests, errors, retries and token refresh (plain ``requests``).

Authentication takes either kind of Label Studio API key:

- a legacy token (40 hex characters) is sent as ``Authorization: Token <key>``;
- anything else is treated as a personal access token (a JWT refresh token): it is exchanged at
  ``POST /api/token/refresh/`` for a short-lived access token sent as ``Authorization: Bearer``,
  cached, refreshed shortly before it expires (its ``exp`` claim) and once more on a 401.

Every failure raises :class:`LabelStudioError`, whose message names the call, the HTTP status and
Label Studio's own message (or says that Label Studio cannot be reached).

Calls made with ``busy_retries`` (idempotent ones) back off and try again when Label Studio answers
5xx, as it does on its default SQLite ("database is locked") while another client writes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import urllib.parse
from typing import Any

import requests

__all__ = ["BUSY_STATUSES", "LabelStudioError", "LabelStudioTransport", "is_legacy_token"]

_LEGACY_TOKEN = re.compile(r"[0-9a-fA-F]{40}")
_REFRESH_MARGIN_S = 30.0
BUSY_STATUSES = frozenset({500, 502, 503, 504})
"""Label Studio on its default SQLite answers these ("database is locked") while another client
writes many rows: calls made with ``busy_retries`` (and the prediction publisher) back off and try
again on them."""
_BUSY_BACKOFF_S = 0.5
_BUSY_BACKOFF_MAX_S = 8.0


class LabelStudioError(RuntimeError):
    """A Label Studio API call failed; the message names the call, the status and LS's message."""

    def __init__(self, message: str, status: int | None = None, call: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.call = call


def is_legacy_token(api_key: str) -> bool:
    """True if ``api_key`` looks like a legacy API token (40 hex characters)."""
    return bool(_LEGACY_TOKEN.fullmatch(api_key.strip()))


def _jwt_exp(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying the signature."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        exp = payload.get("exp")
        return float(exp) if isinstance(exp, int | float) else None
    except (ValueError, binascii.Error, AttributeError):
        return None


def _message(resp: requests.Response) -> str:
    """Label Studio's own explanation of a failed response, short."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.text or ""
        title = re.search(r"<title>(.*?)</title>", text, re.S | re.I)
        if title:
            return title.group(1).strip()[:200]
        return " ".join(text.split())[:300] or resp.reason or ""
    if isinstance(body, dict):
        parts: list[str] = []
        detail = body.get("detail")
        if detail:
            parts.append(str(detail))
        errors = body.get("validation_errors")
        if isinstance(errors, dict):
            for key, value in errors.items():
                if isinstance(value, list):
                    value = "; ".join(str(v) for v in value)
                parts.append(f"{key}: {value}")
        elif errors:
            parts.append(str(errors))
        if not parts:
            parts.append(json.dumps(body)[:300])
        return " - ".join(parts)[:1000]
    return json.dumps(body)[:300]


def _rewind(files: Any) -> None:
    """Seek multipart file handles back to the start before a retry."""
    if isinstance(files, dict):
        for value in files.values():
            fh = value[1] if isinstance(value, tuple) and len(value) > 1 else value
            if hasattr(fh, "seek"):
                fh.seek(0)


class LabelStudioTransport:
    """Connection, authentication and the request/retry/error path to one Label Studio server
    (thread-safe: one ``requests`` session per thread, the access token shared under a lock)."""

    def __init__(self, url: str, api_key: str, timeout: float = 30.0) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ValueError("Label Studio URL is empty (set LABEL_STUDIO_URL)")
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"Label Studio URL must be http(s)://host[:port], got {url!r}")
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("Label Studio API key is empty (set LABEL_STUDIO_API_KEY)")
        self.url = url.strip().rstrip("/")
        self.api_key = api_key.strip()
        self.timeout = float(timeout)
        self.legacy = is_legacy_token(self.api_key)
        self._access: str | None = None
        self._access_exp = 0.0
        self._lock = threading.Lock()
        self._local = threading.local()

    def __repr__(self) -> str:
        kind = "legacy token" if self.legacy else "personal access token"
        return f"{type(self).__name__}({self.url!r}, {kind})"

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def _refresh_access(self, force: bool = False) -> str:
        with self._lock:
            now = time.time()
            if not force and self._access and self._access_exp - _REFRESH_MARGIN_S > now:
                return self._access
            call = "POST /api/token/refresh/"
            try:
                resp = self._session().post(
                    f"{self.url}/api/token/refresh/",
                    json={"refresh": self.api_key},
                    timeout=self.timeout,
                )
            except requests.RequestException as exc:
                raise LabelStudioError(
                    f"cannot reach Label Studio at {self.url}: {exc}", call=call
                ) from None
            if resp.status_code != 200:
                raise LabelStudioError(
                    f"{call} failed: HTTP {resp.status_code}: {_message(resp)} (the API key is "
                    "neither a 40-hex legacy token nor a valid personal access token)",
                    status=resp.status_code,
                    call=call,
                )
            try:
                access = str(resp.json()["access"])
            except (ValueError, KeyError, TypeError):
                raise LabelStudioError(
                    f"{call}: unexpected answer {resp.text[:200]!r}", call=call
                ) from None
            self._access = access
            self._access_exp = _jwt_exp(access) or (now + 240.0)
            return access

    def auth_headers(self) -> dict[str, str]:
        """``Authorization`` header for the API key (PAT: a fresh Bearer access token)."""
        if self.legacy:
            return {"Authorization": f"Token {self.api_key}"}
        return {"Authorization": f"Bearer {self._refresh_access()}"}

    def _absolute(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            if not path.startswith(self.url + "/") and path != self.url:
                raise ValueError(f"{path!r} is not on Label Studio at {self.url}")
            return path
        return f"{self.url}/{path.lstrip('/')}"

    def request(
        self, method: str, path: str, *, busy_retries: int = 0, **kw: Any
    ) -> requests.Response:
        """Send an authenticated request; raise :class:`LabelStudioError` on failure (>= 400).

        ``path`` is relative to the server (``/api/projects``) or an absolute URL on it. Keyword
        arguments go to ``requests`` (``params``, ``json``, ``files``, ``timeout``, ...).
        ``busy_retries``: for idempotent calls, how many times to try again, with exponential
        backoff (0.5 s doubling, at most 8 s), when Label Studio answers 5xx (on SQLite: "database
        is locked" while another client writes).
        """
        delay = _BUSY_BACKOFF_S
        for _ in range(max(0, int(busy_retries))):
            try:
                return self._request_once(method, path, **kw)
            except LabelStudioError as exc:
                if exc.status not in BUSY_STATUSES:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, _BUSY_BACKOFF_MAX_S)
            _rewind(kw.get("files"))
        return self._request_once(method, path, **kw)

    def _request_once(self, method: str, path: str, **kw: Any) -> requests.Response:
        method = method.upper()
        url = self._absolute(path)
        call = f"{method} {urllib.parse.urlsplit(url).path}"
        kw.setdefault("timeout", self.timeout)
        extra_headers = dict(kw.pop("headers", None) or {})
        for attempt in range(2):
            headers = {**extra_headers, **self.auth_headers()}
            try:
                resp = self._session().request(method, url, headers=headers, **kw)
            except requests.Timeout:
                raise LabelStudioError(
                    f"{call}: Label Studio at {self.url} did not answer within {kw['timeout']} s",
                    call=call,
                ) from None
            except requests.RequestException as exc:
                raise LabelStudioError(
                    f"cannot reach Label Studio at {self.url}: {exc.__class__.__name__}: {exc}",
                    call=call,
                ) from None
            if resp.status_code == 401 and not self.legacy and attempt == 0:
                self._refresh_access(force=True)
                _rewind(kw.get("files"))
                continue
            break
        if resp.status_code >= 400:
            hint = ""
            if resp.status_code == 401:
                hint = (
                    " (check LABEL_STUDIO_API_KEY; legacy tokens stop working when an organisation "
                    "turns them off: use a personal access token then)"
                    if self.legacy
                    else " (check LABEL_STUDIO_API_KEY)"
                )
            raise LabelStudioError(
                f"{call} failed: HTTP {resp.status_code}: {_message(resp)}{hint}",
                status=resp.status_code,
                call=call,
            )
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.request(method, path, **kw)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise LabelStudioError(
                f"{method} {path}: Label Studio answered non-JSON: {resp.text[:200]!r}",
                status=resp.status_code,
                call=f"{method} {path}",
            ) from None

    def sdk(self) -> Any:
        """A ``label_studio_sdk.LabelStudio`` client for the same server and key."""
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.url, api_key=self.api_key, timeout=self.timeout)
