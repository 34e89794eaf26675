"""``labelwheel connect``: wire a Label Studio project to the labelwheel ML backend.

One command a user runs once per project (re-running it repairs, never duplicates):

1. checks that the backend answers ``GET /health``;
2. registers the backend as the project's ML backend, with basic auth (Label Studio then calls
   its ``/health`` and ``/setup``; a label config the backend cannot serve is reported here);
3. gives the project's webhook to the backend the same ``Authorization: Basic ...`` header, so
   that annotation events are authenticated too (Label Studio does not send the ML backend's
   credentials on event webhooks);
4. writes predictions for every task lacking one of the backend's version: it asks the
   backend's ``/predict`` (as Label Studio would) and imports the answers in paced chunks
   (:mod:`labelwheel.publishing`);
5. sets the project's model version to the version those predictions carry (Label Studio sets it
   to the backend's title on connect, and ``predictions_score`` only counts the project's
   version);
6. creates or replaces the saved Data Manager view "labelwheel: most informative first", ordered
   by prediction score ascending (lower score = label sooner).

:func:`labelwheel.publishing.publish_version` is what the backend calls after each training: new
predictions for the unlabelled tasks, then the project's model version.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
import requests

from labelwheel.cli_options import basic_auth_options, label_studio_options
from labelwheel.ls_api import LabelStudioClient, LabelStudioError
from labelwheel.publishing import (
    DEFAULT_PACING,
    PublishPacing,
    publish_version,
    push_predictions,
    retrieve_in_chunks,
)

__all__ = [
    "DEFAULT_PACING",
    "VIEW_ORDERING",
    "VIEW_TITLE",
    "ConnectError",
    "ConnectResult",
    "PublishPacing",
    "backend_predictor",
    "basic_auth_header",
    "check_backend",
    "connect_command",
    "connect_project",
    "publish_version",
    "push_predictions",
    "retrieve_in_chunks",
    "wait_for_pool",
]

VIEW_TITLE = "labelwheel: most informative first"
VIEW_ORDERING = ["tasks:predictions_score"]
DEFAULT_BACKEND_URL = "http://127.0.0.1:9090"


class ConnectError(RuntimeError):
    """Connecting failed; the message says which step and why."""


@dataclass
class ConnectResult:
    """What :func:`connect_project` did."""

    project_id: int
    project_title: str
    ml_backend_id: int
    webhook_ids: list[int]
    model_version: str | None
    view_id: int
    tasks: int
    predicted: int
    warnings: list[str] = field(default_factory=list)

    def summary(self, ls_url: str | None = None) -> str:
        """A few human-readable lines."""
        lines = [
            f"project {self.project_id} ({self.project_title!r}) is connected to labelwheel",
            f"  ML backend id {self.ml_backend_id}; webhook(s) {self.webhook_ids or 'none'}",
            f"  predictions: {self.predicted} of {self.tasks} tasks have model version "
            f"{self.model_version or '(unknown)'}",
        ]
        if self.model_version:
            lines.append(f"  project model version set to {self.model_version}")
        view = f"  saved view {VIEW_TITLE!r} (id {self.view_id})"
        if ls_url:
            view += f": {ls_url.rstrip('/')}/projects/{self.project_id}/data?tab={self.view_id}"
        lines.append(view)
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def basic_auth_header(user: str, password: str) -> dict[str, str]:
    """``{"Authorization": "Basic ..."}`` for a user and password."""
    raw = f"{user}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}


def check_backend(backend_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """``GET <backend>/health``; raises :class:`ConnectError` unless it answers 200."""
    url = backend_url.rstrip("/") + "/health"
    try:
        resp = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        raise ConnectError(
            f"the labelwheel backend at {backend_url} is not reachable ({exc.__class__.__name__}); "
            "start it with `labelwheel serve` or set LABELWHEEL_BACKEND_URL"
        ) from None
    if resp.status_code != 200:
        raise ConnectError(f"GET {url} answered HTTP {resp.status_code}: {resp.text[:200]}")
    try:
        body = resp.json()
    except ValueError:
        raise ConnectError(
            f"GET {url} did not answer JSON: is this a labelwheel backend?"
        ) from None
    return dict(body) if isinstance(body, dict) else {"status": body}


def _backend_serving_version(
    backend_url: str, project_id: int, basic_auth: tuple[str, str] | None, timeout: float
) -> str | None:
    headers = basic_auth_header(*basic_auth) if basic_auth else {}
    try:
        resp = requests.get(
            backend_url.rstrip("/") + "/versions",
            params={"project": project_id},
            headers=headers,
            timeout=timeout,
        )
        body = resp.json() if resp.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    for detail in body.get("details") or []:
        if isinstance(detail, dict) and detail.get("serving") and detail.get("name"):
            if detail.get("project") in (None, project_id):
                return str(detail["name"])
    return None


def _prediction_versions(client: LabelStudioClient, project_id: int) -> tuple[str | None, Counter]:
    """The model version of the newest prediction in the project, and tasks per version."""
    preds = client.list_project_predictions(project_id)
    per_version: dict[str, set[int]] = {}
    newest: tuple[int, str] | None = None
    for p in preds:
        version = p.get("model_version")
        if not version:
            continue
        per_version.setdefault(str(version), set()).add(int(p.get("task", 0)))
        pid = int(p.get("id", 0))
        if newest is None or pid > newest[0]:
            newest = (pid, str(version))
    counts = Counter({v: len(tasks) for v, tasks in per_version.items()})
    return (newest[1] if newest else None), counts


def backend_predictor(
    backend_url: str,
    project_id: int,
    label_config: str,
    basic_auth: tuple[str, str] | None,
    timeout: float = 600.0,
) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """A function that asks the backend's ``/predict`` for a list of tasks, as Label Studio
    would (same body), and returns the predictions in task order. Tasks the backend left for
    later (an empty list: its time budget ran out) are asked for again until every task has
    its prediction; each request makes progress, and one that does not is an error."""
    url = backend_url.rstrip("/") + "/predict"
    auth = basic_auth_header(*basic_auth) if basic_auth else {}
    session = requests.Session()

    def predict(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any] | None] = [None] * len(tasks)
        pending = list(range(len(tasks)))
        while pending:
            results = ask([tasks[i] for i in pending])
            later = []
            for i, result in zip(pending, results, strict=True):
                if isinstance(result, dict):
                    out[i] = dict(result)
                elif result == []:
                    later.append(i)
                else:
                    raise ConnectError(f"POST {url}: a result is neither a prediction nor []")
            if len(later) == len(pending):
                raise ConnectError(f"POST {url}: no task answered ({len(later)} left for later)")
            pending = later
        return [r for r in out if r is not None]

    def ask(tasks: list[dict[str, Any]]) -> list[Any]:
        body = {
            "tasks": [{"id": int(t["id"]), "data": t.get("data") or {}} for t in tasks],
            "project": f"{int(project_id)}.{int(time.time())}",
            "label_config": label_config,
        }
        try:
            resp = session.post(url, json=body, headers=auth, timeout=timeout)
        except requests.RequestException as exc:
            raise ConnectError(f"POST {url}: {exc.__class__.__name__}: {exc}") from None
        if resp.status_code != 200:
            raise ConnectError(f"POST {url} answered HTTP {resp.status_code}: {resp.text[:300]}")
        results = resp.json().get("results")
        if not isinstance(results, list) or len(results) != len(tasks):
            raise ConnectError(f"POST {url}: expected {len(tasks)} results")
        return results

    return predict


def _predict_all(
    client: LabelStudioClient,
    project_id: int,
    label_config: str,
    backend_url: str,
    basic_auth: tuple[str, str] | None,
    serving: str | None,
    pacing: PublishPacing,
    pool_wait: float = 3600.0,
    on_status: Callable[[str], None] | None = None,
) -> int:
    """Predict every task through the backend and import the predictions (paced), except those
    Label Studio already holds a prediction of the same version of. Returns how many tasks
    were asked for."""
    existing: dict[int, set[str]] = {}
    for pred in client.list_project_predictions(project_id):
        existing.setdefault(int(pred.get("task", 0)), set()).add(str(pred.get("model_version")))
    tasks = [
        {"id": int(t["id"]), "data": t.get("data")}
        for t in client.iter_tasks(project_id, page_size=500)
        if not (serving and serving in existing.get(int(t["id"]), ()))
    ]
    if not tasks:
        return 0
    predict = backend_predictor(backend_url, project_id, label_config, basic_auth)
    # One task first: it starts the backend's ranking of the whole pool; the rest are asked for
    # once that ranking is ready, so that their scores are final (a provisional score would
    # cost Label Studio one more write per task when the backend replaces it).
    predict(tasks[:1])
    wait_for_pool(backend_url, project_id, basic_auth, pool_wait, on_status)
    push_predictions(client, project_id, tasks, predict, pacing, existing=existing)
    return len(tasks)


POOL_DONE = ("ready", "published", "failed")


def wait_for_pool(
    backend_url: str,
    project_id: int,
    basic_auth: tuple[str, str] | None,
    limit: float,
    on_status: Callable[[str], None] | None = None,
    interval: float = 2.0,
) -> str | None:
    """Wait (at most ``limit`` seconds) until the backend's pool ranking job of the project has
    ended, reporting its progress (``embedding 1200 of 20000``) through ``on_status`` when it
    changes. Returns the job's last state (None: the backend reports no job)."""
    headers = basic_auth_header(*basic_auth) if basic_auth else {}
    url = backend_url.rstrip("/") + "/versions"
    deadline = time.monotonic() + max(0.0, limit)
    said = None
    state = None
    while True:
        try:
            resp = requests.get(url, params={"project": project_id}, headers=headers, timeout=30)
            jobs = resp.json().get("pool") if resp.status_code == 200 else None
        except (requests.RequestException, ValueError, AttributeError):
            jobs = None
        job = next((j for j in jobs or [] if isinstance(j, dict)), None)
        if job is None:
            return None
        state = str(job.get("state"))
        message = str(job.get("message") or state)
        if on_status is not None and message != said:
            on_status(f"backend: pool {message}")
            said = message
        if state in POOL_DONE or time.monotonic() >= deadline:
            return state
        time.sleep(interval)


