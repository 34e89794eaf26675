"""Where Label Studio is and how to reach it: the backend's one client and image fetcher.

Which URL and which key, and the one rule that keeps the key safe:

- ``LABEL_STUDIO_URL`` configured: that URL, always (a ``/setup`` hostname never replaces it),
  with ``LABEL_STUDIO_API_KEY``, else with the ``access_token`` of the last ``/setup``.
- ``LABEL_STUDIO_URL`` not configured: the ``hostname`` of the last ``/setup``, only ever with the
  ``access_token`` that came in that same request (none: no key). ``LABEL_STUDIO_API_KEY`` is never
  paired with a ``/setup`` hostname: without basic auth anyone can call ``/setup``, and the key
  would go to the host they name.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from labelwheel.ml_backend.config import Settings

log = logging.getLogger("labelwheel.ml_backend")


def _setup_hostname(hostname: str | None) -> str | None:
    """/setup's hostname if it is a plain http(s) base URL (no userinfo, query or tricks)."""
    if not isinstance(hostname, str) or not hostname.strip():
        return None
    from labelwheel.media import ImageError
    from labelwheel.media.urls import parse_http_url

    text = hostname.strip().rstrip("/")
    try:
        url = parse_http_url(text)
    except ImageError as exc:
        log.warning("/setup hostname %.80r ignored: %s", hostname, exc)
        return None
    if url.query is not None or "#" in text:
        log.warning("/setup hostname %.80r ignored: it has a query or fragment", hostname)
        return None
    return str(url).rstrip("/")


class LabelStudioLink:
    """Where Label Studio is and how to authenticate (see the module doc for the rule)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._setup_url: str | None = None  # hostname and token of the same, last /setup
        self._setup_token: str | None = None
        self._client: Any = None
        self._client_key: tuple[str, str] | None = None
        self._fetcher: Any = None
        self._fetcher_key: tuple[str | None, int] | None = None
        self._lock = threading.Lock()

        if settings.label_studio_api_key and not settings.label_studio_url:
            log.warning(
                "LABEL_STUDIO_API_KEY is set but LABEL_STUDIO_URL is not: the key is used only "
                "with LABEL_STUDIO_URL, never with a hostname sent to /setup; set LABEL_STUDIO_URL"
            )

    def remember_setup(self, hostname: str | None, access_token: str | None) -> None:
        """Keep /setup's hostname and token as one pair (in memory only): the hostname is used
        only with that token, and only when ``LABEL_STUDIO_URL`` is not configured."""
        token = access_token.strip() if isinstance(access_token, str) else ""
        url = _setup_hostname(hostname)
        with self._lock:
            self._setup_url = url
            self._setup_token = token or None

    def _pair(self) -> tuple[str | None, str | None]:
        s = self.settings
        with self._lock:
            setup_url, setup_token = self._setup_url, self._setup_token
        if s.label_studio_url:
            return s.label_studio_url, s.label_studio_api_key or setup_token
        if setup_url:
            return setup_url, setup_token  # never the environment's key
        return None, None

    @property
    def url(self) -> str | None:
        """Label Studio's base URL, if known."""
        return self._pair()[0]

    @property
    def api_key(self) -> str | None:
        """The API key to use with :attr:`url`, if known."""
        return self._pair()[1]

    def client(self) -> Any:
        """A ``LabelStudioClient``, or None when URL or key is unknown."""
        return self._client_for(*self._pair())

    def _client_for(self, url: str | None, key: str | None) -> Any:
        if not url or not key:
            return None
        with self._lock:
            if self._client is None or self._client_key != (url, key):
                from labelwheel.ls_api import LabelStudioClient

                self._client = LabelStudioClient(url, key, timeout=self.settings.fetch_timeout)
                self._client_key = (url, key)
            return self._client

    def fetcher(self) -> Any:
        """An ``ImageFetcher`` with the current policy and Label Studio credentials."""
        url, api_key = self._pair()  # one read: the URL and the credentials belong together
        client = self._client_for(url, api_key)
        key = (url, id(client))
        with self._lock:
            if self._fetcher is None or self._fetcher_key != key:
                from labelwheel.media import ImageFetcher, ImagePolicy

                if self._fetcher is not None:  # its kept-alive connections are of no more use
                    self._fetcher.close()

                s = self.settings
                policy = ImagePolicy(
                    ls_url=url,
                    local_files_root=s.local_files_root,
                    allowed_hosts=s.allowed_hosts,
                    max_bytes=s.max_image_bytes,
                    timeout=s.fetch_timeout,
                    max_pixels=s.max_image_pixels,
                    # Label Studio's storage redirects go to any host only from a configured URL
                    storage_redirects=bool(s.label_studio_url),
                )
                self._fetcher = ImageFetcher(
                    policy, client.auth_headers if client is not None else None, s.proxies
                )
                if s.s3_direct_buckets:  # opt-in: these buckets with the backend's own credentials
                    from labelwheel.media.s3direct import DirectS3Fetcher, S3DirectReader

                    reader = S3DirectReader(
                        s.s3_direct_buckets,
                        endpoint_url=s.s3_endpoint_url,
                        max_bytes=s.max_image_bytes,
                        timeout=s.fetch_timeout,
                    )
                    self._fetcher = DirectS3Fetcher(self._fetcher, reader)
                self._fetcher_key = key
            return self._fetcher
