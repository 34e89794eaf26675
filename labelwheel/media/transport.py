"""HTTP for the media layer: one strict URL parser, and one GET under one total deadline.

- :func:`parse_http_url` is the only parser of an http(s) URL that is fetched. It refuses what two
  parsers could read differently: backslashes, control characters, whitespace or ``%`` in the
  authority, userinfo (``user@``), empty or odd ports, non-ASCII host names; and it checks that
  ``urllib.parse`` and ``urllib3`` read the same scheme, host and port as it does. The
  :class:`HttpURL` it returns is what the policy checks *and* what :func:`http_get` sends: the
  socket is opened to ``host:port`` of that object and the request line carries its ``target``.
- :func:`http_get` does one GET (no redirects) with ``http.client`` on a socket it opens itself.
  Name resolution, connecting, TLS, the status line, the headers and the body all share one
  :class:`Deadline`: a watchdog thread shuts the socket down when it passes, so a server that
  trickles bytes (headers included) cannot hold a fetch longer than the deadline.
"""

from __future__ import annotations

import heapq
import http.client
import ipaddress
import itertools
import re
import socket
import ssl
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3.util

from labelwheel.media.errors import ImageError

__all__ = ["Deadline", "HttpURL", "Reply", "http_get", "join_url", "parse_http_url"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 64 * 1024
_SCHEME = re.compile(r"(?i)(https?)://")
_AUTHORITY = re.compile(r"(\[[^\]]*\]|[^:\[\]]*)(?::(\d{1,5}))?")
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = "/?%:@!$&'()*+,;=-._~"


@dataclass(frozen=True)
class HttpURL:
    """A checked http(s) URL: exactly what is connected to and sent."""

    scheme: str
    host: str  # lower case; an IPv6 address without brackets
    port: int  # the effective port
    path: str  # percent-encoded, starts with "/"
    query: str | None  # percent-encoded, without "?"; None when the URL has no "?"

    @property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port)."""
        return (self.scheme, self.host, self.port)

    @property
    def netloc(self) -> str:
        """The Host header: host, bracketed if IPv6, with the port unless it is the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def target(self) -> str:
        """The request target: path and query."""
        return self.path if self.query is None else f"{self.path}?{self.query}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.target}"


def _bad(detail: str) -> ImageError:
    return ImageError("unsupported URL", detail)


def _quote(part: str, safe: str) -> str:
    return urllib.parse.quote(_STRAY_PERCENT.sub("%25", part), safe=safe)


def _host_of(authority: str) -> tuple[str, int | None]:
    if "@" in authority:
        raise _bad("credentials (user@) in the URL")
    if "%" in authority or any(c.isspace() for c in authority):
        raise _bad("malformed host")
    m = _AUTHORITY.fullmatch(authority)
    if m is None:
        raise _bad("malformed host or port")
    raw_host, raw_port = m.group(1), m.group(2)
    port = int(raw_port) if raw_port is not None else None
    if port is not None and not 0 < port < 65536:
        raise _bad(f"port {port}")
    if raw_host.startswith("["):
        try:
            return ipaddress.IPv6Address(raw_host[1:-1]).compressed, port
        except ValueError:
            raise _bad("malformed IPv6 address") from None
    if not raw_host.isascii():
        raise _bad("non-ASCII host name (use its punycode form)")
    host = raw_host.lower()
    if not _HOST_NAME.fullmatch(host):
        raise _bad("malformed host")
    return host, port


def _same_host(other: str | None, host: str) -> bool:
    if other is None:
        return False
    other = other.lower().strip("[]")
    if ":" in other:
        try:
            other = ipaddress.IPv6Address(other).compressed
        except ValueError:
            return False
    return other == host


def _cross_check(text: str, scheme: str, host: str, port: int) -> None:
    """The URL's scheme, host and port as urllib.parse and urllib3 (requests) read them."""
    try:
        split = urllib.parse.urlsplit(text)
        split_port = split.port
        u3 = urllib3.util.parse_url(text)
    except ValueError:
        raise _bad("ambiguous URL") from None
    default = _DEFAULT_PORTS[scheme]
    if (
        split.scheme.lower() != scheme
        or not _same_host(split.hostname, host)
        or (split_port or default) != port
        or (u3.scheme or "").lower() != scheme
        or not _same_host(u3.host, host)
        or (u3.port or default) != port
    ):
        raise _bad("ambiguous host")


