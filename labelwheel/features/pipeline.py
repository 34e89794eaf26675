"""A bounded, ordered pipeline: prepare the next items on worker threads while the caller uses
the current ones.

:func:`ordered_map` runs ``fn`` over ``items`` on a few threads and yields the results in the
items' order. At most ``ahead`` items are started and not yet taken by the caller, so however
long the input is, memory holds at most ``ahead`` results (plus what the ``workers`` running
calls hold). The Embedder uses it to fetch, decode and shrink the next images while the current
batch runs through the backbone: decoding (Pillow), hashing and the forward pass (ONNX Runtime,
torch) all release the GIL, so the threads really overlap.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    ahead: int,
    thread_name_prefix: str = "lw-pipeline",
) -> Generator[R, None, None]:
    """``fn(item)`` for every item, in order, computed up to ``ahead`` items ahead of the
    caller on ``workers`` threads of this call (they end with it).

    An exception raised by ``fn`` is raised here when its item's turn comes. When the caller
    stops early (an exception, ``close()``), the items not started are dropped and the running
    ones finish on their own; nothing waits for them.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if ahead < 1:
        raise ValueError(f"ahead must be at least 1, got {ahead}")
    source = iter(items)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_name_prefix)
    pending: deque[Future[R]] = deque()
    finished = False
    try:
        for item in source:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                break
        while pending:
            future = pending.popleft()
            result = future.result()
            del future
            # Refill before handing the result over: the next items are prepared while the
            # caller works on this one.
            for item in source:
                pending.append(pool.submit(fn, item))
                break
            yield result
            del result
        finished = True
    finally:
        for future in pending:
            future.cancel()
        pending.clear()
        pool.shutdown(wait=finished, cancel_futures=True)
