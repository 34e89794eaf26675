"""HTTP for the media layer: one GET under one total deadline, on kept-alive connections.

:func:`http_get` does one GET (no redirects) with ``http.client`` on a socket it opens itself, to
``host:port`` of a checked :class:`~labelwheel.media.urls.HttpURL` (the only URL parser is
:mod:`labelwheel.media.urls`). Name resolution, connecting, TLS, the status line, the headers
and the body all share one :class:`Deadline`: a watchdog thread shuts the socket down when it
passes, so a server that trickles bytes (headers included) cannot hold a fetch longer than the
deadline.

With a :class:`~labelwheel.media.keepalive.ConnectionPool` (each
:class:`~labelwheel.media.ImageFetcher` has one), a connection whose answer was read to the end
goes back to the pool and the next GET to the same origin (scheme, host, port) reuses it: no new
TCP connection, TLS handshake or name lookup per image. Images in cloud storage cost two requests
each (Label Studio's resolve endpoint, then the presigned URL), so over a network this removes
most of a fetch's round trips. A connection the server has closed while idle is noticed before
use or, if it closes just as the request goes out, the GET is sent once more on a new connection
(a GET is safe to repeat). Without a pool, every GET has its own connection (``Connection:
close``).

Through an HTTP proxy (:mod:`labelwheel.media.proxies`), an ``http://`` GET is sent to the proxy
with the absolute URL as its target, and an ``https://`` one through a ``CONNECT`` tunnel that the
TLS handshake with the image host then runs inside; both are kept alive like direct connections
(tunnels by the image's origin, plain connections to the proxy by the proxy).
"""

from __future__ import annotations

import heapq
import http.client
import ipaddress
import itertools
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labelwheel.media.errors import ImageError
from labelwheel.media.keepalive import Connection, ConnectionPool
from labelwheel.media.proxies import Proxy
from labelwheel.media.tls import tls_context
from labelwheel.media.urls import HttpURL

__all__ = ["Deadline", "Reply", "http_get"]

_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 64 * 1024
_DRAIN = 64 * 1024  # a redirect's or an error's body up to this is read, and the connection kept
_DRAIN_WAIT_S = 0.5  # ... if it arrives within this


class Deadline:
    """A point in time (monotonic clock) that a fetch must finish by."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - time.monotonic()


class _Watchdog:
    """One daemon thread that runs actions at their times (cancellable)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[list[object]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, at: float, action: Callable[[], None]) -> list[object]:
        entry: list[object] = [at, next(self._order), action]
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="lw-fetch-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return entry

    def disarm(self, entry: list[object]) -> None:
        with self._cond:
            entry[2] = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2] is None:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = float(self._heap[0][0]) - time.monotonic()  # type: ignore[arg-type]
                    if delay <= 0:
                        entry = heapq.heappop(self._heap)
                        action = entry[2]
                        entry[2] = None
                        break
                    self._cond.wait(delay)
            try:
                action()  # type: ignore[operator]
            except Exception:  # an action must never stop the watchdog
                pass


_WATCHDOG = _Watchdog()


class _Guard:
    """The socket of one fetch: shut down when the deadline passes, closed once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._closed = False
        self.fired = False

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.fired or self._closed:
                sock.close()
                raise ImageError("timeout")

    def expire(self) -> None:
        with self._lock:
            self.fired = True
            if self._sock is not None and not self._closed:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def drop(self) -> None:
        """Close the current socket; another may be attached."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def release(self) -> bool:
        """Hand the socket back to its owner open (it outlives this fetch): False, and nothing
        released, once the deadline has fired on it."""
        with self._lock:
            if self.fired or self._closed:
                return False
            self._closed = True
            self._sock = None
            return True


_AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]


def _resolve(host: str, port: int, deadline: Deadline) -> Sequence[_AddrInfo]:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    box: dict[str, object] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            box["error"] = exc
        finally:
            done.set()

    # getaddrinfo cannot be interrupted: wait for it at most until the deadline
    threading.Thread(target=work, name="lw-resolve", daemon=True).start()
    if not done.wait(max(0.0, deadline.remaining())):
        raise ImageError("timeout", f"resolving {host}")
    if "error" in box:
        raise ImageError("unreachable", f"cannot resolve {host}")
    return box["infos"]  # type: ignore[return-value]


