"""A small, strict client for the Label Studio REST API (1.23).

Authentication takes either kind of Label Studio API key:

- a legacy token (40 hex characters) is sent as ``Authorization: Token <key>``;
- anything else is treated as a personal access token (a JWT refresh token): it is exchanged at
  ``POST /api/token/refresh/`` for a short-lived access token sent as ``Authorization: Bearer``,
  cached, refreshed shortly before it expires (its ``exp`` claim) and once more on a 401.

Every failure raises :class:`LabelStudioError`, whose message names the call, the HTTP status and
Label Studio's own message (or says that Label Studio cannot be reached).

The ``ensure_*`` methods are idempotent: re-running them repairs what exists and never creates
duplicates. Everything goes over plain REST with ``requests``: one code path for errors, retries and
token refresh (the SDK cannot upload files, and its PATCH of an ML backend needs fields it does
not send). :meth:`LabelStudioClient.sdk` returns an SDK client for anything else.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import requests

__all__ = ["LabelStudioClient", "LabelStudioError", "is_legacy_token"]

_LEGACY_TOKEN = re.compile(r"[0-9a-fA-F]{40}")
_REFRESH_MARGIN_S = 30.0
_IMPORT_BATCH_FILES = 50
_IMPORT_BATCH_TASKS = 1000
# Label Studio on its default SQLite answers 5xx ("database is locked") while another client writes
# many rows; calls made with ``busy_retries`` back off and try again on these.
_BUSY_STATUSES = frozenset({500, 502, 503, 504})
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


class LabelStudioClient:
    """Label Studio REST client (thread-safe) for one server and API key."""

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
        return f"LabelStudioClient({self.url!r}, {kind})"

    # -- transport --------------------------------------------------------------------------

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
                if exc.status not in _BUSY_STATUSES:
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

    # -- users, tokens, organisation -------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        """The user the API key belongs to."""
        return dict(self._json("GET", "/api/current-user/whoami"))

    def create_personal_access_token(self) -> str:
        """Create this user's personal access token (a JWT refresh token) and return it.

        Label Studio allows one per user (409 if one exists: revoke it first)."""
        body = self._json("POST", "/api/token/")
        return str(body["token"])

    def set_legacy_tokens_enabled(self, enabled: bool) -> dict[str, Any]:
        """Turn legacy API tokens on or off for the organisation (``POST /api/jwt/settings``)."""
        current = self._json("GET", "/api/jwt/settings") or {}
        body = {
            "api_tokens_enabled": current.get("api_tokens_enabled", True),
            "legacy_api_tokens_enabled": bool(enabled),
        }
        if "api_token_ttl_days" in current:
            body["api_token_ttl_days"] = current["api_token_ttl_days"]
        return dict(self._json("POST", "/api/jwt/settings", json=body))

    # -- projects ---------------------------------------------------------------------------

    def get_project(self, project_id: int) -> dict[str, Any]:
        """The project (``GET /api/projects/{id}``)."""
        return dict(self._json("GET", f"/api/projects/{int(project_id)}"))

    def create_project(self, title: str, label_config: str, **fields: Any) -> dict[str, Any]:
        """Create a project (title at least 3 characters)."""
        body = {"title": title, "label_config": label_config, **fields}
        return dict(self._json("POST", "/api/projects", json=body))

    def update_project(self, project_id: int, **fields: Any) -> dict[str, Any]:
        """PATCH project fields (e.g. ``label_config``, ``sampling``)."""
        return dict(self._json("PATCH", f"/api/projects/{int(project_id)}", json=fields))

    def list_projects(self) -> list[dict[str, Any]]:
        """All projects visible to the user."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self._json("GET", "/api/projects", params={"page": page, "page_size": 100})
            results = body.get("results", []) if isinstance(body, dict) else body
            out.extend(results)
            if not isinstance(body, dict) or not body.get("next"):
                return out
            page += 1

    def delete_project(self, project_id: int) -> None:
        """Delete a project and its tasks."""
        self.request("DELETE", f"/api/projects/{int(project_id)}")

    def set_project_model_version(
        self, project_id: int, version: str, *, busy_retries: int = 0
    ) -> None:
        """Set the project's model version (the one ``predictions_score`` counts).

        Label Studio refuses (400) a version for which no prediction exists yet."""
        self.request(
            "PATCH",
            f"/api/projects/{int(project_id)}",
            json={"model_version": str(version)},
            busy_retries=busy_retries,
        )

    # -- tasks ------------------------------------------------------------------------------

    def iter_tasks(
        self,
        project_id: int,
        *,
        page_size: int = 100,
        fields: str | None = None,
        query: dict[str, Any] | None = None,
        view_id: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """All tasks of a project, page by page (``GET /api/tasks``).

        Each task has ``id``, ``data``, ``total_annotations``, ``cancelled_annotations``,
        ``total_predictions``, ``is_labeled``...; ``fields="all"`` adds annotations and
        predictions. ``query`` is the Data Manager query (e.g. ``{"ordering":
        ["tasks:predictions_score"]}``); ``view_id`` applies a saved view's filters and ordering.
        """
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        page = 1
        seen = 0
        while True:
            params: dict[str, Any] = {"project": int(project_id), "page": page}
            params["page_size"] = page_size
            if fields:
                params["fields"] = fields
            if query is not None:
                params["query"] = json.dumps(query)
            if view_id is not None:
                params["view"] = int(view_id)
            try:
                body = self._json("GET", "/api/tasks", params=params)
            except LabelStudioError as exc:
                if exc.status == 404 and page > 1:  # "Invalid page.": past the end
                    return
                raise
            tasks = body.get("tasks", []) if isinstance(body, dict) else list(body)
            yield from tasks
            seen += len(tasks)
            total = body.get("total") if isinstance(body, dict) else None
            if len(tasks) < page_size or (isinstance(total, int) and seen >= total):
                return
            page += 1

    def get_task(self, task_id: int) -> dict[str, Any]:
        """One task with its annotations and predictions."""
        return dict(self._json("GET", f"/api/tasks/{int(task_id)}"))

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Import data tasks (``[{"image": url_or_data_uri}, ...]`` or full task dicts); returns
        the new task ids in order."""
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise ValueError("tasks must be a list of dicts")
        ids: list[int] = []
        for start in range(0, len(tasks), _IMPORT_BATCH_TASKS):
            batch = tasks[start : start + _IMPORT_BATCH_TASKS]
            body = self._json(
                "POST",
                f"/api/projects/{int(project_id)}/import",
                params={"return_task_ids": "true"},
                json=batch,
                timeout=max(self.timeout, 300.0),
            )
            ids.extend(int(i) for i in body.get("task_ids", []))
        return ids

    def import_files(self, project_id: int, paths: Sequence[Path]) -> list[int]:
        """Upload image files as tasks (multipart, one form field per file: ``file0``, ``file1``
        ...); returns the new task ids. Their data then points at ``/data/upload/...``."""
        paths = [Path(p) for p in paths]
        for p in paths:
            if not p.is_file():
                raise ValueError(f"not a file: {p}")
        ids: list[int] = []
        for start in range(0, len(paths), _IMPORT_BATCH_FILES):
            batch = paths[start : start + _IMPORT_BATCH_FILES]
            handles = [open(p, "rb") for p in batch]
            try:
                files = {
                    f"file{i}": (p.name, fh, "application/octet-stream")
                    for i, (p, fh) in enumerate(zip(batch, handles, strict=True))
                }
                body = self._json(
                    "POST",
                    f"/api/projects/{int(project_id)}/import",
                    params={"return_task_ids": "true"},
                    files=files,
                    timeout=max(self.timeout, 300.0),
                )
            finally:
                for fh in handles:
                    fh.close()
            ids.extend(int(i) for i in body.get("task_ids", []))
        return ids

    def create_annotation(
        self, task_id: int, result: list[dict[str, Any]], **fields: Any
    ) -> dict[str, Any]:
        """Create an annotation on a task (Label Studio then sends ANNOTATION_CREATED)."""
        body = {"result": result, **fields}
        return dict(self._json("POST", f"/api/tasks/{int(task_id)}/annotations", json=body))

    def next_task(self, project_id: int, view_id: int | None = None) -> dict[str, Any] | None:
        """The task Label Studio's labelling stream serves next (``/api/projects/{id}/next``);
        ``None`` when nothing is left. Label Studio locks it for this user until annotated."""
        params = {"view": int(view_id)} if view_id is not None else None
        try:
            body = self._json("GET", f"/api/projects/{int(project_id)}/next", params=params)
        except LabelStudioError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(body) if body else None

    # -- predictions ------------------------------------------------------------------------

    def retrieve_predictions(
        self, project_id: int, task_ids: Sequence[int] | None = None, *, busy_retries: int = 0
    ) -> None:
        """Run the "Retrieve predictions" action: Label Studio asks the ML backend for every
        selected task (all tasks when ``task_ids`` is None) lacking a prediction of the
        backend's current version, and stores the answers. The action is idempotent, so
        ``busy_retries`` (see :meth:`request`) is safe."""
        if task_ids is None:
            selected: dict[str, Any] = {"all": True, "excluded": []}
        else:
            ids = [int(t) for t in task_ids]
            if not ids:
                return
            selected = {"all": False, "included": ids}
        self.request(
            "POST",
            "/api/dm/actions",
            params={"id": "retrieve_tasks_predictions", "project": int(project_id)},
            json={"selectedItems": selected},
            timeout=max(self.timeout, 600.0),
            busy_retries=busy_retries,
        )

    def import_predictions(self, project_id: int, predictions: list[dict[str, Any]]) -> int:
        """Store predictions (``task``, ``result``, ``score``, ``model_version`` each) in one
        request (``POST /api/projects/<id>/import/predictions``: a bulk insert). Not idempotent:
        no retry here (see :func:`labelwheel.publishing.import_chunk`). Returns how many were
        created."""
        body = self._json(
            "POST",
            f"/api/projects/{int(project_id)}/import/predictions",
            json=predictions,
            timeout=max(self.timeout, 600.0),
        )
        return int(body.get("created", 0)) if isinstance(body, dict) else 0

    def create_prediction(
        self, task_id: int, result: list[dict[str, Any]], score: float, model_version: str
    ) -> dict[str, Any]:
        """Write a prediction for a task (``POST /api/predictions``)."""
        body = {
            "task": int(task_id),
            "result": result,
            "score": float(score),
            "model_version": str(model_version),
        }
        return dict(self._json("POST", "/api/predictions", json=body))

    def list_predictions(self, task_id: int) -> list[dict[str, Any]]:
        """The predictions stored for a task."""
        return list(self._json("GET", "/api/predictions", params={"task": int(task_id)}))

    def list_project_predictions(self, project_id: int) -> list[dict[str, Any]]:
        """Every prediction stored in a project (``id``, ``task``, ``model_version``, ``score``,
        ``result``)."""
        return list(self._json("GET", "/api/predictions", params={"project": int(project_id)}))

    # -- ML backend, webhooks, views --------------------------------------------------------

    def list_ml_backends(self, project_id: int) -> list[dict[str, Any]]:
        """ML backends connected to a project (Label Studio calls their /health and /setup)."""
        return list(self._json("GET", "/api/ml", params={"project": int(project_id)}))

    def ensure_ml_backend(
        self,
        project_id: int,
        url: str,
        title: str,
        basic_auth: tuple[str, str] | None,
    ) -> dict[str, Any]:
        """Connect the ML backend at ``url`` to the project, or repair the existing connection
        (same URL): title and authentication are set again; extra duplicates are removed.

        Label Studio calls the backend's /health and /setup while doing this; when those fail,
        the error quotes Label Studio's message."""
        url = url.strip().rstrip("/")
        body: dict[str, Any] = {
            "project": int(project_id),
            "url": url,
            "title": title,
            "is_interactive": False,
        }
        if basic_auth is not None:
            user, password = basic_auth
            body.update(auth_method="BASIC_AUTH", basic_auth_user=user, basic_auth_pass=password)
        else:
            body.update(auth_method="NONE")
        existing = [
            ml
            for ml in self.list_ml_backends(project_id)
            if str(ml.get("url", "")).rstrip("/") == url
        ]
        if not existing:
            return dict(self._json("POST", "/api/ml", json=body, timeout=max(self.timeout, 60.0)))
        keep, *extra = sorted(existing, key=lambda ml: int(ml["id"]))
        for ml in extra:
            self.request("DELETE", f"/api/ml/{int(ml['id'])}")
        # PATCH needs both url and project (else 500)
        return dict(
            self._json(
                "PATCH", f"/api/ml/{int(keep['id'])}", json=body, timeout=max(self.timeout, 60.0)
            )
        )

    def train(self, ml_backend_id: int) -> None:
        """Press "Start training": Label Studio sends START_TRAINING to the backend."""
        self.request("POST", f"/api/ml/{int(ml_backend_id)}/train", timeout=max(self.timeout, 120))

    def list_webhooks(self, project_id: int) -> list[dict[str, Any]]:
        """Webhooks of a project."""
        return list(self._json("GET", "/api/webhooks", params={"project": int(project_id)}))

    def ensure_webhook_headers(
        self, project_id: int, backend_url: str, headers: dict[str, str]
    ) -> None:
        """Give the project's webhooks to ``backend_url`` these extra headers (merged into the
        existing ones), active and sending all actions; create ``<backend_url>/webhook`` if the
        project has none (Label Studio normally creates it when the backend connects)."""
        base = backend_url.strip().rstrip("/")
        hooks = [
            h
            for h in self.list_webhooks(project_id)
            if str(h.get("url", "")).rstrip("/") in (base, f"{base}/webhook")
            or str(h.get("url", "")).startswith(base + "/")
        ]
        if not hooks:
            self._json(
                "POST",
                "/api/webhooks",
                json={
                    "project": int(project_id),
                    "url": f"{base}/webhook",
                    "send_payload": True,
                    "send_for_all_actions": True,
                    "is_active": True,
                    "headers": dict(headers),
                },
            )
            return
        for hook in hooks:
            merged = {**(hook.get("headers") or {}), **headers}
            self._json(
                "PATCH",
                f"/api/webhooks/{int(hook['id'])}",
                json={"headers": merged, "is_active": True, "send_payload": True},
            )

    def list_views(self, project_id: int) -> list[dict[str, Any]]:
        """Saved Data Manager views (tabs) of a project."""
        return list(self._json("GET", "/api/dm/views", params={"project": int(project_id)}))

    def ensure_view(
        self,
        project_id: int,
        title: str,
        ordering: list[str],
        filters: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create the saved view ``title`` or replace its ordering and filters (one per title)."""
        data: dict[str, Any] = {
            "title": title,
            "ordering": list(ordering),
            "filters": filters or {"conjunction": "and", "items": []},
            "type": "list",
            "target": "tasks",
        }
        same = [
            v for v in self.list_views(project_id) if (v.get("data") or {}).get("title") == title
        ]
        body = {"project": int(project_id), "data": data}
        if not same:
            return dict(self._json("POST", "/api/dm/views", json=body))
        keep, *extra = sorted(same, key=lambda v: int(v["id"]))
        for view in extra:
            self.request("DELETE", f"/api/dm/views/{int(view['id'])}")
        merged = {**(keep.get("data") or {}), **data}
        body["data"] = merged
        return dict(self._json("PATCH", f"/api/dm/views/{int(keep['id'])}", json=body))

    # -- files ------------------------------------------------------------------------------

    def fetch_bytes(self, path_or_url: str, max_bytes: int, timeout: float) -> bytes:
        """Download a file served by Label Studio (e.g. ``/data/upload/...``) with credentials,
        at most ``max_bytes`` (else :class:`LabelStudioError`)."""
        url = self._absolute(path_or_url)
        call = f"GET {urllib.parse.urlsplit(url).path}"
        deadline = time.monotonic() + timeout
        resp = self.request("GET", url, stream=True, timeout=timeout, allow_redirects=False)
        with resp:
            if resp.status_code != 200:
                raise LabelStudioError(
                    f"{call}: unexpected HTTP {resp.status_code}", resp.status_code, call
                )
            buf = bytearray()
            for chunk in resp.iter_content(64 * 1024):
                buf += chunk
                if len(buf) > max_bytes:
                    raise LabelStudioError(f"{call}: larger than {max_bytes} bytes", call=call)
                if time.monotonic() > deadline:
                    raise LabelStudioError(f"{call}: timed out after {timeout} s", call=call)
            return bytes(buf)
