"""Tasks a ``/predict`` left for later, brought to Label Studio once their images are embedded.

A ``/predict`` that reaches ``LABELWHEEL_PREDICT_BUDGET`` answers the tasks it has done and gives
the others an empty list, which Label Studio skips (:meth:`labelwheel.ml_backend.model.Model.
predict`). Those tasks are remembered here. When the project's pool job is ready (it has
embedded every unlabelled image), or at once in a thread of its own when no job is coming, their
images are embedded without a deadline and Label Studio is asked to "Retrieve predictions" for
exactly them (paced like a publish). Label Studio asks ``/predict`` again, which now answers from
the embedding cache, and stores the predictions; a task that got a prediction of the version
meanwhile (the user retrieved again) is skipped by Label Studio itself, so nothing is stored
twice. Without a Label Studio URL and key, or with ``LABELWHEEL_PUBLISH=false``, nothing is
asked: the user's next "Retrieve predictions" brings them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from labelwheel.publishing import DEFAULT_PACING, PublishPacing, retrieve_in_chunks

if TYPE_CHECKING:  # pragma: no cover
    from labelwheel.ml_backend.link import LabelStudioLink

log = logging.getLogger("labelwheel.ml_backend")

MAX_TASKS = 100_000
"""Most tasks remembered per project (more are left to the user's next retrieve)."""


class DeferredPredictions:
    """Per-project tasks owed a prediction in Label Studio (thread-safe)."""

    def __init__(
        self,
        link: LabelStudioLink,
        embed: Callable[[Sequence[str | None]], Any],
        publish: bool = True,
        pacing: PublishPacing = DEFAULT_PACING,
    ) -> None:
        self.link = link
        self.publish = publish
        self.pacing = pacing
        self._embed = embed
        self._lock = threading.Lock()
        self._owed: dict[int, dict[int, str | None]] = {}
        self._retrieved = 0

    def remember(self, project_id: int, refs_by_task: Mapping[int, str | None]) -> None:
        """Tasks (id -> image reference) that a ``/predict`` answered with an empty list."""
        with self._lock:
            owed = self._owed.setdefault(project_id, {})
            for task_id, ref in refs_by_task.items():
                if len(owed) >= MAX_TASKS:
                    break
                owed[task_id] = ref

    def pending(self, project_id: int | None = None) -> int:
        """How many tasks are owed (in one project, or in all)."""
        with self._lock:
            if project_id is not None:
                return len(self._owed.get(project_id, {}))
            return sum(len(owed) for owed in self._owed.values())

    @property
    def retrieved(self) -> int:
        """Tasks whose predictions Label Studio was asked to retrieve so far."""
        with self._lock:
            return self._retrieved

    def retrieve_soon(self, project_id: int) -> None:
        """:meth:`retrieve` in a thread of its own (when no pool job will call it)."""
        threading.Thread(
            target=self.retrieve, args=(project_id,), name=f"lw-deferred-{project_id}", daemon=True
        ).start()

    def retrieve(self, project_id: int) -> int:
        """Embed the owed tasks' images, then have Label Studio retrieve their predictions.
        Returns how many tasks it asked for; never raises (failures are logged)."""
        with self._lock:
            owed = self._owed.pop(project_id, {})
        if not owed:
            return 0
        client = self.link.client() if self.publish else None
        if client is None:
            log.info(
                "project %d: %d tasks left for later by /predict; 'Retrieve predictions' in "
                "Label Studio brings them (the backend has no Label Studio key, or "
                "LABELWHEEL_PUBLISH is off)",
                project_id,
                len(owed),
            )
            return 0
        try:
            self._embed([ref for ref in owed.values() if ref])
            asked = retrieve_in_chunks(client, project_id, sorted(owed), self.pacing)
        except Exception as exc:
            log.warning(
                "project %d: %d tasks left for later by /predict not retrieved: %s "
                "('Retrieve predictions' in Label Studio brings them)",
                project_id,
                len(owed),
                exc,
            )
            return 0
        with self._lock:
            self._retrieved += asked
        log.info(
            "project %d: Label Studio retrieved the predictions of %d tasks /predict left for "
            "later",
            project_id,
            asked,
        )
        return asked