def _connect(
    url: HttpURL, deadline: Deadline, guard: _Guard, proxy: Proxy | None = None
) -> socket.socket:
    if proxy is None:
        sock = _open(url.host, url.port, deadline, guard, "")
    else:
        sock = _open(proxy.host, proxy.port, deadline, guard, f" to proxy {proxy}")
        if _forwarder(url, proxy) is None:
            _tunnel(sock, url, proxy)
    if url.scheme == "https":
        try:
            context = tls_context()
        except ValueError as exc:  # the environment's certificate bundle cannot be read
            raise ImageError("unreachable", str(exc)) from None
        tls = context.wrap_socket(sock, server_hostname=url.host, do_handshake_on_connect=False)
        guard.attach(tls)
        tls.do_handshake()
        return tls
    return sock


def _open(host: str, port: int, deadline: Deadline, guard: _Guard, what: str) -> socket.socket:
    last: OSError | None = None
    for family, socktype, proto, _name, addr in _resolve(host, port, deadline):
        remaining = deadline.remaining()
        if remaining <= 0:
            raise ImageError("timeout", "connecting" + what)
        sock = socket.socket(family, socktype, proto)
        guard.attach(sock)
        sock.settimeout(remaining)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the request goes out whole
        try:
            sock.connect(addr)
        except TimeoutError:
            raise ImageError("timeout", "connecting" + what) from None
        except OSError as exc:
            if guard.fired or deadline.remaining() <= 0:  # the watchdog closed it: the deadline
                raise ImageError("timeout", "connecting" + what) from None
            last = exc
            guard.drop()  # try the next address
            continue
        return sock
    raise ImageError("unreachable", (last.__class__.__name__ if last else "no address") + what)


def _tunnel(sock: socket.socket, url: HttpURL, proxy: Proxy) -> None:
    """Ask the proxy for a tunnel to ``url``'s host and port (``CONNECT``)."""
    lines = [f"CONNECT {url.netloc_with_port} HTTP/1.1", f"Host: {url.netloc_with_port}"]
    if proxy.authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
    resp = http.client.HTTPResponse(sock, method="CONNECT")
    try:
        resp.begin()  # the status line and headers only: nothing follows until TLS starts
    finally:
        resp.close()  # the reader over the socket, not the socket
    if resp.status != 200:
        raise ImageError("unreachable", proxy.refusal(resp.status, "CONNECT"))


def _forwarder(url: HttpURL, proxy: Proxy | None) -> Proxy | None:
    """The proxy that is sent ``url``'s request itself: a plain ``http://`` one. An
    ``https://`` request goes through the proxy's tunnel, unseen by it (None)."""
    return proxy if url.scheme == "http" else None


@dataclass(frozen=True)
class Reply:
    """One response: its status, a redirect's Location, or a 200's body."""

    status: int
    location: str | None = None
    body: bytes = b""


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux


def _ack_quickly(sock: socket.socket) -> None:
    """Acknowledge the answer's first segment at once. On a kept-alive connection the kernel
    delays acknowledgements (up to 40 ms on Linux), and a server that writes its headers and then
    its body without ``TCP_NODELAY`` (Nagle's algorithm: Python's ``http.server``, Django's
    development server) holds the body until the headers are acknowledged: 40 ms per image
    (measured: 34 images/s instead of ~2,000 from such a server on loopback). Where the socket
    option does not exist (not Linux), :func:`http_get` keeps no connections."""
    if _QUICKACK is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except OSError:
            pass


class _Stale(Exception):
    """A reused connection failed before any answer: the server had closed it."""


def http_get(
    url: HttpURL,
    headers: Mapping[str, str],
    deadline: Deadline,
    max_bytes: int,
    pool: ConnectionPool | None = None,
    proxy: Proxy | None = None,
) -> Reply:
    """One GET of ``url`` (redirects are returned, not followed), all of it before ``deadline``;
    with a ``pool``, on a kept-alive connection to the same origin when one is idle (and the
    connection is kept for the next GET when the answer allows); through ``proxy`` if given.

    Raises ImageError: ``timeout``, ``unreachable``, ``too large``, ``download failed``.
    """
    if deadline.remaining() <= 0:
        raise ImageError("timeout")
    if _QUICKACK is None:  # no quick acknowledgements here: kept connections could stall
        pool = None
    key = _pool_key(url, proxy)
    idle = pool.take(key) if pool is not None else None
    if idle is not None:
        try:
            return _exchange(url, headers, deadline, max_bytes, pool, idle, proxy, key)
        except _Stale:
            pass  # closed by the server while idle: once more, on a new connection
    return _exchange(url, headers, deadline, max_bytes, pool, None, proxy, key)


def _pool_key(url: HttpURL, proxy: Proxy | None) -> tuple[str, str, int]:
    """What a kept connection is kept by: the origin, a tunnel's too, or for plain HTTP through
    a proxy the proxy (one connection to it serves every origin)."""
    forwarder = _forwarder(url, proxy)
    if forwarder is None:
        return url.origin
    return ("http-proxy", forwarder.host, forwarder.port)


