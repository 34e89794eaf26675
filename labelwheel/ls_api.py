"""A small, strict client for the Label Studio REST API (1.23): users and tokens, projects, tasks,
predictions, the ML backend connection, webhooks, saved views and files.

The connection, authentication (legacy token or personal access token), errors
(:class:`LabelStudioError`) and retries live in :mod:`labelwheel.ls_transport`; this module adds
the API calls on top.

The ``ensure_*`` methods are idempotent: re-running them repairs what exists and never creates
duplicates. Every call goes over plain REST with ``requests`` through the transport's one code path
for errors, retries and token refresh (the SDK cannot upload files, and its PATCH of an ML backend
needs fields it does not send). :meth:`LabelStudioClient.sdk` returns an SDK client for anything
else.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from labelwheel.ls_transport import LabelStudioError, LabelStudioTransport, is_legacy_token

__all__ = ["LabelStudioClient", "LabelStudioError", "is_legacy_token"]

_IMPORT_BATCH_FILES = 50
_IMPORT_BATCH_TASKS = 1000


class LabelStudioClient(LabelStudioTransport):
    """Label Studio REST client (thread-safe) for one server and API key.

    ``LabelStudioClient(url, api_key, timeout=30.0)``; the transport (:meth:`request`,
    :meth:`auth_headers`, :meth:`sdk`) comes from :class:`LabelStudioTransport`."""

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
