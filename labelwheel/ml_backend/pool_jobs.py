"""Pool rankings as background jobs: one thread per project, a bounded number at once.

Ranking a project's pool means listing its tasks from Label Studio, embedding every unlabelled
image (cached by content hash, so only new images cost a backbone pass) and ordering the pool
(:class:`~labelwheel.ml_backend.ranking.Rankings`). On a large project that takes minutes, far
longer than Label Studio waits for ``/predict`` (100 s), so it never runs inside a request:

- :meth:`PoolJobs.ensure` starts a project's job unless one is running; a job that finishes while
  the project's pool was invalidated again (new tasks, new version) computes again;
- at most ``LABELWHEEL_POOL_JOBS`` jobs compute at once (the others are ``queued``); each project
  has its own thread, so one project's big pool never holds another project's requests;
- each job reports ``queued`` → ``listing`` → ``embedding k of N`` → ``ranking`` → ``ready``
  (→ ``published`` once the provisional scores it owes are replaced) or ``failed`` with a reason,
  readable through :meth:`PoolJobs.progress` and logged at least every 10 s;
- ``/predict`` waits at most ``LABELWHEEL_PREDICT_POOL_WAIT`` seconds for a job; the tasks it
  answers with a provisional score are remembered (:meth:`PoolJobs.remember_provisional`) and,
  when the job is ready, their predictions of the serving version get the pool score in Label
  Studio (``PATCH /api/predictions/<id>``, paced like a publish);
- when a job ends, ``after_ready(project_id)`` runs in its thread: the backend hands there the
  tasks a ``/predict`` left for later (:mod:`labelwheel.ml_backend.deferred`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labelwheel.publishing import DEFAULT_PACING, PublishPacing

if TYPE_CHECKING:  # pragma: no cover
    from labelwheel.label_config import ClassificationConfig
    from labelwheel.ml_backend.link import LabelStudioLink
    from labelwheel.ml_backend.ranking import PoolRanking, Rankings

log = logging.getLogger("labelwheel.ml_backend")

LOG_EVERY_S = 10.0
"""Longest silence in the log while a job makes progress."""

REPLACE_EACH_PAUSE_S = 0.05
"""Pause between two score writes inside a chunk; between chunks the publishing pace
(:class:`labelwheel.connect.PublishPacing`, ``LABELWHEEL_PUBLISH_DUTY``) applies, so that
annotators' own requests on Label Studio's SQLite get their turn."""
REPLACE_PASSES = 4
"""Passes over the provisional tasks: a prediction Label Studio has not stored yet (its
``/predict`` answer is still on the way) is looked for again on the next pass."""
REPLACE_PASS_DELAY_S = 2.0
PER_TASK_LOOKUPS = 100
"""Up to this many provisional tasks, their predictions are looked up task by task."""


@dataclass
class JobProgress:
    """What one project's pool job is doing (a snapshot is returned by :meth:`as_dict`)."""

    project_id: int
    state: str = "queued"  # queued listing embedding ranking ready published failed
    done: int = 0
    total: int = 0
    reason: str | None = None
    version: str | None = None
    pool_size: int | None = None
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    runs: int = 0
    provisional_pending: int = 0
    provisional_replaced: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able snapshot, with a one-line ``message`` like ``embedding 120 of 20000``."""
        message = self.state
        if self.state == "embedding":
            message = f"embedding {self.done} of {self.total}"
        elif self.state == "failed" and self.reason:
            message = f"failed: {self.reason}"
        return {
            "project": self.project_id,
            "state": self.state,
            "message": message,
            "done": self.done,
            "total": self.total,
            "reason": self.reason,
            "version": self.version,
            "pool_size": self.pool_size,
            "queued_at": self.queued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "runs": self.runs,
            "provisional_pending": self.provisional_pending,
            "provisional_replaced": self.provisional_replaced,
        }


STATE_CODES = {
    "queued": 0,
    "listing": 1,
    "embedding": 2,
    "ranking": 3,
    "ready": 4,
    "published": 5,
    "failed": -1,
}
"""Numeric form of a job's state for the ``labelwheel_pool_job_state`` gauge."""


