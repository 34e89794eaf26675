"""Background work of the ML backend: training and embedding new tasks, off the request path.

:class:`Worker` runs two daemon threads:

- the training thread takes project ids from a queue. Requests for a project that is already
  queued are coalesced; a request for a project that is training right now schedules exactly one
  more run after it. There is one training thread per process, so one project never trains twice
  at once. A failed training is recorded and the last good version keeps serving. The queue is
  durable: :meth:`Worker.request_training` writes the request to the store before it returns
  (so before the webhook is acknowledged), and :meth:`Worker.start` re-queues every training that
  was owed when the previous process died (see :mod:`labelwheel.ml_backend.store_training`);
- the embedding thread embeds the images of newly created tasks (``TASKS_CREATED``) into the
  cache so that later ``/predict`` calls and pool rankings are fast, then starts the project's
  pool ranking again in the background (:mod:`labelwheel.ml_backend.pool_jobs`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from labelwheel.head import NotEnoughLabels, TrainingError
from labelwheel.ml_backend.model import Model
from labelwheel.ml_backend.store import Store, Version
from labelwheel.ml_backend.store_training import MAX_ATTEMPTS

log = logging.getLogger("labelwheel.ml_backend")


class Worker:
    """Training and embedding threads with coalescing queues."""

    def __init__(
        self,
        model: Model,
        store: Store,
        config_for: Callable[[int], Any],
        on_version: Callable[[int, Version], None] | None = None,
        on_run: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.store = store
        self.config_for = config_for
        self.on_version = on_version
        self.on_run = on_run
        self._cond = threading.Condition()
        self._train_queue: deque[int] = deque()
        self._queued: set[int] = set()
        self._again: set[int] = set()
        self.running: set[int] = set()
        self._embed_queue: deque[tuple[int, list[str]]] = deque()
        self._embed_cond = threading.Condition()
        self._stop = False
        self._threads: list[threading.Thread] = []
        self.last_error: dict[int, str] = {}

    def start(self) -> None:
        """Re-queue the trainings owed from before a restart, then start the threads
        (idempotent)."""
        if self._threads:
            return
        self._stop = False
        self._replay_owed_trainings()
        for target, name in ((self._train_loop, "lw-train"), (self._embed_loop, "lw-embed")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the threads to stop and wait up to ``timeout`` seconds for each."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        with self._embed_cond:
            self._embed_cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    # -- requests --------------------------------------------------------------------------------

    def _replay_owed_trainings(self) -> None:
        for project_id, attempts in self.store.queued_trainings():
            if attempts >= MAX_ATTEMPTS:
                message = (
                    f"given up: {attempts} attempts of this training were interrupted "
                    "(the process died each time); send START_TRAINING to try again"
                )
                self.store.drop_queued_training(project_id)
                run_id = self.store.start_run(project_id)
                self.store.finish_run(run_id, "failed", message)
                self.last_error[project_id] = message
                log.error("project %d: owed training %s", project_id, message)
                continue
            log.warning(
                "project %d: re-queued a training acknowledged before the restart%s",
                project_id,
                f" (attempt {attempts + 1})" if attempts else "",
            )
            self._enqueue(project_id)

    def request_training(self, project_id: int) -> str:
        """Queue a training of a project; returns ``queued``, ``coalesced`` or ``rescheduled``.

        The request is on disk when this returns: it runs even if the process dies first.
        """
        self.store.queue_training(project_id)
        return self._enqueue(project_id)

    def _enqueue(self, project_id: int) -> str:
        with self._cond:
            if project_id in self._queued:
                return "coalesced"
            if project_id in self.running:
                self._again.add(project_id)
                return "rescheduled"
            self._queued.add(project_id)
            self._train_queue.append(project_id)
            self._cond.notify_all()
            return "queued"

    def request_embedding(self, project_id: int, refs: list[str]) -> None:
        """Queue the images of new tasks for embedding."""
        if not refs:
            return
        with self._embed_cond:
            self._embed_queue.append((project_id, refs))
            self._embed_cond.notify_all()

    def status(self) -> dict[str, Any]:
        """What is queued and running now."""
        with self._cond:
            return {
                "training": sorted(self.running),
                "queued": list(self._train_queue),
                "embedding_jobs": len(self._embed_queue),
            }

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until nothing is queued or running (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                busy = bool(self._train_queue or self.running or self._again)
            with self._embed_cond:
                busy = busy or bool(self._embed_queue) or self._embedding
            if not busy:
                return True
            time.sleep(0.02)
        return False

    _embedding = False

    # -- loops -------------------------------------------------------------------------------------

    def _train_loop(self) -> None:
        while True:
            with self._cond:
                while not self._train_queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                project_id = self._train_queue.popleft()
                self._queued.discard(project_id)
                self.running.add(project_id)
            owed = False
            try:
                token = self.store.training_started(project_id)
                self.train_now(project_id)
                owed = self.store.training_finished(project_id, token)
            except Exception as exc:  # the store failed: the request stays owed on disk
                log.error("project %d: training queue bookkeeping failed: %s", project_id, exc)
            finally:
                with self._cond:
                    self.running.discard(project_id)
                    if project_id in self._again or owed:
                        self._again.discard(project_id)
                        if project_id not in self._queued and not self._stop:
                            self._queued.add(project_id)
                            self._train_queue.append(project_id)
                    self._cond.notify_all()

    def train_now(self, project_id: int) -> Version | None:
        """Run one training of a project in this thread; never raises."""
        run_id = self.store.start_run(project_id)
        self.store.take_pending_changes(project_id)
        started = time.perf_counter()
        try:
            config = self.config_for(project_id)
            if config is None:
                raise TrainingError("no label config known for this project (call /setup first)")
            version = self.model.train(project_id, config, run_id=run_id)  # run marked ok
        except NotEnoughLabels as exc:
            self.store.finish_run(run_id, "skipped", str(exc))
            log.info("project %d: training skipped: %s", project_id, exc)
            self._count("skipped")
            return None
        except Exception as exc:
            message = (
                str(exc) if isinstance(exc, TrainingError) else f"{exc.__class__.__name__}: {exc}"
            )
            self.store.finish_run(run_id, "failed", message)
            self.last_error[project_id] = message
            log.error(
                "project %d: training failed, %s keeps serving: %s",
                project_id,
                self.model.version_name(project_id),
                message,
            )
            self._count("failed")
            return None
        self.last_error.pop(project_id, None)
        self._count("ok")
        log.info(
            "project %d: trained %s on %d labels in %.1f s (cv accuracy %s)",
            project_id,
            version.name,
            version.n_labels,
            time.perf_counter() - started,
            "n/a" if version.cv_accuracy is None else f"{version.cv_accuracy:.3f}",
        )
        if self.on_version is not None:
            try:
                self.on_version(project_id, version)
            except Exception as exc:
                log.error("project %d: publishing %s failed: %s", project_id, version.name, exc)
        return version

    def _count(self, status: str) -> None:
        if self.on_run is not None:
            self.on_run(status)

    def _embed_loop(self) -> None:
        while True:
            with self._embed_cond:
                while not self._embed_queue and not self._stop:
                    self._embed_cond.wait()
                if self._stop:
                    return
                project_id, refs = self._embed_queue.popleft()
                self._embedding = True
            try:
                embedded = self.model.embed_pool_refs(refs)
                failed = [e for e in embedded.errors if e is not None]
                for err in failed[:5]:
                    log.warning("project %d: new task not embedded: %s", project_id, err)
                log.info(
                    "project %d: embedded %d new task images (%d failed)",
                    project_id,
                    len(refs) - len(failed),
                    len(failed),
                )
                self.model.refresh_pool(project_id, self.config_for(project_id))
            except Exception as exc:
                log.error("project %d: embedding new tasks failed: %s", project_id, exc)
            finally:
                with self._embed_cond:
                    self._embedding = False
