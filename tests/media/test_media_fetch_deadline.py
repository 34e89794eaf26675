"""One total deadline per fetch, and a bound on concurrent fetches per host (real servers)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from media_servers import TOKEN, Recorder, Route, Trickler, png_bytes

from labelwheel.media import ImageError, ImageFetcher, ImagePolicy

PNG = png_bytes()


@pytest.fixture
def ls() -> Iterator[Recorder]:
    server = Recorder("127.0.0.1")
    yield server
    server.close()


@pytest.fixture
def trickler() -> Iterator[Trickler]:
    server = Trickler("127.0.0.2", interval=0.5)
    yield server
    server.close()


def make(ls: Recorder, timeout: float, per_host: int = 4) -> ImageFetcher:
    policy = ImagePolicy(
        ls.url,
        None,
        allowed_hosts=frozenset({"127.0.0.2"}),
        timeout=timeout,
        max_per_host=per_host,
    )
    return ImageFetcher(policy, lambda: {"Authorization": TOKEN})


def timed_failure(fetcher: ImageFetcher, ref: str) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(ImageError) as e:
        fetcher.fetch_bytes(ref)
    return e.value.reason, time.monotonic() - started


def test_trickled_header_bytes_cannot_hold_a_fetch(ls: Recorder, trickler: Trickler) -> None:
    reason, elapsed = timed_failure(make(ls, 1.5), f"{trickler.url}/a.png")
    assert reason == "timeout"
    assert 1.4 <= elapsed < 1.5 + 1.0
    assert trickler.connections == 1


def test_trickling_label_studio_host_too(trickler: Trickler) -> None:
    policy = ImagePolicy(trickler.url, None, timeout=1.0)
    fetcher = ImageFetcher(policy, lambda: {"Authorization": TOKEN})
    started = time.monotonic()
    with pytest.raises(ImageError, match="timeout"):
        fetcher.fetch_bytes("/data/upload/1/a.png")
    assert time.monotonic() - started < 1.0 + 1.0


def test_a_server_that_never_answers(ls: Recorder) -> None:
    with socket.socket() as silent:  # listens (the kernel accepts), never reads or writes
        silent.bind(("127.0.0.2", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        reason, elapsed = timed_failure(make(ls, 1.0), f"http://127.0.0.2:{port}/a.png")
    assert reason == "timeout"
    assert elapsed < 1.0 + 1.0


def test_the_deadline_covers_every_redirect(ls: Recorder) -> None:
    def slow_hop(target: str) -> Route:
        time.sleep(0.6)
        return (302, {"Location": target}, b"")

    ls.routes["/data/upload/0.png"] = lambda: slow_hop("/data/upload/1.png")
    ls.routes["/data/upload/1.png"] = lambda: slow_hop("/data/upload/2.png")
    ls.routes["/data/upload/2.png"] = lambda: slow_hop("/data/upload/3.png")
    ls.routes["/data/upload/3.png"] = (200, {}, PNG)
    fetcher = make(ls, 1.5)
    reason, elapsed = timed_failure(fetcher, "/data/upload/0.png")  # 3 x 0.6 s > 1.5 s
    assert reason == "timeout"
    assert elapsed < 1.5 + 1.0
    assert make(ls, 5.0).fetch_bytes("/data/upload/0.png") == PNG  # within a larger deadline


def test_a_slow_host_holds_at_most_max_per_host_connections(
    ls: Recorder, trickler: Trickler
) -> None:
    ls.routes["/data/upload/fast.png"] = (200, {}, PNG)
    fetcher = make(ls, 2.0, per_host=2)
    outcomes: list[tuple[str, float]] = []
    lock = threading.Lock()

    def slow() -> None:
        result = timed_failure(fetcher, f"{trickler.url}/slow.png")
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=slow) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the slow host is saturated: 2 fetches connected, 4 waiting for a slot
    assert trickler.active == 2
    started = time.monotonic()
    assert fetcher.fetch_bytes("/data/upload/fast.png") == PNG  # another host: no waiting
    assert time.monotonic() - started < 0.5
    time.sleep(1.0)  # still before the deadline: still 2, whatever the others do
    assert trickler.max_active == 2 and trickler.connections == 2
    for t in threads:
        t.join(10)
    assert [reason for reason, _ in outcomes] == ["timeout"] * 6
    assert max(elapsed for _, elapsed in outcomes) < 2.0 + 1.0


def test_policy_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_per_host"):
        ImagePolicy(None, None, max_per_host=0)
    with pytest.raises(ValueError, match="timeout"):
        ImagePolicy(None, None, timeout=0)


def test_no_socket_is_left_open(ls: Recorder, trickler: Trickler) -> None:
    import gc
    import os

    ls.routes["/data/upload/ok.png"] = (200, {}, PNG)
    fetcher = make(ls, 0.3)

    def open_fds() -> int:
        gc.collect()
        return len(os.listdir("/proc/self/fd"))

    fetcher.fetch_bytes("/data/upload/ok.png")  # warm up (watchdog thread, imports)
    before = open_fds()
    for _ in range(30):
        assert fetcher.fetch_bytes("/data/upload/ok.png") == PNG
        with pytest.raises(ImageError, match="HTTP 404"):
            fetcher.fetch_bytes("/data/upload/missing.png")
    for _ in range(3):
        with pytest.raises(ImageError, match="timeout"):
            fetcher.fetch_bytes(f"{trickler.url}/a.png")
    time.sleep(0.2)
    assert open_fds() <= before + 2  # the servers' own sockets may linger briefly
