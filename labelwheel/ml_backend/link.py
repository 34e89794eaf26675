"""Where Label Studio is and how to reach it: the backend's one client and image fetcher."""

from __future__ import annotations

import threading
from typing import Any

from labelwheel.ml_backend.config import Settings


class LabelStudioLink:
    """Where Label Studio is and how to authenticate: env settings win over /setup values."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._setup_url: str | None = None
        self._setup_token: str | None = None
        self._client: Any = None
        self._client_key: tuple[str, str] | None = None
        self._fetcher: Any = None
        self._fetcher_key: tuple[str | None, int] | None = None
        self._lock = threading.Lock()

    def remember_setup(self, hostname: str | None, access_token: str | None) -> None:
        """Keep /setup's hostname and token (in memory only) for when the env has none."""
        with self._lock:
            if hostname:
                self._setup_url = hostname.rstrip("/")
            if access_token:
                self._setup_token = access_token

    @property
    def url(self) -> str | None:
        """Label Studio's base URL, if known."""
        return self.settings.label_studio_url or self._setup_url

    @property
    def api_key(self) -> str | None:
        """The API key to use, if known."""
        return self.settings.label_studio_api_key or self._setup_token

    def client(self) -> Any:
        """A ``LabelStudioClient``, or None when URL or key is unknown."""
        url, key = self.url, self.api_key
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
        client = self.client()
        key = (self.url, id(client))
        with self._lock:
            if self._fetcher is None or self._fetcher_key != key:
                from labelwheel.media import ImageFetcher, ImagePolicy

                s = self.settings
                policy = ImagePolicy(
                    ls_url=self.url,
                    local_files_root=s.local_files_root,
                    allowed_hosts=s.allowed_hosts,
                    max_bytes=s.max_image_bytes,
                    timeout=s.fetch_timeout,
                    max_pixels=s.max_image_pixels,
                )
                self._fetcher = ImageFetcher(
                    policy, client.auth_headers if client is not None else None
                )
                self._fetcher_key = key
            return self._fetcher
