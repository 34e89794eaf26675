"""``labelwheel connect``: wire a Label Studio project to the labelwheel ML backend.

One command a user runs once per project (re-running it repairs, never duplicates):

1. checks that the backend answers ``GET /health``;
2. registers the backend as the project's ML backend, with basic auth (Label Studio then calls
   its ``/health`` and ``/setup``; a label config the backend cannot serve is reported here);
3. gives the project's webhook to the backend the same ``Authorization: Basic ...`` header, so
   that annotation events are authenticated too (Label Studio does not send the ML backend's
   credentials on event webhooks);
4. retrieves predictions for all tasks;
5. sets the project's model version to the version those predictions carry (Label Studio sets it
   to the backend's title on connect, and ``predictions_score`` only counts the project's
   version);
6. creates or replaces the saved Data Manager view "labelwheel: most informative first", ordered
   by prediction score ascending (lower score = label sooner).

:func:`publish_version` is what the backend calls after each training: new predictions for the
unlabelled tasks, then the project's model version.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import click
import requests

from labelwheel.cli_options import basic_auth_options, label_studio_options
from labelwheel.ls_api import LabelStudioClient, LabelStudioError

__all__ = [
    "VIEW_ORDERING",
    "VIEW_TITLE",
    "ConnectError",
    "ConnectResult",
    "PublishPacing",
    "basic_auth_header",
    "check_backend",
    "connect_command",
    "connect_project",
    "publish_version",
    "retrieve_in_chunks",
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
) -> ConnectResult:
    """Connect (or repair the connection of) a project to the backend; see the module doc.

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
        try:
            retrieve_in_chunks(
                client,
                project_id,
                [int(t["id"]) for t in client.iter_tasks(project_id)],
                pacing or DEFAULT_PACING,
            )
        except LabelStudioError as exc:
            raise ConnectError(f"retrieving predictions failed: {exc}") from None

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


@dataclass(frozen=True)
class PublishPacing:
    """How predictions are written into Label Studio: in chunks of ``chunk_size`` tasks, each
    chunk tried again ``busy_retries`` times with backoff when Label Studio answers 5xx.

    On Label Studio's default SQLite, every prediction it stores is a write that needs the whole
    database: while one waits for a long read (an annotator's ``/next`` orders the whole project),
    new readers wait too, and after 5 s they fail with 500 "database is locked". So after each
    chunk the writer pauses, long enough that its writes take at most ``duty`` of the wall
    time: the pause is ``chunk seconds * (1 - duty) / duty``, at least ``pause`` and at most
    ``max_pause``. A slow chunk means a busy Label Studio, and the writer steps back further.

    Label Studio's retrieve action costs a part per request that grows with the project (it
    prepares a query over the project; measured: a chunk of 50 took about 4 s at 1,000 tasks and
    10 s at 20,000 on a loaded machine) besides a part per task, so chunks are large.
    """

    chunk_size: int = 200
    pause: float = 0.25
    busy_retries: int = 6
    duty: float = 0.5
    max_pause: float = 30.0

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        if self.pause < 0:
            raise ValueError("pause must be >= 0")
        if self.busy_retries < 0:
            raise ValueError("busy_retries must be >= 0")
        if not 0.0 < self.duty <= 1.0:
            raise ValueError("duty must be in (0, 1]: the share of time spent writing")
        if self.max_pause < self.pause:
            raise ValueError("max_pause must be >= pause")

    def pause_after(self, chunk_seconds: float) -> float:
        """Seconds to wait after a chunk that took ``chunk_seconds``."""
        wanted = max(0.0, chunk_seconds) * (1.0 - self.duty) / self.duty
        return min(self.max_pause, max(self.pause, wanted))


DEFAULT_PACING = PublishPacing()


def retrieve_in_chunks(
    client: LabelStudioClient,
    project_id: int,
    task_ids: Sequence[int],
    pacing: PublishPacing = DEFAULT_PACING,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Run Label Studio's "Retrieve predictions" for ``task_ids``, paced by ``pacing``.

    ``progress(done, total)`` is called after each chunk. Returns the number of tasks asked for.
    """
    ids = [int(t) for t in task_ids]
    total = len(ids)
    for start in range(0, total, pacing.chunk_size):
        chunk = ids[start : start + pacing.chunk_size]
        began = time.monotonic()
        client.retrieve_predictions(project_id, chunk, busy_retries=pacing.busy_retries)
        if progress is not None:
            progress(start + len(chunk), total)
        if start + len(chunk) < total:
            time.sleep(pacing.pause_after(time.monotonic() - began))
    return total


def publish_version(
    client: LabelStudioClient,
    project_id: int,
    version: str,
    task_ids: Sequence[int] | None = None,
    *,
    pacing: PublishPacing = DEFAULT_PACING,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Make Label Studio rank by a new model version: retrieve predictions for ``task_ids``
    (default: every task without an annotation) in paced chunks (:class:`PublishPacing`), then
    set the project's model version.

    Label Studio asks the backend's ``/predict`` for every selected task lacking a prediction of
    the version the backend's ``/setup`` reports, so the backend must already serve ``version``.
    Returns the number of tasks asked for. With no task to predict, the model version is left
    alone (Label Studio refuses a version without predictions).
    """
    project_id = int(project_id)
    if task_ids is None:
        ids = [int(t["id"]) for t in client.iter_tasks(project_id) if not _is_labelled(t)]
    else:
        ids = [int(t) for t in task_ids]
    if not ids:
        return 0
    retrieve_in_chunks(client, project_id, ids, pacing, progress)
    client.set_project_model_version(project_id, version, busy_retries=pacing.busy_retries)
    return len(ids)


def _is_labelled(task: dict[str, Any]) -> bool:
    if task.get("is_labeled"):
        return True
    return int(task.get("total_annotations") or 0) > 0


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
    help="Tasks per 'Retrieve predictions' request.",
)
@click.option(
    "--publish-duty",
    type=click.FloatRange(0.05, 1.0),
    default=DEFAULT_PACING.duty,
    show_default=True,
    help="Largest share of the time spent retrieving: after a chunk of t seconds, "
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
        )
    except (ConnectError, LabelStudioError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.summary(client.url))
