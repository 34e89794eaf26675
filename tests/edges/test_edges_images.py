"""labelwheel.media: safe fetching (real local HTTP servers) and safe decoding."""

from __future__ import annotations

import base64
import io
import os
import struct
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from labelwheel.media import (
    ImageError,
    ImageFetcher,
    ImagePolicy,
    decode_image,
    exif_transpose,
)

TOKEN_HEADER = {"Authorization": "Token abc123"}


def png_bytes(size: tuple[int, int] = (8, 6), color: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


class _Server:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.routes: dict[str, tuple[int, dict[str, str], bytes | None]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, dict(self.headers)))
                path = urllib.parse.urlsplit(self.path).path
                if path == "/data/upload/slow":
                    self.send_response(200)
                    self.end_headers()
                    for _ in range(50):
                        try:
                            self.wfile.write(b"x" * 100)
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.1)
                    return
                if path == "/data/upload/endless":  # no Content-Length, streams past any limit
                    self.send_response(200)
                    self.end_headers()
                    try:
                        for _ in range(2000):
                            self.wfile.write(b"\0" * 8192)
                    except OSError:
                        pass
                    return
                if (
                    path == "/data/upload/private.png"
                    and self.headers.get("Authorization") != "Token abc123"
                ):
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, headers, body = server.routes.get(path, (404, {}, b"not found"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if body is not None:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body:
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def ls_server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def other_server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


def fetcher(
    ls: _Server | None,
    *,
    root: Path | None = None,
    allowed: frozenset[str] = frozenset(),
    max_bytes: int = 1_000_000,
    timeout: float = 5.0,
    max_pixels: int = 40_000_000,
) -> ImageFetcher:
    policy = ImagePolicy(
        ls_url=ls.url if ls else None,
        local_files_root=root,
        allowed_hosts=allowed,
        max_bytes=max_bytes,
        timeout=timeout,
        max_pixels=max_pixels,
    )
    return ImageFetcher(policy, lambda: dict(TOKEN_HEADER))


def test_ls_upload_path_is_fetched_with_auth(ls_server: _Server) -> None:
    data = png_bytes()
    ls_server.routes["/data/upload/3/abc-cat.png"] = (200, {"Content-Type": "image/png"}, data)
    ls_server.routes["/data/upload/private.png"] = (200, {}, data)
    f = fetcher(ls_server)
    assert f.fetch_bytes("/data/upload/3/abc-cat.png") == data
    assert ls_server.requests[-1][1].get("Authorization") == "Token abc123"
    assert f.fetch_bytes("data/upload/private.png") == data  # relative without leading slash
    # absolute on the LS host
    assert f.fetch_bytes(f"{ls_server.url}/data/upload/private.png") == data
    img = f.load("/data/upload/3/abc-cat.png")
    assert img.mode == "RGB" and img.size == (8, 6)


def test_http_errors_are_reasons(ls_server: _Server) -> None:
    f = fetcher(ls_server)
    with pytest.raises(ImageError) as e:
        f.fetch_bytes("/data/upload/1/missing.png")
    assert e.value.reason == "HTTP 404"
    no_auth = ImageFetcher(ImagePolicy(ls_server.url, None, frozenset()), None)
    ls_server.routes["/data/upload/private.png"] = (200, {}, png_bytes())
    with pytest.raises(ImageError, match="HTTP 401"):
        no_auth.fetch_bytes("/data/upload/private.png")


def test_relative_url_without_ls_url() -> None:
    with pytest.raises(ImageError, match="no Label Studio URL"):
        fetcher(None).fetch_bytes("/data/upload/1/a.png")


def test_foreign_hosts_refused_unless_allowed(ls_server: _Server, other_server: _Server) -> None:
    data = png_bytes()
    other_server.routes["/a.png"] = (200, {}, data)
    url = f"{other_server.url}/a.png"
    with pytest.raises(ImageError) as e:
        fetcher(ls_server).fetch_bytes(url)
    assert e.value.reason == "host not allowed"
    assert other_server.requests == []  # never contacted
    with pytest.raises(ImageError, match="host not allowed"):
        fetcher(ls_server).fetch_bytes("http://169.254.169.254/latest/meta-data")
    allowed = fetcher(ls_server, allowed=frozenset({f"127.0.0.1:{other_server.port}"}))
    assert allowed.fetch_bytes(url) == data
    # the Label Studio token is not sent to other hosts
    assert "Authorization" not in other_server.requests[-1][1]


@pytest.mark.parametrize(
    "ref", ["file:///etc/passwd", "ftp://example.com/a.png", "s3://bucket/a.png", "//evil/a.png"]
)
def test_other_schemes_refused(ls_server: _Server, ref: str) -> None:
    with pytest.raises(ImageError, match="unsupported"):
        fetcher(ls_server).fetch_bytes(ref)


def test_redirects(ls_server: _Server, other_server: _Server) -> None:
    data = png_bytes()
    ls_server.routes["/data/upload/final.png"] = (200, {}, data)
    ls_server.routes["/data/upload/hop"] = (302, {"Location": "/data/upload/final.png"}, b"")
    ls_server.routes["/data/upload/away"] = (302, {"Location": f"{other_server.url}/x.png"}, b"")
    ls_server.routes["/data/upload/loop"] = (302, {"Location": "/data/upload/loop"}, b"")
    f = fetcher(ls_server)
    assert f.fetch_bytes("/data/upload/hop") == data
    with pytest.raises(ImageError) as e:
        f.fetch_bytes("/data/upload/away")
    assert e.value.reason == "redirect to a host not allowed"
    assert other_server.requests == []
    with pytest.raises(ImageError, match="too many redirects"):
        f.fetch_bytes("/data/upload/loop")


def test_size_limit(ls_server: _Server) -> None:
    ls_server.routes["/data/upload/big.png"] = (200, {}, b"\0" * 5000)
    f = fetcher(ls_server, max_bytes=4096)
    with pytest.raises(ImageError, match="too large"):
        f.fetch_bytes("/data/upload/big.png")  # Content-Length says so
    started = time.monotonic()
    with pytest.raises(ImageError, match="too large"):
        f.fetch_bytes("/data/upload/endless")  # streamed without Content-Length: aborted
    assert time.monotonic() - started < 5


def test_timeout_covers_the_whole_download(ls_server: _Server) -> None:
    f = fetcher(ls_server, timeout=0.8)
    started = time.monotonic()
    with pytest.raises(ImageError, match="timeout"):
        f.fetch_bytes("/data/upload/slow")  # trickles bytes for 5 s, each read within the timeout
    assert time.monotonic() - started < 3


def test_unreachable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    f = ImageFetcher(ImagePolicy(f"http://127.0.0.1:{port}", None, frozenset()), None)
    with pytest.raises(ImageError, match="unreachable"):
        f.fetch_bytes("/data/upload/1/a.png")


def test_data_uris() -> None:
    data = png_bytes()
    f = fetcher(None, max_bytes=100_000)
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    assert f.fetch_bytes(uri) == data
    assert f.load(uri).size == (8, 6)
    assert f.fetch_bytes("data:text/plain,hello%20world") == b"hello world"
    with pytest.raises(ImageError, match="malformed"):
        f.fetch_bytes("data:image/png;base64,@@@not-base64@@@")
    with pytest.raises(ImageError, match="malformed"):
        f.fetch_bytes("data:image/png;base64")
    big = "data:image/png;base64," + base64.b64encode(b"\0" * 200_000).decode()
    with pytest.raises(ImageError, match="too large"):
        f.fetch_bytes(big)
    with pytest.raises(ImageError, match="not an image"):
        f.load("data:image/png;base64," + base64.b64encode(b"plain text").decode())


def test_empty_reference() -> None:
    f = fetcher(None)
    for ref in ["", "   ", None]:
        with pytest.raises(ImageError, match="no image reference"):
            f.fetch_bytes(ref)  # type: ignore[arg-type]


@pytest.fixture
def files_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "cat.png").write_bytes(png_bytes())
    (tmp_path / "secret.png").write_bytes(png_bytes())
    os.symlink(tmp_path / "secret.png", root / "link-out.png")
    os.symlink(root / "sub" / "cat.png", root / "link-in.png")
    return root


def test_local_files_under_root(files_root: Path, ls_server: _Server) -> None:
    f = fetcher(ls_server, root=files_root)
    assert f.load("/data/local-files/?d=sub/cat.png").size == (8, 6)
    assert f.fetch_bytes("/data/local-files/?d=sub%2Fcat.png") == png_bytes()
    # the absolute form on the Label Studio host reads from disk too, not over HTTP
    assert f.fetch_bytes(f"{ls_server.url}/data/local-files/?d=sub/cat.png") == png_bytes()
    assert f.fetch_bytes("/data/local-files/?d=link-in.png") == png_bytes()
    assert ls_server.requests == []


@pytest.mark.parametrize(
    "d",
    [
        "../secret.png",
        "sub/../../secret.png",
        "%2E%2E/secret.png",
        "/etc/passwd",
        "link-out.png",
    ],
)
def test_local_files_traversal_refused(files_root: Path, d: str) -> None:
    f = fetcher(None, root=files_root)
    with pytest.raises(ImageError) as e:
        f.fetch_bytes(f"/data/local-files/?d={d}")
    assert e.value.reason in ("path outside the local files root", "not found")
    assert "outside" in e.value.reason or d == "/etc/passwd"


def test_local_files_missing_or_disabled(files_root: Path) -> None:
    with pytest.raises(ImageError, match="not found"):
        fetcher(None, root=files_root).fetch_bytes("/data/local-files/?d=sub/nope.png")
    with pytest.raises(ImageError, match="not found"):
        fetcher(None, root=files_root).fetch_bytes("/data/local-files/?d=sub")  # a directory
    with pytest.raises(ImageError, match="malformed"):
        fetcher(None, root=files_root).fetch_bytes("/data/local-files/?x=1")
    with pytest.raises(ImageError, match="not enabled"):
        fetcher(None, root=None).fetch_bytes("/data/local-files/?d=sub/cat.png")
    with pytest.raises(ImageError, match="too large"):
        fetcher(None, root=files_root, max_bytes=10).fetch_bytes("/data/local-files/?d=sub/cat.png")


# -- decoding -------------------------------------------------------------------------------------


def test_decode_modes_become_rgb() -> None:
    for mode, color in [("L", 100), ("RGBA", (1, 2, 3, 0)), ("P", 3), ("CMYK", (0, 0, 0, 0))]:
        buf = io.BytesIO()
        Image.new(mode, (5, 4), color).save(buf, "TIFF" if mode == "CMYK" else "PNG")
        img = decode_image(buf.getvalue(), 1000)
        assert img.mode == "RGB" and img.size == (5, 4)
    # transparent pixels are composited on white
    buf = io.BytesIO()
    Image.new("RGBA", (2, 2), (0, 0, 0, 0)).save(buf, "PNG")
    assert decode_image(buf.getvalue(), 1000).getpixel((0, 0)) == (255, 255, 255)
    buf = io.BytesIO()
    Image.new("I;16", (3, 3), 1000).save(buf, "PNG")
    assert decode_image(buf.getvalue(), 1000).mode == "RGB"


def test_decompression_bomb_refused_before_decoding() -> None:
    bomb = png_declaring(100_000, 100_000)  # 10^10 pixels, beyond Pillow's own limit
    assert len(bomb) < 200
    with pytest.raises(ImageError) as e:
        decode_image(bomb, 40_000_000)
    assert e.value.reason == "too many pixels"
    with pytest.raises(ImageError, match="too many pixels"):
        decode_image(png_declaring(7000, 7000), 40_000_000)  # below Pillow's, above ours
    with pytest.raises(ImageError, match="too many pixels"):
        decode_image(png_bytes((20, 20)), 399)


def test_corrupt_and_truncated() -> None:
    data = png_bytes((64, 64))
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], 10_000)
    broken = bytearray(data)
    broken[40] ^= 0xFF  # inside IHDR/IDAT: CRC mismatch
    with pytest.raises(ImageError):
        decode_image(bytes(broken), 10_000)
    with pytest.raises(ImageError, match="not an image"):
        decode_image(b"GIF89a but not really", 10_000)
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"", 10_000)


def test_exif_orientation_applied() -> None:
    img = Image.new("RGB", (4, 2), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    assert decode_image(buf.getvalue(), 1000).size == (2, 4)
    assert exif_transpose(Image.new("RGB", (4, 2))).size == (4, 2)


def test_local_files_neither_folders_nor_a_sibling_with_the_roots_name(files_root: Path) -> None:
    sibling = files_root.parent / (files_root.name + "-other")
    sibling.mkdir()
    (sibling / "x.png").write_bytes(png_bytes())
    f = fetcher(None, root=files_root)
    with pytest.raises(ImageError) as e:
        f.fetch_bytes(f"/data/local-files/?d=../{sibling.name}/x.png")
    assert e.value.reason == "path outside the local files root"
    for folder in ("sub", "sub/", "."):
        with pytest.raises(ImageError) as e:
            f.fetch_bytes(f"/data/local-files/?d={folder}")
        assert e.value.reason == "not found"
