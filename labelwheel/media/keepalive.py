"""Kept-alive HTTP connections of the media transport, by origin.

A :class:`ConnectionPool` holds the connections whose answer was read to the end, for the next GET
to the same origin (scheme, host, port): :func:`labelwheel.media.transport.http_get` takes one
before opening a socket and gives it back after. What it keeps is bounded (per origin, in all, in
idle time), and it never hands out a connection the server has visibly closed.
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import threading
import time
from collections import OrderedDict

__all__ = ["IDLE_S", "MAX_IDLE", "Connection", "ConnectionPool"]

IDLE_S = 15.0
"""Seconds an idle connection is kept. A server that closes idle connections sooner is noticed
before reuse (its end of file is readable); one that closes just as a request goes out costs that
request one retry on a new connection."""

MAX_IDLE = 64
"""Idle connections a pool keeps in all (the least recently used are closed first)."""


class Connection:
    """An ``http.client`` connection on a socket the transport opened, which has answered and
    may answer again."""

    def __init__(self, conn: http.client.HTTPConnection, sock: socket.socket) -> None:
        self.conn = conn
        self.sock = sock
        self.idle_since = time.monotonic()

    def close(self) -> None:
        self.conn.close()
        self.sock.close()


class ConnectionPool:
    """Idle keep-alive connections by origin (thread-safe): at most ``per_origin`` per origin,
    :data:`MAX_IDLE` in all, each for at most ``idle_s`` seconds. Connections never cross a
    fork: a child process starts with an empty pool (its parent's sockets are left alone)."""

    def __init__(self, per_origin: int, idle_s: float = IDLE_S) -> None:
        if per_origin < 1:
            raise ValueError(f"per_origin must be at least 1, got {per_origin}")
        self.per_origin = int(per_origin)
        self.idle_s = float(idle_s)
        self._lock = threading.Lock()
        self._idle: OrderedDict[tuple[str, str, int], list[Connection]] = OrderedDict()
        self._pid = os.getpid()
        self._closed = False

    def _forked(self) -> bool:
        if self._pid != os.getpid():  # the parent's sockets: dropped here, never closed
            self._idle.clear()
            self._pid = os.getpid()
            return True
        return False

    def take(self, origin: tuple[str, str, int]) -> Connection | None:
        """The most recently used idle connection to ``origin`` that still looks open, or None."""
        stale: list[Connection] = []
        found: Connection | None = None
        with self._lock:
            self._forked()
            conns = self._idle.get(origin, [])
            now = time.monotonic()
            while conns and found is None:
                conn = conns.pop()
                if now - conn.idle_since < self.idle_s and _quiet(conn.sock):
                    found = conn
                else:
                    stale.append(conn)
            if not conns:
                self._idle.pop(origin, None)
        for conn in stale:
            conn.close()
        return found

    def give(self, origin: tuple[str, str, int], conn: Connection) -> None:
        """Keep ``conn`` for the next GET to ``origin`` (or close it: pool full or closed)."""
        drop: list[Connection] = []
        with self._lock:
            if self._closed or self._forked():
                drop.append(conn)
            else:
                conn.idle_since = time.monotonic()
                conns = self._idle.setdefault(origin, [])
                self._idle.move_to_end(origin)
                conns.append(conn)
                if len(conns) > self.per_origin:
                    drop.append(conns.pop(0))
                drop.extend(self._expired_locked(conn.idle_since))
        for old in drop:
            old.close()

    def _expired_locked(self, now: float) -> list[Connection]:
        """Remove and return connections idle too long, then the least recently used origins'
        ones beyond :data:`MAX_IDLE`."""
        out: list[Connection] = []
        for origin in list(self._idle):
            conns = self._idle[origin]
            keep = [c for c in conns if now - c.idle_since < self.idle_s]
            out.extend(c for c in conns if now - c.idle_since >= self.idle_s)
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]
        total = sum(len(c) for c in self._idle.values())
        while total > MAX_IDLE:
            origin = next(iter(self._idle))
            out.append(self._idle[origin].pop(0))
            total -= 1
            if not self._idle[origin]:
                del self._idle[origin]
        return out

    def idle(self) -> int:
        """How many connections the pool holds now."""
        with self._lock:
            return sum(len(c) for c in self._idle.values())

    def close(self) -> None:
        """Close every idle connection; connections given back later are closed too."""
        with self._lock:
            self._closed = True
            conns = [c for cs in self._idle.values() for c in cs] if not self._forked() else []
            self._idle.clear()
        for conn in conns:
            conn.close()


def _quiet(sock: socket.socket) -> bool:
    """Whether an idle connection has nothing to read: a closed one reads its end of file (and a
    server has nothing to say on a healthy one between requests). ``poll``, not ``select``,
    where there is one: ``select`` refuses descriptors past 1023, which a busy process has."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLPRI)
            return not poller.poll(0)
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable
