"""Kept-alive connections: many images from one host over few connections, and every way a kept
connection goes bad (closed while idle, closed as a request arrives, stalled, the pool closed, a
fork) ends in the image or in the fetch's usual error, never in a wrong body or a leaked socket.
Real servers on loopback (:class:`media_servers.KeepAlive`)."""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from media_servers import TOKEN, KeepAlive, png_bytes

from labelwheel.media import ImageError, ImageFetcher, ImagePolicy
from labelwheel.media.keepalive import ConnectionPool
from labelwheel.media.transport import Deadline, http_get
from labelwheel.media.urls import parse_http_url

PNGS = [png_bytes((10 * i, 20, 30)) for i in range(12)]


def serve(server: KeepAlive) -> KeepAlive:
    for i, png in enumerate(PNGS):
        server.routes[f"/img/{i}.png"] = (200, {"Content-Type": "image/png"}, png)
    return server


@pytest.fixture
def host() -> Iterator[KeepAlive]:
    server = serve(KeepAlive("127.0.0.2"))
    yield server
    server.close()


def fetcher(timeout: float = 3.0, per_host: int = 4, ls_url: str | None = None) -> ImageFetcher:
    policy = ImagePolicy(
        ls_url,
        None,
        allowed_hosts=frozenset({"127.0.0.2", "127.0.0.3"}),
        timeout=timeout,
        max_per_host=per_host,
    )
    return ImageFetcher(policy, lambda: {"Authorization": TOKEN})


def test_one_host_many_images_one_connection(host: KeepAlive) -> None:
    f = fetcher()
    for round_ in range(3):
        for i, png in enumerate(PNGS):
            assert f.fetch_bytes(f"{host.url}/img/{i}.png") == png, (round_, i)
    assert host.per_connection() == [3 * len(PNGS)]
    assert all("connection" not in h for _n, _t, h in host.requests)  # HTTP/1.1: keep-alive


def test_concurrent_fetches_use_at_most_max_per_host_connections(host: KeepAlive) -> None:
    f = fetcher(per_host=3)
    refs = [f"{host.url}/img/{i % len(PNGS)}.png" for i in range(90)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(f.fetch_bytes, refs))
    assert got == [PNGS[i % len(PNGS)] for i in range(90)]
    assert host.connections <= 3
    assert sum(host.per_connection()) == 90


def test_a_connection_the_server_closed_while_idle_is_not_used(host: KeepAlive) -> None:
    host.idle_close = 0.2
    f = fetcher()
    assert f.fetch_bytes(f"{host.url}/img/0.png") == PNGS[0]
    time.sleep(0.5)  # the server has closed it: its end of file is readable
    assert f.fetch_bytes(f"{host.url}/img/1.png") == PNGS[1]
    assert host.per_connection() == [1, 1]


def test_a_connection_closed_as_the_request_arrives_is_retried_once() -> None:
    server = serve(KeepAlive("127.0.0.2", drop_after=1))  # every kept connection fails
    try:
        f = fetcher()
        for i in range(4):
            assert f.fetch_bytes(f"{server.url}/img/{i}.png") == PNGS[i]
        # each fetch after the first: its request on the kept connection (dropped), then a new one
        assert server.per_connection() == [2, 2, 2, 1]
    finally:
        server.close()


def test_a_stalled_kept_connection_ends_at_the_deadline_and_is_not_kept() -> None:
    server = serve(KeepAlive("127.0.0.2", stall_after=1))
    try:
        f = fetcher(timeout=0.5)
        assert f.fetch_bytes(f"{server.url}/img/0.png") == PNGS[0]
        started = time.monotonic()
        with pytest.raises(ImageError, match="timeout"):
            f.fetch_bytes(f"{server.url}/img/1.png")
        assert time.monotonic() - started < 1.5
        assert f._connections.idle() == 0  # a timed-out connection never goes back
    finally:
        server.close()


def test_errors_and_small_redirect_bodies_keep_the_connection(host: KeepAlive) -> None:
    host.routes["/moved.png"] = (302, {"Location": "/img/2.png"}, b"moved, see /img/2.png")
    f = fetcher()
    with pytest.raises(ImageError, match="HTTP 404"):
        f.fetch_bytes(f"{host.url}/missing.png")
    assert f.fetch_bytes(f"{host.url}/moved.png") == PNGS[2]  # redirect, then the image
    assert f.fetch_bytes(f"{host.url}/img/3.png") == PNGS[3]
    assert host.per_connection() == [4]


def test_a_large_error_body_or_connection_close_is_not_kept(host: KeepAlive) -> None:
    host.routes["/big-error.png"] = (500, {}, b"x" * (200 * 1024))
    host.routes["/closing.png"] = (200, {"Connection": "close"}, PNGS[5])
    f = fetcher()
    with pytest.raises(ImageError, match="HTTP 500"):
        f.fetch_bytes(f"{host.url}/big-error.png")
    assert f.fetch_bytes(f"{host.url}/closing.png") == PNGS[5]
    assert f.fetch_bytes(f"{host.url}/img/0.png") == PNGS[0]
    assert host.per_connection() == [1, 1, 1]


def test_origins_are_kept_apart(host: KeepAlive) -> None:
    other = serve(KeepAlive("127.0.0.3"))
    try:
        f = fetcher()
        for i in range(6):
            server = (host, other)[i % 2]
            assert f.fetch_bytes(f"{server.url}/img/{i}.png") == PNGS[i]
        assert host.per_connection() == [3]
        assert other.per_connection() == [3]
    finally:
        other.close()


def test_credentials_are_per_request_on_a_kept_connection() -> None:
    ls = serve(KeepAlive("127.0.0.1"))
    try:
        ls.routes["/data/upload/1/a.png"] = (200, {}, PNGS[0])
        f = fetcher(ls_url=ls.url)
        assert f.fetch_bytes("/data/upload/1/a.png") == PNGS[0]
        assert f.fetch_bytes("/data/upload/1/a.png") == PNGS[0]
        assert ls.per_connection() == [2]
        assert [h.get("authorization") for _n, _t, h in ls.requests] == [TOKEN, TOKEN]
    finally:
        ls.close()


def test_idle_connections_expire_and_close_closes_them(host: KeepAlive) -> None:
    pool = ConnectionPool(4, idle_s=0.2)
    url = parse_http_url(f"{host.url}/img/0.png")
    assert http_get(url, {}, Deadline(3), 2**20, pool).body == PNGS[0]
    assert pool.idle() == 1
    time.sleep(0.3)
    assert http_get(url, {}, Deadline(3), 2**20, pool).body == PNGS[0]
    assert host.per_connection() == [1, 1]  # the expired one was not reused
    pool.close()
    assert pool.idle() == 0
    _wait(lambda: host.open_now == 0)  # the server saw every connection closed
    assert http_get(url, {}, Deadline(3), 2**20, pool).body == PNGS[0]  # still fetches...
    assert pool.idle() == 0  # ...without keeping connections
    _wait(lambda: host.open_now == 0)


def test_no_pool_means_connection_close(host: KeepAlive) -> None:
    url = parse_http_url(f"{host.url}/img/0.png")
    for _ in range(3):
        assert http_get(url, {}, Deadline(3), 2**20).body == PNGS[0]
    assert host.per_connection() == [1, 1, 1]
    assert all(h.get("connection") == "close" for _n, _t, h in host.requests)


def test_sockets_are_bounded_and_released(host: KeepAlive) -> None:
    def open_fds() -> int:
        gc.collect()
        return len(os.listdir("/proc/self/fd"))

    f = fetcher(per_host=2)
    f.fetch_bytes(f"{host.url}/img/0.png")  # warm up (watchdog thread, imports)
    f.close()
    before = open_fds()
    f = fetcher(per_host=2)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(f.fetch_bytes, [f"{host.url}/img/{i % 12}.png" for i in range(60)]))
    # the kept connections, at most max_per_host, and the in-process server's ends of them
    assert open_fds() <= before + 2 * 2
    assert f._connections.idle() <= 2
    f.close()
    _wait(lambda: open_fds() <= before)  # the server closes its ends once it reads ours


def _child_fetch(url: str, out: multiprocessing.queues.Queue) -> None:  # type: ignore[name-defined]
    f = _FORKED["fetcher"]
    try:
        out.put(f.fetch_bytes(url))
    except Exception as exc:  # reported to the parent
        out.put(repr(exc))


_FORKED: dict[str, ImageFetcher] = {}


def test_a_forked_child_never_uses_the_parents_connections(host: KeepAlive) -> None:
    f = fetcher()
    assert f.fetch_bytes(f"{host.url}/img/0.png") == PNGS[0]
    _FORKED["fetcher"] = f
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_fetch, args=(f"{host.url}/img/1.png", out))
    child.start()
    assert out.get(timeout=10) == PNGS[1]
    child.join(10)
    assert child.exitcode == 0
    assert f.fetch_bytes(f"{host.url}/img/2.png") == PNGS[2]  # the parent's connection works
    # parent: connection 1 carries images 0 and 2; the child opened its own
    assert sorted(host.per_connection()) == [1, 2]
    _FORKED.clear()


def _wait(cond: object, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_threads_never_share_a_connection_at_once(host: KeepAlive) -> None:
    """Bodies always match their request, whatever the interleaving."""
    f = fetcher(per_host=4)
    errors: list[str] = []

    def worker(k: int) -> None:
        for j in range(30):
            i = (k + j) % len(PNGS)
            if f.fetch_bytes(f"{host.url}/img/{i}.png") != PNGS[i]:
                errors.append(f"{k}/{j}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert host.connections <= 4


def test_an_error_whose_body_never_comes_is_answered_at_once(host: KeepAlive) -> None:
    """A 404 announcing more body than it sends: the fetch reports the 404 without waiting for
    the rest (the body only decides whether the connection is kept), and the next fetch opens a
    new connection."""
    host.routes["/short.png"] = (404, {"Content-Length": "5000"}, b"short")
    f = fetcher(timeout=5.0)
    started = time.monotonic()
    with pytest.raises(ImageError, match="HTTP 404"):
        f.fetch_bytes(f"{host.url}/short.png")
    assert time.monotonic() - started < 2.5  # not the 5 s deadline
    assert f.fetch_bytes(f"{host.url}/img/0.png") == PNGS[0]
    assert host.per_connection() == [1, 1]


def test_kept_connections_work_past_descriptor_1023(host: KeepAlive) -> None:
    """A busy process has sockets numbered past select()'s limit: the pool still sees them."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip("the descriptor limit is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = []
    try:
        while len(os.listdir("/proc/self/fd")) < 1100:  # push new descriptors past 1023
            held.append(os.open(os.devnull, os.O_RDONLY))
        f = fetcher()
        for i in range(3):
            assert f.fetch_bytes(f"{host.url}/img/{i}.png") == PNGS[i]
        assert host.per_connection() == [3]
        f.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
