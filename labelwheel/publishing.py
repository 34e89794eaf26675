"""Writing a model version's predictions into Label Studio without holding up its annotators.

Two ways to get predictions stored:

- **import** (the default, :func:`push_predictions`): the caller computes the predictions (the
  backend in-process; ``labelwheel connect`` through the backend's ``/predict``) and posts them
  to ``POST /api/projects/<id>/import/predictions``, a chunk at a time. Label Studio stores a
  chunk with one bulk insert and one recount of the project's task counters;
- **retrieve** (:func:`retrieve_in_chunks`): Label Studio's "Retrieve predictions" action, which
  asks the backend's ``/predict`` and stores each prediction on its own: an insert and two task
  saves, each of which rewrites the project summary's row (measured with py-spy on 1.23.2: six
  or more separate writes per task, about 150 ms a task at 20,000 tasks on a loaded 2-core
  machine). Used where the import endpoint is missing.

On Label Studio's default SQLite every write needs the whole database: while one waits for a long
read (an annotator's ``/next`` orders the whole project), new readers wait too, and after 5 s they
fail with 500 "database is locked". So writes come in chunks with pauses
(:class:`PublishPacing`): the writer keeps its writes to at most ``duty`` of the wall time, and a
slow chunk (a busy Label Studio) makes it step back further. A chunk refused with 5xx is tried
again with backoff; an import is not idempotent, so before trying again the writer checks
whether the chunk was stored after all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from labelwheel.ls_api import LabelStudioClient, LabelStudioError
from labelwheel.ls_transport import BUSY_STATUSES

__all__ = [
    "DEFAULT_PACING",
    "PredictFn",
    "PublishPacing",
    "import_chunk",
    "is_labelled",
    "publish_version",
    "push_predictions",
    "retrieve_in_chunks",
]

log = logging.getLogger("labelwheel.publishing")

T = TypeVar("T")

PredictFn = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
"""Tasks (``id``, ``data``) -> one prediction each (``result``, ``score``, ``model_version``)."""

_MISSING_ENDPOINT = (404, 405)


@dataclass(frozen=True)
class PublishPacing:
    """How predictions are written into Label Studio: ``chunk_size`` tasks per request, each
    chunk tried again ``busy_retries`` times with backoff when Label Studio answers 5xx, and
    after each chunk a pause that keeps the writes to at most ``duty`` of the wall time:
    ``chunk seconds * (1 - duty) / duty``, at least ``pause`` and at most ``max_pause``.

    Label Studio's cost per request grows with the project (its import recounts every task's
    counters: measured 3 s per request at the start of a 20,000-task project, 28 s once most
    tasks had a prediction; the retrieve action prepares a query over the project), so chunks
    are large.
    """

    chunk_size: int = 2000
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

    def chunks(self, items: Sequence[T]) -> Iterator[tuple[int, Sequence[T]]]:
        """``(start, chunk)`` for consecutive chunks of ``items``; between two chunks it sleeps
        :meth:`pause_after` the time the caller spent on the previous one."""
        for start in range(0, len(items), self.chunk_size):
            began = time.monotonic()
            yield start, items[start : start + self.chunk_size]
            if start + self.chunk_size < len(items):
                time.sleep(self.pause_after(time.monotonic() - began))


DEFAULT_PACING = PublishPacing()


def is_labelled(task: dict[str, Any]) -> bool:
    """Whether a task as Label Studio lists it has an annotation."""
    if task.get("is_labeled"):
        return True
    return int(task.get("total_annotations") or 0) > 0


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
    for start, chunk in pacing.chunks(ids):
        client.retrieve_predictions(project_id, chunk, busy_retries=pacing.busy_retries)
        if progress is not None:
            progress(start + len(chunk), total)
    return total


def _stored(client: LabelStudioClient, item: dict[str, Any]) -> bool:
    """Whether Label Studio holds ``item``'s prediction (same task, version and score)."""
    try:
        found = client.list_predictions(int(item["task"]))
    except LabelStudioError:
        return False
    return any(
        p.get("model_version") == item["model_version"]
        and p.get("score") is not None
        and abs(float(p["score"]) - float(item["score"])) < 1e-9
        for p in found
    )


