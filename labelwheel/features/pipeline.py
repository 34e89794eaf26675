"""A bounded, ordered pipeline: prepare the next items on worker threads while the caller uses
the current ones.

:func:`ordered_map` runs ``fn`` over ``items`` on a few threads and yields the results in the
items' order. At most ``ahead`` items are started and not yet taken by the caller, so however
long the input is, memory holds at most ``ahead`` results (plus what the ``workers`` running
calls hold). The Embedder uses it to fetch, decode and shrink the next images while the current
batch runs through the backbone: decoding (Pillow), hashing and the forward pass (ONNX Runtime,
torch) all release the GIL, so the threads really overlap.

Each call has worker threads of its own (a call whose reads stall on a slow host never holds
up another call's items), taken from a reservoir of idle threads that earlier calls gave back:
starting 8 threads cost about 12 ms per call on the loaded 2-core test machine, as much as
embedding one image. Idle threads end after :data:`IDLE_SECONDS`; at most :data:`KEEP_IDLE`
are kept.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["IDLE_SECONDS", "KEEP_IDLE", "ProcessPool", "ordered_map"]

T = TypeVar("T")
R = TypeVar("R")

IDLE_SECONDS = 30.0
"""An idle worker thread ends after this long without a call."""
KEEP_IDLE = 32
"""Most idle worker threads kept for later calls."""

_Task = tuple[Future[Any], Callable[[Any], Any], Any]


class _Worker(threading.Thread):
    """A daemon thread that runs one call's task loop at a time (``inbox`` gets the loops;
    ``None`` ends the thread)."""

    def __init__(self, reservoir: _Reservoir, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.reservoir = reservoir
        self.inbox: queue.SimpleQueue[queue.SimpleQueue[_Task | None] | None] = queue.SimpleQueue()
        self.return_when_done = False  # set by a call that left before its tasks ended

    def run(self) -> None:
        while True:
            try:
                tasks = self.inbox.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                if self.reservoir.retire(self):
                    return
                continue  # taken by a call just now: its tasks are on the way
            if tasks is None:
                return
            _serve(tasks)
            del tasks
            if self.return_when_done:
                self.return_when_done = False
                if not self.reservoir.give_back(self):
                    return


def _serve(tasks: queue.SimpleQueue[_Task | None]) -> None:
    """Run a call's tasks until its end marker (``None``)."""
    while True:
        task = tasks.get()
        if task is None:
            return
        future, fn, arg = task
        del task
        if not future.set_running_or_notify_cancel():
            continue  # the call was abandoned before this item started
        try:
            future.set_result(fn(arg))
        except BaseException as exc:  # handed to the caller at the item's turn
            future.set_exception(exc)
        del future, fn, arg


class _Reservoir:
    """Idle worker threads, taken by a call for its duration and given back after it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._names = itertools.count(1)

    def take(self, count: int, prefix: str) -> list[_Worker]:
        with self._lock:
            got = self._idle[-count:] if count else []
            del self._idle[len(self._idle) - len(got) :]
        while len(got) < count:
            worker = _Worker(self, f"{prefix}-{next(self._names)}")
            worker.start()
            got.append(worker)
        return got

    def give_back(self, worker: _Worker) -> bool:
        """Keep ``worker`` for a later call; False: it should end (enough are idle)."""
        with self._lock:
            if len(self._idle) >= KEEP_IDLE:
                return False
            self._idle.append(worker)
            return True

    def release(self, workers: list[_Worker]) -> None:
        """A call's workers, all between tasks: kept for the next call (the end marker still
        in their call's queue is read before anything a next call sends), or told to end."""
        for worker in workers:
            if not self.give_back(worker):
                worker.inbox.put(None)

    def retire(self, worker: _Worker) -> bool:
        """An idle worker timed out: True if it left the reservoir (and may end)."""
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)
                return True
            return False

    def after_fork(self) -> None:
        """A forked child has none of the parent's threads."""
        self._lock = threading.Lock()
        self._idle = []


_RESERVOIR = _Reservoir()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_RESERVOIR.after_fork)


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    ahead: int,
    thread_name_prefix: str = "lw-pipeline",
) -> Generator[R, None, None]:
    """``fn(item)`` for every item, in order, computed up to ``ahead`` items ahead of the
    caller on ``workers`` threads of this call (given back to the reservoir when it ends).

    At most ``ahead`` items are started and not yet handed over, besides the one the caller
    holds. An exception raised by ``fn`` is raised here when its item's turn comes. When the
    caller stops early (an exception, ``close()``), the items not started are dropped and the
    running ones finish on their own; nothing waits for them.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if ahead < 1:
        raise ValueError(f"ahead must be at least 1, got {ahead}")
    source = iter(items)
    tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
    pending: deque[Future[R]] = deque()
    threads: list[_Worker] = []

    def submit() -> bool:
        for item in source:
            future: Future[R] = Future()
            tasks.put((future, fn, item))
            pending.append(future)
            if len(threads) < workers and len(threads) < len(pending):
                threads.extend(_RESERVOIR.take(1, thread_name_prefix))
                threads[-1].inbox.put(tasks)
            return True
        return False

    finished = False
    try:
        while len(pending) < ahead and submit():
            pass
        while pending:
            future = pending.popleft()
            result = future.result()
            del future
            submit()  # the next item is prepared while the caller works on this one
            yield result
            del result
        finished = True
    finally:
        for future in pending:
            future.cancel()
        pending.clear()
        if not finished:  # some may still be running a task: they come back when done
            for worker in threads:
                worker.return_when_done = True
        for _ in threads:
            tasks.put(None)
        if finished:  # every task is done: the workers are free for the next call now
            _RESERVOIR.release(threads)


class ProcessPool:
    """A ``ThreadPoolExecutor`` made on first use and made again in a forked child (which has
    none of the parent's threads): for threads an object keeps for its whole life."""

    def __init__(self, workers: int, thread_name_prefix: str) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.prefix = thread_name_prefix
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> ThreadPoolExecutor:
        """This process's pool."""
        with self._lock:
            if self._pool is None or self._pid != os.getpid():  # none yet, or forked
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.prefix)
                self._pid = os.getpid()
            return self._pool