def parse_http_url(text: str) -> HttpURL:
    """Parse an absolute http(s) URL strictly; ImageError("unsupported URL", why) otherwise.

    The fragment is dropped; spaces and non-ASCII characters in the path and query are
    percent-encoded (as browsers and requests do).
    """
    if not isinstance(text, str):
        raise _bad("not a string")
    if "\\" in text:
        raise _bad("backslash in the URL")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise _bad("control character in the URL")
    m = _SCHEME.match(text)
    if m is None:
        raise ImageError("unsupported URL scheme", text.partition(":")[0][:20])
    scheme = m.group(1).lower()
    rest = text[m.end() :]
    end = len(rest)
    for sep in "/?#":
        pos = rest.find(sep)
        if pos != -1:
            end = min(end, pos)
    authority, remainder = rest[:end], rest[end:]
    if not authority:
        raise _bad("no host")
    host, explicit_port = _host_of(authority)
    port = explicit_port if explicit_port is not None else _DEFAULT_PORTS[scheme]
    remainder = remainder.partition("#")[0]
    path, qmark, query = remainder.partition("?")
    url = HttpURL(
        scheme=scheme,
        host=host,
        port=port,
        path=_quote(path or "/", _PATH_SAFE),
        query=_quote(query, _QUERY_SAFE) if qmark else None,
    )
    _cross_check(text, scheme, host, port)
    _cross_check(str(url), scheme, host, port)
    return url


def join_url(base: HttpURL, location: str) -> HttpURL:
    """A redirect's ``Location`` resolved against ``base``, parsed strictly."""
    location = location.strip()
    if not location:
        raise ImageError("bad redirect", "empty Location")
    if "\\" in location or any(ord(c) < 0x20 or ord(c) == 0x7F for c in location):
        raise ImageError("bad redirect", "malformed Location")
    try:
        return parse_http_url(urllib.parse.urljoin(str(base), location))
    except ImageError as exc:
        raise ImageError("bad redirect", exc.detail or exc.reason) from None


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


_TLS: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    global _TLS
    if _TLS is None:
        try:
            import certifi

            _TLS = ssl.create_default_context(cafile=certifi.where())
        except ImportError:
            _TLS = ssl.create_default_context()
    return _TLS


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


def _connect(url: HttpURL, deadline: Deadline, guard: _Guard) -> socket.socket:
    last: OSError | None = None
    for family, socktype, proto, _name, addr in _resolve(url.host, url.port, deadline):
        remaining = deadline.remaining()
        if remaining <= 0:
            raise ImageError("timeout", "connecting")
        sock = socket.socket(family, socktype, proto)
        guard.attach(sock)
        sock.settimeout(remaining)
        try:
            sock.connect(addr)
        except TimeoutError:
            raise ImageError("timeout", "connecting") from None
        except OSError as exc:
            if guard.fired or deadline.remaining() <= 0:  # the watchdog closed it: the deadline
                raise ImageError("timeout", "connecting") from None
            last = exc
            guard.drop()  # try the next address
            continue
        if url.scheme == "https":
            tls = _tls_context().wrap_socket(
                sock, server_hostname=url.host, do_handshake_on_connect=False
            )
            guard.attach(tls)
            tls.do_handshake()
            return tls
        return sock
    raise ImageError("unreachable", last.__class__.__name__ if last else "no address")


@dataclass(frozen=True)
class Reply:
    """One response: its status, a redirect's Location, or a 200's body."""

    status: int
    location: str | None = None
    body: bytes = b""


def http_get(url: HttpURL, headers: Mapping[str, str], deadline: Deadline, max_bytes: int) -> Reply:
    """One GET of ``url`` (redirects are returned, not followed), all of it before ``deadline``.

    Raises ImageError: ``timeout``, ``unreachable``, ``too large``, ``download failed``.
    """
    if deadline.remaining() <= 0:
        raise ImageError("timeout")
    guard = _Guard()
    entry = _WATCHDOG.arm(deadline.at, guard.expire)
    connected = False
    conn: http.client.HTTPConnection | None = None
    try:
        sock = _connect(url, deadline, guard)
        connected = True
        conn = http.client.HTTPConnection(url.host, url.port)
        conn.sock = sock  # the socket opened above: http.client never connects by itself
        conn.putrequest("GET", url.target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", url.netloc)
        conn.putheader("Accept-Encoding", "identity")
        conn.putheader("Connection", "close")
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        if resp.status in _REDIRECTS:
            return Reply(resp.status, location=resp.getheader("Location") or "")
        if resp.status != 200:
            return Reply(resp.status)
        return Reply(200, body=_read_body(resp, max_bytes, guard))
    except ImageError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if guard.fired or deadline.remaining() <= 0:
            raise ImageError("timeout") from None
        if not connected or isinstance(exc, ssl.SSLError):
            raise ImageError("unreachable", exc.__class__.__name__) from None
        raise ImageError("download failed", exc.__class__.__name__) from None
    finally:
        _WATCHDOG.disarm(entry)
        guard.close()  # first: no shutdown by the watchdog after this point
        if conn is not None:
            conn.close()  # the response's file object too, so the socket is really closed


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