def _exchange(
    url: HttpURL,
    headers: Mapping[str, str],
    deadline: Deadline,
    max_bytes: int,
    pool: ConnectionPool | None,
    idle: Connection | None,
    proxy: Proxy | None,
    key: tuple[str, str, int],
) -> Reply:
    guard = _Guard()
    entry = _WATCHDOG.arm(deadline.at, guard.expire)
    connected = answered = keep = False
    conn: Connection | None = idle
    try:
        if conn is None:
            sock = _connect(url, deadline, guard, proxy)
            client = http.client.HTTPConnection(url.host, url.port)
            client.auto_open = 0  # never connects by itself: only to the socket opened above
            client.sock = sock
            conn = Connection(client, sock)
        else:
            guard.attach(conn.sock)
            conn.sock.settimeout(max(deadline.remaining(), 0.001))
        connected = True
        client = conn.conn
        forwarder = _forwarder(url, proxy)
        target = url.target if forwarder is None else str(url)  # a proxy gets the absolute URL
        client.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        client.putheader("Host", url.netloc)
        if forwarder is not None and forwarder.authorization is not None:
            client.putheader("Proxy-Authorization", forwarder.authorization)
        client.putheader("Accept-Encoding", "identity")
        if pool is None:
            client.putheader("Connection", "close")
        for name, value in headers.items():
            client.putheader(name, value)
        client.endheaders()
        _ack_quickly(conn.sock)
        resp = client.getresponse()
        answered = True
        if resp.status in _REDIRECTS:
            reply = Reply(resp.status, location=resp.getheader("Location") or "")
            keep = _drained(resp, conn.sock, deadline)
        elif resp.status != 200:
            reply = Reply(resp.status)
            keep = _drained(resp, conn.sock, deadline)
        else:
            reply = Reply(200, body=_read_body(resp, max_bytes, guard))
            resp.read()  # nothing left: lets http.client see the answer's end
            keep = resp.isclosed()
        # http.client lets go of the socket when the answer says the connection closes
        keep = keep and client.sock is not None and not resp.will_close
        return reply
    except ImageError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if guard.fired or deadline.remaining() <= 0:
            raise ImageError("timeout") from None
        if idle is not None and not answered:
            raise _Stale() from None
        if not connected or isinstance(exc, ssl.SSLError):
            via = f" via proxy {proxy}" if proxy is not None else ""
            raise ImageError("unreachable", exc.__class__.__name__ + via) from None
        raise ImageError("download failed", exc.__class__.__name__) from None
    finally:
        _WATCHDOG.disarm(entry)
        if keep and pool is not None and conn is not None and guard.release():
            pool.give(key, conn)
        else:
            guard.close()  # first: no shutdown by the watchdog after this point
            if conn is not None:
                conn.close()  # the response's file object too, so the socket is really closed


def _drained(resp: http.client.HTTPResponse, sock: socket.socket, deadline: Deadline) -> bool:
    """Read a small body of known length to its end, so that the connection can answer again,
    waiting at most :data:`_DRAIN_WAIT_S` for it (False: the connection is not kept; the body
    never changes the reply, nor holds it longer than that)."""
    if resp.length is None or resp.length > _DRAIN:
        return False
    try:
        sock.settimeout(max(0.001, min(deadline.remaining(), _DRAIN_WAIT_S)))
        resp.read()
    except (OSError, http.client.HTTPException, ValueError):
        return False
    return resp.isclosed()


def _decoder(resp: http.client.HTTPResponse) -> zlib._Decompress | None:
    encoding = (resp.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise ImageError("download failed", f"content encoding {encoding[:20]!r}")


def _read_body(resp: http.client.HTTPResponse, limit: int, guard: _Guard) -> bytes:
    length = resp.getheader("Content-Length")
    declared = int(length) if length is not None and length.strip().isdigit() else None
    decoder = _decoder(resp)
    if declared is not None and declared > limit and decoder is None:
        raise ImageError("too large", f"{declared} bytes")
    buf = bytearray()
    received = 0
    while True:
        chunk = resp.read1(_CHUNK)
        if not chunk:
            break
        received += len(chunk)
        if decoder is not None:
            chunk = decoder.decompress(chunk, limit + 1 - len(buf))
            if decoder.unconsumed_tail:
                raise ImageError("too large", f"over {limit} bytes")
        buf += chunk
        if len(buf) > limit:
            raise ImageError("too large", f"over {limit} bytes")
    if guard.fired:
        raise ImageError("timeout")
    if declared is not None and received < declared:
        raise ImageError("download failed", "connection closed before the end")
    if not buf:
        raise ImageError("empty image")
    return bytes(buf)
