"""Real HTTP servers on loopback for the media tests.

- :class:`Recorder`: a threading HTTP server on a chosen loopback address that records every
  request (method, raw request target, headers) and answers from a route table;
- :class:`Trickler`: a raw TCP server that answers every connection by trickling bytes (status
  line, then one header byte every ``interval`` seconds, forever) and counts connections;
- :class:`KeepAlive`: an HTTP/1.1 server that keeps connections open, counts connections and
  requests, and can close or stall a kept connection the way real servers do;
- :func:`self_signed_cert`: a key and certificate for ``127.0.0.2`` made by openssl.

Linux routes all of 127.0.0.0/8 to the loopback interface, so ``127.0.0.2`` is a second host.
"""

from __future__ import annotations

import io
import select
import socket
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image

TOKEN = "Token 0123456789abcdef0123456789abcdef01234567"

Route = tuple[int, dict[str, str], bytes]


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """(key, certificate) of a one-day self-signed certificate for the IP address 127.0.0.2."""
    key, crt = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.2", "-addext", "subjectAltName=IP:127.0.0.2",
            "-keyout", str(key), "-out", str(crt),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return key, crt


def png_bytes(color: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, "PNG")
    return buf.getvalue()


class Recorder:
    """An HTTP server that records every request and answers from ``routes`` (path -> reply,
    path without the query; unknown paths: 404)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.routes: dict[str, Route | Callable[[], Route]] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                with server.lock:
                    server.requests.append((self.command, self.path, dict(self.headers)))
                route = server.routes.get(self.path.partition("?")[0], (404, {}, b"not found"))
                status, headers, body = route() if callable(route) else route
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            do_GET = _answer
            do_POST = _answer

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.host = host
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def paths(self) -> list[str]:
        with self.lock:
            return [path for _method, path, _headers in self.requests]

    def authorized(self) -> list[str]:
        """Request targets that carried an Authorization header."""
        with self.lock:
            return [p for _m, p, h in self.requests if any(k.lower() == "authorization" for k in h)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _RawServer:
    """A TCP listener on ``host`` that serves each connection on its own thread
    (:meth:`_serve`, by the subclass) until :meth:`close`."""

    scheme = "http"

    def __init__(self, host: str) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self._stop = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"{self.scheme}://{host}:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


class Trickler(_RawServer):
    """A TCP server that never finishes its response headers: it sends a status line and then
    one header byte every ``interval`` seconds, forever (or until the client goes)."""

    def __init__(self, host: str = "127.0.0.1", interval: float = 0.5) -> None:
        self.interval = interval
        self.active = 0
        self.max_active = 0
        super().__init__(host)

    def _serve(self, conn: socket.socket) -> None:
        with self.lock:
            self.connections += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            conn.settimeout(0.2)
            try:
                conn.recv(65536)  # the request
            except OSError:
                pass
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not self._stop.is_set():
                readable, _w, _x = select.select([conn], [], [], self.interval)
                if readable and not conn.recv(65536):
                    return  # the client closed the connection
                conn.sendall(b"a")
        except OSError:
            pass  # the client went away
        finally:
            with self.lock:
                self.active -= 1
            conn.close()


class KeepAlive(_RawServer):
    """An HTTP/1.1 server on raw sockets that keeps connections open between requests, counts
    connections and requests, and can misbehave the way real servers do:

    - ``drop_after``: on each connection, after that many answers, read the next request and
      close without answering (a server closing an idle connection just as a request arrives);
    - ``idle_close``: close a connection after that many idle seconds (a keep-alive timeout);
    - ``stall_after``: on each connection, after that many answers, read the next request and
      never answer.

    ``routes`` maps a path (without the query) to (status, headers, body); others are 404. A
    route's ``Connection: close`` header closes the connection after the answer.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        drop_after: int | None = None,
        idle_close: float | None = None,
        stall_after: int | None = None,
        tls: Any = None,
    ) -> None:
        self.routes: dict[str, Route] = {}
        self.drop_after = drop_after
        self.idle_close = idle_close
        self.stall_after = stall_after
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.requests: list[tuple[int, str, dict[str, str]]] = []  # (connection, target, headers)
        self.open_now = 0
        super().__init__(host)

    def _read_request(self, conn: socket.socket, buf: bytearray) -> tuple[str, dict[str, str]]:
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError
            buf += chunk
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        buf[:] = rest
        lines = head.decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return target, headers

    def _serve(self, raw: socket.socket) -> None:
        with self.lock:
            self.connections += 1
            number = self.connections
            self.open_now += 1
        conn = raw
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(raw, server_side=True)
            answered = 0
            buf = bytearray()
            while not self._stop.is_set():
                if self.idle_close is not None and not buf:
                    readable, _w, _x = select.select([conn], [], [], self.idle_close)
                    if not readable:
                        return  # idle too long: close
                target, headers = self._read_request(conn, buf)
                with self.lock:
                    self.requests.append((number, target, headers))
                if self.drop_after is not None and answered >= self.drop_after:
                    return
                if self.stall_after is not None and answered >= self.stall_after:
                    self._stop.wait()
                    return
                status, extra, body = self.routes.get(
                    target.partition("?")[0], (404, {}, b"not found")
                )
                lines = [f"HTTP/1.1 {status} X"]
                if "Content-Length" not in extra:  # a route may announce a wrong length
                    lines.append(f"Content-Length: {len(body)}")
                lines += [f"{k}: {v}" for k, v in extra.items()]
                conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
                answered += 1
                if extra.get("Connection", "").lower() == "close":
                    return
        except (OSError, EOFError, ValueError):
            pass
        finally:
            with self.lock:
                self.open_now -= 1
            conn.close()

    def per_connection(self) -> list[int]:
        """Requests each connection carried, in connection order."""
        with self.lock:
            counts = [0] * self.connections
            for number, _target, _headers in self.requests:
                counts[number - 1] += 1
            return counts
