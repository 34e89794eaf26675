"""/setup cannot point the backend's key at a host of the caller's choosing (real app, real
servers on loopback): a /setup hostname is used only with the access_token of the same /setup,
never with LABEL_STUDIO_API_KEY, and never replaces LABEL_STUDIO_URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backend_helpers import CONFIG_SINGLE, png_bytes

from labelwheel.media import ImageError
from labelwheel.ml_backend import get_service

ENV_KEY = "e" * 40  # the backend's own key (legacy-token form)
SETUP_TOKEN = "5" * 40  # the token a /setup brings
PNG = png_bytes(np.full((32, 32), 128, dtype=np.uint8))


class Host:
    """A loopback HTTP server that records every request's path and headers; it serves a PNG
    on every /data/upload/ path and 404 elsewhere."""

    def __init__(self, address: str) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.redirects: dict[str, str] = {}  # path -> Location of a 303
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                host.requests.append((self.path, dict(self.headers)))
                location = host.redirects.get(self.path.partition("?")[0])
                if location is not None:
                    self.send_response(303)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = PNG if self.path.startswith("/data/upload/") else b"{}"
                self.send_response(200 if self.path.startswith("/data/upload/") else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        self.httpd = ThreadingHTTPServer((address, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{address}:{self.httpd.server_address[1]}"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def auth(self) -> list[str]:
        """Every Authorization header value received."""
        return [v for _p, h in self.requests for k, v in h.items() if k.lower() == "authorization"]

    def fetched(self) -> list[tuple[str, str | None]]:
        """(path, Authorization) of every image fetched."""
        return [
            (p, h.get("Authorization")) for p, h in self.requests if p.startswith("/data/upload/")
        ]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def ls() -> Iterator[Host]:
    host = Host("127.0.0.1")
    yield host
    host.close()


@pytest.fixture
def canary() -> Iterator[Host]:
    host = Host("127.0.0.2")
    yield host
    host.close()


def setup(client: Any, **fields: Any) -> None:
    body = {"project": "7.1700000000", "schema": CONFIG_SINGLE, **fields}
    resp = client.post("/setup", json=body)
    assert resp.status_code == 200, resp.get_json()


def predict(client: Any, *refs: str) -> None:
    tasks = [{"id": i + 1, "data": {"image": ref}} for i, ref in enumerate(refs)]
    body = {"tasks": tasks, "project": "7.1700000000", "label_config": CONFIG_SINGLE}
    resp = client.post("/predict", json=body)
    assert resp.status_code == 200, resp.get_json()
    assert len(resp.get_json()["results"]) == len(refs)


def test_setup_hostname_gets_only_its_own_token(make_app: Any, canary: Host) -> None:
    app = make_app(LABEL_STUDIO_API_KEY=ENV_KEY)  # no LABEL_STUDIO_URL
    client = app.test_client()
    link = get_service(app).link

    setup(client, hostname=canary.url)  # no access_token: no key at all
    assert link.url == canary.url and link.api_key is None and link.client() is None
    predict(client, "/data/upload/1/a.png")
    assert canary.fetched() == [("/data/upload/1/a.png", None)]

    setup(client, hostname=canary.url, access_token=SETUP_TOKEN)  # its own token: used
    assert link.api_key == SETUP_TOKEN
    predict(client, "/data/upload/1/b.png")
    assert ("/data/upload/1/b.png", f"Token {SETUP_TOKEN}") in canary.fetched()

    other = Host("127.0.0.3")
    try:
        setup(client, hostname=other.url)  # a new host without a token: not the old token
        assert link.url == other.url and link.api_key is None
        predict(client, "/data/upload/1/c.png")
        assert other.fetched() == [("/data/upload/1/c.png", None)]
        assert other.auth() == []
    finally:
        other.close()
    assert all(ENV_KEY not in value for value in canary.auth())
    assert set(canary.auth()) <= {f"Token {SETUP_TOKEN}"}


def test_setup_hostname_never_replaces_the_configured_url(
    make_app: Any, ls: Host, canary: Host
) -> None:
    app = make_app(LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ENV_KEY)
    client = app.test_client()
    link = get_service(app).link
    setup(client, hostname=canary.url, access_token=SETUP_TOKEN)
    assert (link.url, link.api_key) == (ls.url, ENV_KEY)
    predict(client, "/data/upload/1/a.png", f"{canary.url}/data/upload/1/a.png")
    assert ls.fetched() == [("/data/upload/1/a.png", f"Token {ENV_KEY}")]
    assert canary.requests == []  # not Label Studio, not allow-listed: never contacted


def test_setup_token_with_the_configured_url(make_app: Any, ls: Host, canary: Host) -> None:
    app = make_app(LABEL_STUDIO_URL=ls.url)  # no key configured: /setup's token is the key
    client = app.test_client()
    setup(client, hostname=canary.url, access_token=SETUP_TOKEN)
    link = get_service(app).link
    assert (link.url, link.api_key) == (ls.url, SETUP_TOKEN)
    predict(client, "/data/upload/1/a.png")
    assert ls.fetched() == [("/data/upload/1/a.png", f"Token {SETUP_TOKEN}")]
    assert canary.requests == []


def test_storage_redirects_trusted_only_from_a_configured_url(
    make_app: Any, ls: Host, canary: Host, tmp_path: Path
) -> None:
    """Label Studio's resolve endpoint may redirect to any host (its presigned storage URL), but
    only a configured Label Studio is trusted with that: a /setup hostname is not."""
    storage = Host("127.0.0.3")
    try:
        for server in (ls, canary):
            server.redirects["/tasks/1/resolve/"] = f"{storage.url}/data/upload/bucket/1.png"
        ref = "/tasks/1/resolve/?fileuri=czM6Ly9idWNrZXQvMS5wbmc="
        configured = make_app(LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ENV_KEY)
        assert get_service(configured).link.fetcher().fetch_bytes(ref) == PNG
        assert storage.fetched() == [("/data/upload/bucket/1.png", None)]

        from_setup = make_app(MODEL_DIR=str(tmp_path / "other_model_dir"))
        setup(from_setup.test_client(), hostname=canary.url, access_token=SETUP_TOKEN)
        with pytest.raises(ImageError, match="redirect to a host not allowed"):
            get_service(from_setup).link.fetcher().fetch_bytes(ref)
        assert len(storage.requests) == 1  # not contacted again
        assert ls.auth() == [f"Token {ENV_KEY}"] and canary.auth() == [f"Token {SETUP_TOKEN}"]
    finally:
        storage.close()


@pytest.mark.parametrize(
    "hostname",
    [
        "http://127.0.0.2:9\\@127.0.0.1:8080",
        "http://user:pass@127.0.0.2:9",
        "ftp://127.0.0.2",
        "http://127.0.0.2:9/?next=x",
        "127.0.0.2:9",
        "http://127.0.0.2\r\n:9",
    ],
)
def test_setup_hostname_tricks_are_ignored(make_app: Any, hostname: str) -> None:
    app = make_app()
    setup(app.test_client(), hostname=hostname, access_token=SETUP_TOKEN)
    link = get_service(app).link
    assert link.url is None and link.client() is None