def _unsupported_hint(client: LabelStudioClient, project_id: int) -> str:
    from labelwheel.label_config import UnsupportedConfigError, parse_classification_config

    try:
        parse_classification_config(str(client.get_project(project_id).get("label_config", "")))
    except UnsupportedConfigError as exc:
        return f" (labelwheel cannot serve this project's label config: {exc})"
    except LabelStudioError:
        return ""
    return ""


def connect_project(
    client: LabelStudioClient,
    project_id: int,
    backend_url: str = DEFAULT_BACKEND_URL,
    *,
    title: str = "labelwheel",
    basic_auth: tuple[str, str] | None = None,
    retrieve: bool = True,
    view_title: str = VIEW_TITLE,
    timeout: float = 10.0,
    pacing: PublishPacing | None = None,
    pool_wait: float = 3600.0,
    on_status: Callable[[str], None] | None = None,
) -> ConnectResult:
    """Connect (or repair the connection of) a project to the backend; see the module doc.

    ``pool_wait``: how long to wait for the backend's ranking of the whole pool before writing
    predictions (their scores come from it); ``on_status`` receives progress lines.
    Raises :class:`ConnectError` naming the failed step (``LabelStudioError`` messages included).
    """
    project_id = int(project_id)
    backend_url = backend_url.strip().rstrip("/")
    warnings: list[str] = []
    check_backend(backend_url, timeout)
    try:
        project = client.get_project(project_id)
    except LabelStudioError as exc:
        raise ConnectError(f"cannot read project {project_id}: {exc}") from None

    try:
        ml = client.ensure_ml_backend(project_id, backend_url, title, basic_auth)
    except LabelStudioError as exc:
        hint = _unsupported_hint(client, project_id)
        if not hint and "401" in str(exc):
            hint = (
                " (the backend refused the basic-auth credentials: BASIC_AUTH_USER and "
                "BASIC_AUTH_PASS must be the ones the backend was started with)"
            )
        raise ConnectError(
            f"Label Studio could not connect the ML backend at {backend_url} to project "
            f"{project_id}: {exc}{hint}"
        ) from None

    auth_header = basic_auth_header(*basic_auth) if basic_auth else {}
    try:
        client.ensure_webhook_headers(project_id, backend_url, auth_header)
        webhook_ids = [
            int(h["id"])
            for h in client.list_webhooks(project_id)
            if str(h.get("url", "")).startswith(backend_url)
        ]
    except LabelStudioError as exc:
        raise ConnectError(f"cannot set up the project's webhook: {exc}") from None

    if retrieve:
        serving = _backend_serving_version(backend_url, project_id, basic_auth, timeout)
        try:
            _predict_all(
                client,
                project_id,
                str(project.get("label_config", "")),
                backend_url,
                basic_auth,
                serving,
                pacing or DEFAULT_PACING,
                pool_wait,
                on_status,
            )
        except (LabelStudioError, ConnectError, ValueError) as exc:
            raise ConnectError(f"writing predictions failed: {exc}") from None

    version = _backend_serving_version(backend_url, project_id, basic_auth, timeout)
    try:
        newest, per_version = _prediction_versions(client, project_id)
    except LabelStudioError as exc:
        raise ConnectError(f"cannot read the project's predictions: {exc}") from None
    if version is None or (newest is not None and per_version.get(version, 0) == 0):
        version = newest
    predicted = per_version.get(version, 0) if version else 0
    if version and predicted:
        try:
            client.set_project_model_version(project_id, version)
        except LabelStudioError as exc:
            warnings.append(f"could not set the project's model version to {version}: {exc}")
    elif retrieve:
        warnings.append(
            "no predictions yet (an empty project?): import tasks, then run connect again "
            "or use 'Retrieve predictions' in the Data Manager"
        )

    try:
        view = client.ensure_view(project_id, view_title, VIEW_ORDERING)
    except LabelStudioError as exc:
        raise ConnectError(f"cannot create the saved view {view_title!r}: {exc}") from None

    n_tasks = sum(1 for _ in client.iter_tasks(project_id))
    return ConnectResult(
        project_id=project_id,
        project_title=str(project.get("title", "")),
        ml_backend_id=int(ml["id"]),
        webhook_ids=webhook_ids,
        model_version=version if predicted else None,
        view_id=int(view["id"]),
        tasks=n_tasks,
        predicted=predicted,
        warnings=warnings,
    )


