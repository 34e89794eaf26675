"""HTTPS through the media transport: certificates are verified, the handshake is under the same
deadline, and a trusted server is fetched (a real TLS server on loopback, openssl's certificate)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import certifi
import pytest
from media_servers import TOKEN, KeepAlive, png_bytes, self_signed_cert

from labelwheel.media import ImageError, ImageFetcher, ImagePolicy
from labelwheel.media.tls import check_trust

PNG = png_bytes()

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https_server(cert: tuple[Path, Path]) -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

    httpd = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    httpd.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[1]), str(cert[0]))
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield f"https://127.0.0.2:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def fetcher(timeout: float = 3.0) -> ImageFetcher:
    policy = ImagePolicy(None, None, allowed_hosts=frozenset({"127.0.0.2"}), timeout=timeout)
    return ImageFetcher(policy, lambda: {"Authorization": TOKEN})


@pytest.fixture(autouse=True)
def _no_bundle_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def test_untrusted_certificate_is_refused(https_server: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = https_server
    with pytest.raises(ImageError) as e:
        fetcher().fetch_bytes(f"{url}/a.png")
    assert e.value.reason == "unreachable"
    assert e.value.detail == "SSLCertVerificationError"
    assert seen == []


def test_trusted_certificate_is_fetched(
    https_server: tuple[str, list[dict[str, str]]],
    cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, seen = https_server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert[1]))
    assert fetcher().fetch_bytes(f"{url}/a.png") == PNG
    assert seen[0]["Host"] == url.removeprefix("https://")
    assert "Authorization" not in seen[0]  # an allow-listed host never gets the token


def test_a_stalled_tls_handshake_ends_at_the_deadline() -> None:
    with socket.socket() as silent:  # accepts TCP, never speaks TLS
        silent.bind(("127.0.0.2", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ImageError, match="timeout"):
            fetcher(timeout=1.0).fetch_bytes(f"https://127.0.0.2:{port}/a.png")
        assert time.monotonic() - started < 1.0 + 1.0


def test_many_images_over_one_tls_handshake(
    cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[1]), str(cert[0]))
    server = KeepAlive("127.0.0.2", tls=ctx)
    pngs = [png_bytes((i, 0, 0)) for i in range(10)]
    for i, png in enumerate(pngs):
        server.routes[f"/{i}.png"] = (200, {}, png)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert[1]))
    try:
        f = fetcher()
        assert [f.fetch_bytes(f"{server.url}/{i}.png") for i in range(10)] == pngs
        assert server.per_connection() == [10]  # one connection, so one handshake
    finally:
        server.close()


def test_the_bundle_requests_trusts_is_trusted(
    https_server: tuple[str, list[dict[str, str]]],
    cert: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """REQUESTS_CA_BUNDLE first, then CURL_CA_BUNDLE; a PEM file or a rehashed folder."""
    url, _seen = https_server
    monkeypatch.setenv("CURL_CA_BUNDLE", str(cert[1]))
    assert fetcher().fetch_bytes(f"{url}/a.png") == PNG
    folder = tmp_path / "cas"
    folder.mkdir()
    shutil.copy(cert[1], folder / "company-ca.pem")
    subprocess.run(["openssl", "rehash", str(folder)], check=True, capture_output=True)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(folder))
    assert fetcher().fetch_bytes(f"{url}/b.png") == PNG
    other = tmp_path / "other.pem"  # a valid bundle without our certificate: it wins, refused
    other.write_text(Path(certifi.where()).read_text())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    with pytest.raises(ImageError) as e:
        fetcher().fetch_bytes(f"{url}/c.png")
    assert e.value.detail == "SSLCertVerificationError"


def test_an_unreadable_bundle_is_named(
    https_server: tuple[str, list[dict[str, str]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = https_server
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    for path in (junk, tmp_path / "missing.pem"):
        monkeypatch.setenv("CURL_CA_BUNDLE", str(path))
        with pytest.raises(ImageError) as e:
            fetcher().fetch_bytes(f"{url}/a.png")
        assert e.value.reason == "unreachable"
        assert f"CURL_CA_BUNDLE={str(path)!r}" in str(e.value.detail)
        with pytest.raises(ValueError, match="CURL_CA_BUNDLE"):
            check_trust()
    assert seen == []
