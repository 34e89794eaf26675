"""Safe image fetching: every source a task's image reference can name.

A task's image reference can be:

- a Label Studio path (``/data/upload/3/ab12-cat.png``) or any other relative URL: fetched from
  the Label Studio URL with the backend's API credentials;
- a ``data:`` URI (base64 or percent-encoded);
- a Label Studio local file (``/data/local-files/?d=photos/cat.png``): read from disk, only below
  the configured root; ``..``, absolute paths and symlinks that lead outside the root are refused;
- an absolute ``http(s)`` URL: only on the Label Studio host itself (sent with credentials) or on a
  host of the allowlist (sent without them). Redirects are followed (at most 3) only to allowed
  hosts. Everything else (other hosts, ``file:``, ``s3:`` ...) is refused: no server-side request
  forgery.

Downloads are streamed and aborted past ``max_bytes`` or the ``timeout`` (for the whole download).
Every failure is an :class:`~labelwheel.media.errors.ImageError` with a short ``reason`` that can
be logged.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from PIL import Image

from labelwheel.media.decode import decode_image
from labelwheel.media.errors import ImageError

__all__ = ["ImageFetcher", "ImagePolicy"]

_MAX_REDIRECTS = 3
_CHUNK = 64 * 1024
_LOCAL_FILES_PATH = "/data/local-files"


@dataclass(frozen=True)
class ImagePolicy:
    """Where images may come from and how large they may be."""

    ls_url: str | None
    local_files_root: Path | None
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    max_bytes: int = 20 * 2**20
    timeout: float = 10.0
    max_pixels: int = 40_000_000


def _origin(url: str) -> tuple[str, str, int] | None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    default = 443 if parts.scheme == "https" else 80
    return (parts.scheme, parts.hostname.lower(), port or default)


class ImageFetcher:
    """Fetches image bytes by reference under an :class:`ImagePolicy` (thread-safe)."""

    def __init__(
        self, policy: ImagePolicy, auth_headers: Callable[[], dict[str, str]] | None
    ) -> None:
        self.policy = policy
        self._auth_headers = auth_headers
        self._ls_origin = _origin(policy.ls_url) if policy.ls_url else None
        self._allowed = frozenset(h.strip().lower() for h in policy.allowed_hosts if h.strip())
        self._local = threading.local()

    # -- public -----------------------------------------------------------------------------

    def fetch_bytes(self, ref: str) -> bytes:
        """The bytes behind ``ref`` (see the module doc for what is allowed); raises ImageError."""
        if not isinstance(ref, str) or not ref.strip():
            raise ImageError("no image reference")
        ref = ref.strip()
        if ref[:5].lower() == "data:":
            return self._data_uri(ref)
        parts = urllib.parse.urlsplit(ref)
        scheme = parts.scheme.lower()
        if scheme and scheme not in ("http", "https"):
            raise ImageError("unsupported URL scheme", scheme)
        if not scheme and parts.netloc:  # //host/path
            raise ImageError("unsupported URL", "scheme-relative URLs are not fetched")
        is_ls = not scheme or (self._ls_origin is not None and _origin(ref) == self._ls_origin)
        if is_ls and parts.path.rstrip("/") == _LOCAL_FILES_PATH:
            return self._local_file(parts.query)
        if not scheme:
            if not self.policy.ls_url:
                raise ImageError("relative URL but no Label Studio URL configured")
            url = self.policy.ls_url.rstrip("/") + "/" + ref.lstrip("/")
            return self._http(url)
        return self._http(ref)

    def load(self, ref: str) -> Image.Image:
        """Fetch and safely decode ``ref`` into an RGB image; raises ImageError."""
        return decode_image(self.fetch_bytes(ref), self.policy.max_pixels)

    # -- sources ----------------------------------------------------------------------------

    def _data_uri(self, ref: str) -> bytes:
        header, sep, payload = ref.partition(",")
        if not sep:
            raise ImageError("malformed data URI")
        params = [p.strip().lower() for p in header[5:].split(";")]
        if "base64" in params:
            compact = "".join(payload.split())
            if len(compact) * 3 // 4 > self.policy.max_bytes:
                raise ImageError("too large", f"data URI over {self.policy.max_bytes} bytes")
            try:
                data = base64.b64decode(urllib.parse.unquote(compact), validate=True)
            except (binascii.Error, ValueError):
                raise ImageError("malformed data URI", "bad base64") from None
        else:
            data = urllib.parse.unquote_to_bytes(payload)
        if len(data) > self.policy.max_bytes:
            raise ImageError("too large", f"data URI over {self.policy.max_bytes} bytes")
        if not data:
            raise ImageError("empty image")
        return data

    def _local_file(self, query: str) -> bytes:
        root = self.policy.local_files_root
        if root is None:
            raise ImageError("local files are not enabled", "no local files root configured")
        values = urllib.parse.parse_qs(query).get("d")
        if not values or not values[0]:
            raise ImageError("malformed local file URL", "missing ?d=")
        rel = values[0]
        if "\x00" in rel:
            raise ImageError("path outside the local files root")
        root_resolved = Path(root).resolve()
        try:
            target = (root_resolved / rel).resolve(strict=True)
        except FileNotFoundError:
            raise ImageError("not found", rel) from None
        except (OSError, RuntimeError):
            raise ImageError("not readable", rel) from None
        if not target.is_relative_to(root_resolved):
            raise ImageError("path outside the local files root", rel)
        if not target.is_file():
            raise ImageError("not found", rel)
        try:
            size = target.stat().st_size
            if size > self.policy.max_bytes:
                raise ImageError("too large", f"{size} bytes")
            with open(target, "rb") as fh:
                data = fh.read(self.policy.max_bytes + 1)
        except OSError:
            raise ImageError("not readable", rel) from None
        if len(data) > self.policy.max_bytes:
            raise ImageError("too large", f"over {self.policy.max_bytes} bytes")
        return data

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxies from the environment for internal fetches
            self._local.session = session
        return session

    def _check_host(self, url: str) -> bool:
        """True if ``url`` is the Label Studio origin (send credentials), False if an allowed
        foreign host; ImageError otherwise."""
        origin = _origin(url)
        if origin is None:
            raise ImageError("unsupported URL", urllib.parse.urlsplit(url).scheme or url[:40])
        if self._ls_origin is not None and origin == self._ls_origin:
            return True
        _scheme, host, port = origin
        if host in self._allowed or f"{host}:{port}" in self._allowed:
            return False
        raise ImageError("host not allowed", host)

    def _http(self, url: str) -> bytes:
        deadline = time.monotonic() + self.policy.timeout
        for _ in range(_MAX_REDIRECTS + 1):
            with_auth = self._check_host(url)
            headers = {"Accept": "image/*,*/*;q=0.5"}
            if with_auth and self._auth_headers is not None:
                try:
                    headers.update(self._auth_headers())
                except Exception as exc:
                    raise ImageError(
                        "cannot authenticate to Label Studio", str(exc)[:200]
                    ) from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ImageError("timeout")
            try:
                resp = self._session().get(
                    url, headers=headers, stream=True, timeout=remaining, allow_redirects=False
                )
            except requests.Timeout:
                raise ImageError("timeout") from None
            except requests.RequestException as exc:
                raise ImageError("unreachable", exc.__class__.__name__) from None
            with resp:
                if resp.is_redirect:
                    location = resp.headers.get("Location", "")
                    if not location:
                        raise ImageError("bad redirect")
                    url = urllib.parse.urljoin(url, location)
                    try:
                        self._check_host(url)
                    except ImageError as exc:
                        raise ImageError("redirect to a host not allowed", exc.detail) from None
                    continue
                if resp.status_code != 200:
                    raise ImageError(f"HTTP {resp.status_code}")
                return self._read_body(resp, deadline)
        raise ImageError("too many redirects")

    def _read_body(self, resp: requests.Response, deadline: float) -> bytes:
        limit = self.policy.max_bytes
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise ImageError("too large", f"{length} bytes")
        buf = bytearray()
        raw = resp.raw
        try:
            while True:
                # read1: whatever has arrived (up to a chunk), so a trickling server cannot hold
                # us past the deadline by sending a byte just before each socket timeout
                chunk = raw.read1(_CHUNK, decode_content=True)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > limit:
                    raise ImageError("too large", f"over {limit} bytes")
                if time.monotonic() > deadline:
                    raise ImageError("timeout")
        except ImageError:
            raise
        except Exception as exc:  # urllib3 / socket errors while streaming
            if "timed out" in str(exc).lower() or isinstance(exc, TimeoutError):
                raise ImageError("timeout") from None
            raise ImageError("download failed", exc.__class__.__name__) from None
        if not buf:
            raise ImageError("empty image")
        return bytes(buf)