class PoolJobs:
    """Per-project background pool rankings with progress (thread-safe)."""

    def __init__(
        self,
        rankings: Rankings,
        link: LabelStudioLink,
        max_jobs: int,
        publish: bool = True,
        current_version: Callable[[int], str] | None = None,
        pacing: PublishPacing = DEFAULT_PACING,
        after_ready: Callable[[int], Any] | None = None,
    ) -> None:
        self.rankings = rankings
        self._after_ready = after_ready
        self.pacing = pacing
        self.link = link
        self.publish = publish
        self._current_version = current_version
        self._slots = threading.BoundedSemaphore(max(1, int(max_jobs)))
        self._cond = threading.Condition()
        self._jobs: dict[int, JobProgress] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._configs: dict[int, ClassificationConfig] = {}
        # project -> {task id: version it was answered under with a provisional score}
        self._provisional: dict[int, dict[int, str]] = {}
        self._stop = False

    # -- starting and waiting -------------------------------------------------------------------

    def ensure(self, project_id: int, config: ClassificationConfig) -> None:
        """Start the project's pool job unless its ranking is valid or a job is running."""
        if self.rankings.cached(project_id) is not None:
            return
        with self._cond:
            if self._stop:
                return
            self._configs[project_id] = config
            thread = self._threads.get(project_id)
            if thread is not None and thread.is_alive():
                return  # it computes again by itself if the pool changed meanwhile
            self._jobs[project_id] = JobProgress(project_id)
            thread = threading.Thread(
                target=self._run, args=(project_id,), name=f"lw-pool-{project_id}", daemon=True
            )
            self._threads[project_id] = thread
            thread.start()
        log.info("project %d: pool ranking queued", project_id)

    def wait(self, project_id: int, timeout: float | None) -> PoolRanking | None:
        """The project's valid ranking, waiting up to ``timeout`` seconds (None: until its job
        ends). None when it is not ready in time or the job failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                ranking = self.rankings.cached(project_id)
                if ranking is not None:
                    return ranking
                thread = self._threads.get(project_id)
                if thread is None or not thread.is_alive():
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(0.5 if left is None else min(left, 0.5))

    def wait_budget(self, project_id: int, budget: float) -> PoolRanking | None:
        """:meth:`wait`, but only until ``budget`` seconds after the job was queued: the first
        requests of a job share one budget, later ones answer at once (a connect of 20,000
        tasks asks 400 times while the job runs; none of them may wait again)."""
        with self._cond:
            job = self._jobs.get(project_id)
            queued = job.queued_at if job is not None else time.time()
        return self.wait(project_id, max(0.0, queued + budget - time.time()))

    def rank_now(self, project_id: int, config: ClassificationConfig) -> PoolRanking | None:
        """Start the job if needed and wait for it to end (background callers only)."""
        self.ensure(project_id, config)
        return self.wait(project_id, None)

    def remember_provisional(self, project_id: int, version: str, task_ids: list[int]) -> None:
        """Tasks answered with a provisional score under ``version``: their predictions get the
        pool score in Label Studio when the job is ready."""
        if not task_ids:
            return
        with self._cond:
            owed = self._provisional.setdefault(project_id, {})
            for task_id in task_ids:
                owed[task_id] = version
            job = self._jobs.get(project_id)
            if job is not None:
                job.provisional_pending = len(owed)

    def progress(self, project_id: int | None = None) -> dict[int, dict[str, Any]]:
        """Snapshots of the jobs (of one project, or all), by project id."""
        with self._cond:
            return {
                pid: job.as_dict()
                for pid, job in sorted(self._jobs.items())
                if project_id is None or pid == project_id
            }

    def busy(self) -> bool:
        """Whether a job is running."""
        with self._cond:
            return any(t.is_alive() for t in self._threads.values())

    def running(self, project_id: int) -> bool:
        """Whether the project's job is running (so its ``after_ready`` is still to come)."""
        with self._cond:
            thread = self._threads.get(project_id)
            return thread is not None and thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Stop starting jobs and wait a little for the running ones."""
        with self._cond:
            self._stop = True
            threads = list(self._threads.values())
            self._cond.notify_all()
        end = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))

    # -- the job --------------------------------------------------------------------------------

    def _set(self, project_id: int, **fields: Any) -> None:
        with self._cond:
            job = self._jobs[project_id]
            for key, value in fields.items():
                setattr(job, key, value)
            self._cond.notify_all()

    def _run(self, project_id: int) -> None:
        """Compute until the ranking is valid (the pool may change while it computes: new
        tasks, a new version), then replace the provisional scores owed."""
        try:
            with self._slots:
                while not self._stop:
                    with self._cond:
                        config = self._configs[project_id]
                    if self._compute(project_id, config) is None:
                        return
                    if self.rankings.cached(project_id) is None:
                        log.info("project %d: pool changed while ranking; again", project_id)
                        continue
                    self._replace_provisional(project_id)
                    if self.rankings.cached(project_id) is not None:
                        return
        except Exception as exc:  # a bug must not kill the thread silently
            log.exception("project %d: pool ranking failed", project_id)
            self._set(project_id, state="failed", reason=str(exc), finished_at=time.time())
        finally:
            with self._cond:
                self._cond.notify_all()
            if self._after_ready is not None and not self._stop:
                try:
                    self._after_ready(project_id)
                except Exception:
                    log.exception("project %d: after the pool job", project_id)

    def _compute(self, project_id: int, config: ClassificationConfig) -> PoolRanking | None:
        started = time.time()
        self._set(project_id, state="listing", started_at=started, done=0, total=0, reason=None)
        last: list[Any] = [time.monotonic(), "listing"]

        def on_progress(state: str, done: int, total: int) -> None:
            self._set(project_id, state=state, done=done, total=total)
            now = time.monotonic()
            if state == last[1] and now - last[0] < LOG_EVERY_S and done != total:
                return
            last[0], last[1] = now, state
            if state == "embedding":
                log.info("project %d: pool: embedding %d of %d", project_id, done, total)
            elif state == "listing":
                log.info("project %d: pool: listing, %d tasks so far", project_id, done)
            else:
                log.info("project %d: pool: %s %d tasks", project_id, state, total)

        try:
            ranking = self.rankings.compute(project_id, config, on_progress)
        except Exception as exc:
            log.warning("project %d: pool ranking failed: %s", project_id, exc)
            self._set(project_id, state="failed", reason=str(exc), finished_at=time.time())
            return None
        if ranking is None:
            reason = "Label Studio URL/key unknown: the pool cannot be listed"
            self._set(project_id, state="failed", reason=reason, finished_at=time.time())
            return None
        with self._cond:
            job = self._jobs[project_id]
            job.runs += 1
        self._set(
            project_id,
            state="ready",
            version=ranking.version,
            pool_size=ranking.pool_size,
            finished_at=time.time(),
        )
        log.info(
            "project %d: pool ranking ready: %d tasks under %s in %.1f s",
            project_id,
            ranking.pool_size,
            ranking.version,
            time.time() - started,
        )
        return ranking

    # -- replacing provisional scores ---------------------------------------------------------

    def _replace_provisional(self, project_id: int) -> None:
        client = self.link.client() if self.publish else None
        for attempt in range(REPLACE_PASSES):
            ranking = self.rankings.cached(project_id)
            with self._cond:
                owed = dict(self._provisional.get(project_id, {}))
            if ranking is None or not owed:
                break
            if client is None:
                with self._cond:
                    self._provisional.pop(project_id, None)
                break
            if attempt:
                time.sleep(REPLACE_PASS_DELAY_S)
            wanted = {t: v for t, v in owed.items() if v == ranking.version}
            stale = [t for t, v in owed.items() if v != ranking.version]
            try:
                done = self._patch_scores(client, project_id, ranking, wanted)
            except Exception as exc:
                log.warning("project %d: provisional scores not replaced: %s", project_id, exc)
                break
            with self._cond:
                left = self._provisional.get(project_id, {})
                for task_id in [*done, *stale]:
                    if left.get(task_id) == owed.get(task_id):
                        left.pop(task_id, None)
                job = self._jobs[project_id]
                job.provisional_replaced += len(done)
                job.provisional_pending = len(left)
            if done:
                log.info(
                    "project %d: %d provisional scores replaced by the pool ranking (%s)",
                    project_id,
                    len(done),
                    ranking.version,
                )
        with self._cond:
            job = self._jobs[project_id]
            ranking = self.rankings.cached(project_id)
            left = self._provisional.get(project_id, {})
            if ranking is not None and left:
                # never stored by Label Studio (a /predict from elsewhere, or its save failed):
                # nothing to replace; forget them so that the memory stays bounded
                missing = [t for t, v in left.items() if v == ranking.version]
                for task_id in missing:
                    left.pop(task_id, None)
                if missing:
                    log.info(
                        "project %d: %d provisional predictions not found in Label Studio",
                        project_id,
                        len(missing),
                    )
            job.provisional_pending = len(left)
            if job.state == "ready" and client is not None:
                job.state = "published"
            self._cond.notify_all()

    def _patch_scores(
        self, client: Any, project_id: int, ranking: PoolRanking, wanted: dict[int, str]
    ) -> list[int]:
        """PATCH the score of each wanted task's prediction of the ranking's version; returns
        the tasks done (and those that left the pool: labelled since, nothing to replace)."""
        if not wanted:
            return []
        found: dict[int, int] = {}
        # a few tasks: their own predictions; many: the project's list, read once
        queries = (
            [{"task": t} for t in sorted(wanted)]
            if len(wanted) <= PER_TASK_LOOKUPS
            else [{"project": int(project_id)}]
        )
        listed: list[dict[str, Any]] = []
        pacing = self.pacing
        for params in queries:
            resp = client.request(
                "GET", "/api/predictions", params=params, busy_retries=pacing.busy_retries
            )
            listed.extend(resp.json() or [])
        for pred in listed:
            task = pred.get("task")
            if task in wanted and pred.get("model_version") == ranking.version:
                found[int(task)] = int(pred["id"])
        done = [t for t in wanted if t not in ranking.scores]  # labelled meanwhile
        for _, chunk in pacing.chunks(sorted(found.items())):
            for task_id, pred_id in chunk:
                score = ranking.scores.get(task_id)
                if score is None:
                    continue
                time.sleep(REPLACE_EACH_PAUSE_S)
                client.request(
                    "PATCH",
                    f"/api/predictions/{pred_id}/",
                    json={"score": float(score)},
                    busy_retries=pacing.busy_retries,
                )
                done.append(task_id)
        return done