@click.command("connect")
@click.option("--project", "project_id", type=int, required=True, help="Label Studio project id.")
@label_studio_options
@click.option(
    "--backend-url",
    envvar="LABELWHEEL_BACKEND_URL",
    show_envvar=True,
    default=DEFAULT_BACKEND_URL,
    show_default=True,
    help="The backend's URL as Label Studio reaches it.",
)
@click.option("--title", default="labelwheel", show_default=True, help="ML backend title.")
@basic_auth_options()
@click.option(
    "--no-predictions",
    is_flag=True,
    help="Do not retrieve predictions now (large projects: use the Data Manager action later).",
)
@click.option(
    "--publish-chunk",
    type=click.IntRange(1, 5000),
    default=DEFAULT_PACING.chunk_size,
    show_default=True,
    help="Tasks per prediction import (or 'Retrieve predictions') request.",
)
@click.option(
    "--publish-duty",
    type=click.FloatRange(0.05, 1.0),
    default=DEFAULT_PACING.duty,
    show_default=True,
    help="Largest share of the time spent writing predictions: after a chunk of t seconds, "
    "pause t*(1-duty)/duty so that annotators' requests get their turn.",
)
@click.option("--timeout", type=float, default=30.0, show_default=True, help="HTTP timeout (s).")
def connect_command(
    project_id: int,
    url: str | None,
    api_key: str | None,
    backend_url: str,
    title: str,
    basic_auth_user: str | None,
    basic_auth_pass: str | None,
    no_predictions: bool,
    publish_chunk: int,
    publish_duty: float,
    timeout: float,
) -> None:
    """Connect a Label Studio project to the labelwheel ML backend (safe to re-run).

    Registers the backend (basic auth), puts the same credentials on the project's webhook,
    retrieves predictions, sets the project's model version and creates the saved view
    "labelwheel: most informative first" (ordered by prediction score, lowest first).
    """
    if not url:
        raise click.UsageError("no Label Studio URL: pass --url or set LABEL_STUDIO_URL")
    if not api_key:
        raise click.UsageError("no API key: pass --api-key or set LABEL_STUDIO_API_KEY")
    if bool(basic_auth_user) != bool(basic_auth_pass):
        raise click.UsageError(
            "give both --basic-auth-user and --basic-auth-pass (BASIC_AUTH_USER/BASIC_AUTH_PASS) "
            "or neither"
        )
    basic = (basic_auth_user, basic_auth_pass) if basic_auth_user and basic_auth_pass else None
    if basic is None:
        click.echo(
            "warning: no basic auth: the backend's endpoints are open to anyone who can reach it",
            err=True,
        )
    try:
        client = LabelStudioClient(url, api_key, timeout=timeout)
        result = connect_project(
            client,
            project_id,
            backend_url,
            title=title,
            basic_auth=basic,
            retrieve=not no_predictions,
            timeout=min(timeout, 30.0),
            pacing=PublishPacing(chunk_size=publish_chunk, duty=publish_duty),
            on_status=lambda line: click.echo(line, err=True),
        )
    except (ConnectError, LabelStudioError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.summary(client.url))