def import_chunk(
    client: LabelStudioClient, project_id: int, items: list[dict[str, Any]], busy_retries: int
) -> None:
    """Import one chunk of predictions (``task``, ``result``, ``score``, ``model_version``).

    On 5xx it backs off and tries again, unless the chunk turns out to be stored already (Label
    Studio inserts a chunk in one transaction, then recounts: a failure after the insert must
    not store it twice). Raises :class:`LabelStudioError` when it keeps failing.
    """
    delay = 0.5
    for attempt in range(busy_retries + 1):
        try:
            client.import_predictions(project_id, items)
            return
        except LabelStudioError as exc:
            if exc.status not in BUSY_STATUSES or attempt == busy_retries:
                raise
            if _stored(client, items[0]) and _stored(client, items[-1]):
                log.info("project %d: a refused chunk was stored after all", project_id)
                return
            log.info(
                "project %d: Label Studio busy (%s); chunk again in %.1f s", project_id, exc, delay
            )
        time.sleep(delay)
        delay = min(delay * 2, 8.0)


def push_predictions(
    client: LabelStudioClient,
    project_id: int,
    tasks: Sequence[dict[str, Any]],
    predict: PredictFn,
    pacing: PublishPacing = DEFAULT_PACING,
    progress: Callable[[int, int], None] | None = None,
    existing: Mapping[int, Collection[str]] | None = None,
) -> list[str]:
    """Predict ``tasks`` (``id``, ``data``) with ``predict`` and import the predictions, a chunk
    at a time, paced by ``pacing``. Returns the model versions written (normally one).

    ``existing``: model versions each task already has a prediction of; a prediction of one of
    those is not imported again (re-running never duplicates).

    Falls back to Label Studio's retrieve action when its import endpoint is missing (404/405).
    """
    project_id = int(project_id)
    total = len(tasks)
    versions: list[str] = []
    for start, part in pacing.chunks(tasks):
        chunk = [dict(t) for t in part]
        predictions = predict(chunk)
        if len(predictions) != len(chunk):
            raise ValueError(
                f"the backend answered {len(predictions)} predictions for {len(chunk)} tasks"
            )
        items = [
            {
                "task": int(task["id"]),
                "result": pred.get("result") or [],
                "score": float(pred.get("score", 1.0)),
                "model_version": str(pred.get("model_version") or ""),
            }
            for task, pred in zip(chunk, predictions, strict=True)
        ]
        if existing:
            items = [
                item
                for item, task in zip(items, chunk, strict=True)
                if item["model_version"] not in existing.get(int(task["id"]), ())
            ]
        for pred_version in {str(item["model_version"]) for item in items}:
            if pred_version and pred_version not in versions:
                versions.append(pred_version)
        try:
            if items:
                import_chunk(client, project_id, items, pacing.busy_retries)
        except LabelStudioError as exc:
            if exc.status not in _MISSING_ENDPOINT:
                raise
            log.warning(
                "project %d: no prediction import (%s); retrieving instead", project_id, exc
            )
            rest = [int(t["id"]) for t in tasks[start:]]
            retrieve_in_chunks(client, project_id, rest, pacing)
            break
        if progress is not None:
            progress(start + len(chunk), total)
    return versions


def publish_version(
    client: LabelStudioClient,
    project_id: int,
    version: str,
    predict: PredictFn | None = None,
    tasks: Sequence[dict[str, Any]] | None = None,
    *,
    pacing: PublishPacing = DEFAULT_PACING,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Make Label Studio rank by a new model version: predictions for ``tasks`` (default: every
    task without an annotation), then the project's model version.

    With ``predict`` the predictions are computed by the caller and imported
    (:func:`push_predictions`); without, Label Studio's retrieve action asks the backend's
    ``/predict`` (which must already serve ``version``). Returns the number of tasks written.
    With no task to predict, the model version is left alone (Label Studio refuses a version
    without predictions).
    """
    project_id = int(project_id)
    if tasks is None:
        tasks = [t for t in client.iter_tasks(project_id, page_size=500) if not is_labelled(t)]
    if not tasks:
        return 0
    if predict is None:
        retrieve_in_chunks(client, project_id, [int(t["id"]) for t in tasks], pacing, progress)
    else:
        push_predictions(client, project_id, tasks, predict, pacing, progress)
    client.set_project_model_version(project_id, version, busy_retries=pacing.busy_retries)
    return len(tasks)
