"""Image fetches through an HTTP proxy, as HTTPS_PROXY / HTTP_PROXY / NO_PROXY ask: plain HTTP
forwarded, HTTPS tunnelled (CONNECT) with TLS end to end, credentials, NO_PROXY, kept-alive
connections. The proxy is a real one (proxy.py, from PyPI) in its own process."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from media_servers import KeepAlive, png_bytes, self_signed_cert

from labelwheel.media import ImageError, ImageFetcher, ImagePolicy, Proxies
from labelwheel.media.proxies import Proxy, direct_to_loopback
from labelwheel.media.urls import parse_http_url

pytest.importorskip("proxy", reason="needs proxy.py (the dev extras)")

PNGS = [png_bytes((i * 20, 0, 0)) for i in range(6)]


# -- the environment, read as requests and curl read it ---------------------------------------


def test_proxies_from_the_environment() -> None:
    env = {
        "HTTPS_PROXY": "http://alice:s%40cret@proxy.corp:3128",
        "http_proxy": "proxy.corp:8080",  # no scheme: http
        "HTTP_PROXY": "http://ignored:1",  # lower case wins, as in curl and urllib
        "NO_PROXY": "localhost, .internal.corp,10.0.0.0/8, storage.example:9000,[::1]",
    }
    proxies = Proxies.from_environment(env)
    https = proxies.by_scheme["https"]
    assert (https.host, https.port) == ("proxy.corp", 3128)
    assert https.authorization == "Basic " + base64.b64encode(b"alice:s@cret").decode()
    assert "s@cret" not in repr(proxies) and "alice" not in str(https)
    assert proxies.by_scheme["http"] == Proxy("proxy.corp", 8080)

    def via(url: str) -> Proxy | None:
        return proxies.for_url(parse_http_url(url))

    assert via("https://bucket.s3.amazonaws.com/a.png") == https
    assert via("http://images.example/a.png") == proxies.by_scheme["http"]
    for direct in (
        "http://localhost:8080/a.png",
        "https://files.internal.corp/a.png",  # a sub-domain
        "https://internal.corp/a.png",  # the leading dot covers the name itself too
        "http://10.1.2.3/a.png",  # inside the CIDR block
        "http://storage.example:9000/a.png",
        "http://[::1]:8080/a.png",
    ):
        assert via(direct) is None, direct
    assert via("http://storage.example:9001/a.png") is not None  # another port
    assert via("http://notinternal.corp/a.png") is not None  # a suffix, not a sub-domain
    assert via("http://11.0.0.1/a.png") is not None

    everywhere = Proxies.from_environment({"ALL_PROXY": "http://p:1", "no_proxy": "*"})
    assert everywhere.by_scheme["https"] == Proxy("p", 1)  # ALL_PROXY as the fallback
    assert everywhere.for_url(parse_http_url("https://x.example/a.png")) is None
    assert not Proxies.from_environment({})
    assert Proxies.from_environment({"HTTPS_PROXY": "  "}).by_scheme == {}
    assert Proxy.parse("http://p").port == 80  # as requests does


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("socks5://p:1080", "only http:// proxies"),
        ("https://p:443", "only http:// proxies"),
        ("http://:8080", "has no host"),
        ("http://p:99999", "HTTPS_PROXY"),
    ],
)
def test_unusable_proxy_urls_are_refused_naming_the_variable(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as e:
        Proxies.from_environment({"HTTPS_PROXY": value})
    assert "HTTPS_PROXY" in str(e.value)


def test_a_refused_proxy_url_never_shows_its_password() -> None:
    with pytest.raises(ValueError) as e:
        Proxies.from_environment({"https_proxy": "socks5://bob:hunter2@p:1080"})
    assert "hunter2" not in str(e.value) and "bob:***@p:1080" in str(e.value)


def test_the_fetcher_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://p.corp:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    f = ImageFetcher(ImagePolicy(None, None), None)
    assert f.proxies.by_scheme["https"] == Proxy("p.corp", 3128)
    monkeypatch.setenv("HTTPS_PROXY", "socks5://p.corp:1080")
    with pytest.raises(ValueError, match="HTTPS_PROXY"):
        ImageFetcher(ImagePolicy(None, None), None)


# -- a real proxy --------------------------------------------------------------------------------


class ProxyServer:
    """proxy.py in a child process on a free loopback port (optionally with Basic auth)."""

    def __init__(self, tmp: Path, basic_auth: str | None = None) -> None:
        port_file = tmp / "port"
        cmd = [
            sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0",
            "--port-file", str(port_file), "--num-workers", "1", "--num-acceptors", "1",
        ]  # fmt: skip
        if basic_auth is not None:
            cmd += ["--basic-auth", basic_auth]
        self.log = tmp / "proxy.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"proxy.py did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"

    def logged(self, text: str, wait: float = 10.0) -> bool:
        """Whether the proxy's log shows ``text`` (within ``wait`` seconds)."""
        deadline = time.monotonic() + wait
        while text not in self.log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    server = ProxyServer(tmp_path_factory.mktemp("proxy"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def auth_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    server = ProxyServer(tmp_path_factory.mktemp("auth-proxy"), basic_auth="lw:pa55")
    yield server
    server.close()


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def http_images() -> Iterator[KeepAlive]:
    server = KeepAlive("127.0.0.2")
    for i, png in enumerate(PNGS):
        server.routes[f"/{i}.png"] = (200, {}, png)
    yield server
    server.close()


@pytest.fixture
def https_images(cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[KeepAlive]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[1]), str(cert[0]))
    server = KeepAlive("127.0.0.2", tls=ctx)
    for i, png in enumerate(PNGS):
        server.routes[f"/{i}.png"] = (200, {}, png)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert[1]))
    yield server
    server.close()


def fetcher(proxies: Proxies, timeout: float = 5.0) -> ImageFetcher:
    policy = ImagePolicy(None, None, allowed_hosts=frozenset({"127.0.0.2"}), timeout=timeout)
    return ImageFetcher(policy, None, proxies)


def through(url: str, no_proxy: str = "") -> Proxies:
    return Proxies.from_environment({"HTTP_PROXY": url, "HTTPS_PROXY": url, "NO_PROXY": no_proxy})


def test_http_images_are_forwarded_by_the_proxy(proxy: ProxyServer, http_images: KeepAlive) -> None:
    f = fetcher(through(proxy.url()))
    assert [f.fetch_bytes(f"{http_images.url}/{i}.png") for i in range(6)] == PNGS
    # proxy.py marks what it forwards; the image server saw its forwarded request
    assert http_images.requests[0][2].get("via", "").startswith("1.1 proxy.py")
    assert http_images.requests[0][1] == "/0.png"


def test_https_images_are_tunnelled_and_the_tunnel_is_kept(
    proxy: ProxyServer, https_images: KeepAlive
) -> None:
    f = fetcher(through(proxy.url()))
    assert [f.fetch_bytes(f"{https_images.url}/{i}.png") for i in range(6)] == PNGS
    # one tunnel, so one TLS handshake with the image host, for all six images
    assert https_images.per_connection() == [6]
    # TLS ran end to end: the proxy forwarded bytes it could not read (no Via header added)
    assert all("via" not in headers for _c, _t, headers in https_images.requests)
    f.close()  # the tunnel ends, and the proxy logs it
    assert proxy.logged(f"CONNECT 127.0.0.2:{https_images.port}")


def test_no_proxy_hosts_are_fetched_directly(http_images: KeepAlive) -> None:
    dead = "http://127.0.0.1:9"  # nothing listens there
    assert (
        fetcher(through(dead, no_proxy="127.0.0.2")).fetch_bytes(f"{http_images.url}/0.png")
        == PNGS[0]
    )
    with pytest.raises(ImageError) as e:
        fetcher(through(dead)).fetch_bytes(f"{http_images.url}/0.png")
    assert e.value.reason == "unreachable"
    assert "proxy http://127.0.0.1:9" in str(e.value.detail)
    assert http_images.requests == [(1, "/0.png", http_images.requests[0][2])]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_proxy_credentials(
    scheme: str,
    auth_proxy: ProxyServer,
    http_images: KeepAlive,
    https_images: KeepAlive,
) -> None:
    server = http_images if scheme == "http" else https_images
    url = f"{server.url}/1.png"
    assert fetcher(through(auth_proxy.url("lw:pa55"))).fetch_bytes(url) == PNGS[1]

    with pytest.raises(ImageError) as e:
        fetcher(through(auth_proxy.url())).fetch_bytes(url)
    assert e.value.reason == "unreachable"
    assert "407" in str(e.value.detail) and "http://user:password@host:port" in str(e.value.detail)

    with pytest.raises(ImageError) as e:
        fetcher(through(auth_proxy.url("lw:wrong"))).fetch_bytes(url)
    assert "407" in str(e.value.detail) and "refused the credentials" in str(e.value.detail)
    assert "wrong" not in str(e.value)
    assert len(server.requests) == 1  # only the fetch with the right credentials got through


def test_loopback_is_kept_off_the_proxy_only_when_one_is_set() -> None:
    env = {"PATH": "/bin"}
    direct_to_loopback(env)
    assert env == {"PATH": "/bin"}  # no proxy: nothing added
    env = {"HTTPS_PROXY": "http://p.corp:3128", "NO_PROXY": "ls.internal, localhost"}
    direct_to_loopback(env)
    assert env["NO_PROXY"] == env["no_proxy"] == "ls.internal,localhost,127.0.0.1,::1"
    direct_to_loopback(env)  # idempotent
    assert env["no_proxy"] == "ls.internal,localhost,127.0.0.1,::1"
    proxies = Proxies.from_environment(env)
    for url in ("https://127.0.0.1:8080/a.png", "https://[::1]:8080/a.png", "https://ls.internal/"):
        assert proxies.for_url(parse_http_url(url)) is None
    assert proxies.for_url(parse_http_url("https://s3.example/a.png")) is not None
