"""Safe image fetching: every source a task's image reference can name, and where credentials go.

A task's image reference can be:

- a ``data:`` URI (base64 or percent-encoded);
- a Label Studio local file (``/data/local-files/?d=photos/cat.png``, relative or on the Label
  Studio origin): read from disk, only below the configured root, never over HTTP; ``..``,
  absolute paths and symlinks that lead outside the root are refused; no root = refused;
- a relative URL (``/data/upload/3/ab12-cat.png``): joined to the Label Studio URL;
- an absolute ``http(s)`` URL on the Label Studio origin (scheme, host and port equal to the
  Label Studio URL's) or on a host of the allowlist (``host`` or ``host:port``).
  Everything else (other hosts, ``file:``, ``s3:`` ...) is refused: no server-side request forgery.

Credentials (Label Studio's ``Authorization`` header) are sent only to the Label Studio origin and
only on its media paths (below the Label Studio URL's own path, if it has one):
``/data/upload/...``, ``/storage-data/uploaded/?filepath=...``,
``/tasks/<id>/resolve/?fileuri=...`` and ``/presign/`` (also the ``/projects/<id>/`` forms),
``/projects/<id>/file-proxy/?url=...`` and ``/data/local-files/?d=...`` (over HTTP only as a
redirect target: a reference of that form is read from disk). A reference on the Label Studio
origin with any other path (``/api/...``, ``/user/...``, a path with ``.``/``..`` segments or
encoded ``/``, ``\\`` or ``.``) is refused rather than fetched without credentials: an image
fetch has no business anywhere else on Label Studio (its pages answer a login redirect or 401
anyway), and refusing keeps "which paths get the token" one simple rule. Allow-listed hosts
never get credentials.

URLs are parsed once, strictly (:func:`labelwheel.media.urls.parse_http_url`: no backslashes,
userinfo, control characters or anything two URL parsers read differently) and the checked URL is
exactly what is connected to and sent.

Redirects (at most 3) are checked hop by hop: a hop to the Label Studio origin is allowed (with
credentials, media paths only) only while the whole chain has stayed on that origin, so a redirect
from a foreign host back to Label Studio is refused; a hop off the origin never carries
credentials and goes only to an allow-listed host, except the hop right after Label Studio's own
``/tasks/<id>/resolve/`` or ``/presign/`` endpoint, which may go to any http(s) host (that is how
Label Studio hands out presigned cloud-storage URLs: the storage's credentials stay in Label
Studio, the signature is in the URL) when ``storage_redirects`` is on; the ML backend turns it off
when its Label Studio URL is only the hostname an unauthenticated ``/setup`` named, so that such
a caller cannot point the fetcher at any internal URL.

One total deadline (``timeout``) covers each fetch: waiting for a connection slot, name
resolution, connecting, TLS, headers, body and every redirect; a server that trickles bytes is cut
off at the deadline. At most ``max_per_host`` fetches run at once against one host (others wait
for a slot, within their deadline), so a slow host holds a bounded number of connections and
fetches to other hosts never queue behind it. Downloads stop past ``max_bytes``. Every failure is an
:class:`~labelwheel.media.errors.ImageError` with a short ``reason`` that can be logged.

Connections are kept alive (:mod:`labelwheel.media.keepalive`): a fetch reuses an idle connection
to the same origin (at most ``max_per_host`` kept per origin), so fetching many images from Label
Studio or a storage host costs one TCP connection and TLS handshake per concurrent fetch, not one
per image. Credentials are per request, never per connection.

HTTP proxies are used as requests and curl use them (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``,
``NO_PROXY``: :mod:`labelwheel.media.proxies`); the rules above apply to the image's URL, whichever
way it is reached, and a proxy is never sent Label Studio's credentials except inside the
requests it forwards (plain ``http://``; an ``https://`` request is tunnelled, unreadable to it).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from labelwheel.media.decode import decode_image
from labelwheel.media.errors import ImageError
from labelwheel.media.keepalive import ConnectionPool
from labelwheel.media.proxies import Proxies
from labelwheel.media.transport import Deadline, http_get
from labelwheel.media.urls import HttpURL, join_url, parse_http_url

__all__ = ["ImageFetcher", "ImagePolicy"]

_MAX_REDIRECTS = 3
_LOCAL_FILES_PATH = "/data/local-files"
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# Label Studio's media paths (below its base path): the only paths that get credentials, each
# with the query parameter it needs (the same list as labelwheel.media.storage.ls_media_kind)
_MEDIA_PATHS: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(r"/data/upload/.+"), None),
    (re.compile(r"/data/local-files/?"), "d"),
    (re.compile(r"/storage-data/uploaded/?"), "filepath"),
    (re.compile(r"/(?:tasks|projects)/\d{1,18}/(?:resolve|presign)/?"), "fileuri"),
    (re.compile(r"/projects/\d{1,18}/file-proxy/?"), "url"),
)
# Label Studio's resolve endpoints: their redirect is a presigned storage URL on any host
_RESOLVER_PATH = re.compile(r"/(?:tasks|projects)/\d{1,18}/(?:resolve|presign)/?")


@dataclass(frozen=True)
class ImagePolicy:
    """Where images may come from, how large they may be, and how long a fetch may take."""

    ls_url: str | None
    local_files_root: Path | None
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    max_bytes: int = 20 * 2**20
    timeout: float = 10.0  # one total deadline per fetch, redirects included
    max_pixels: int = 40_000_000
    max_per_host: int = 4  # concurrent fetches against one host
    # follow Label Studio's resolve/presign redirect to any host (its presigned storage URL);
    # off: only to allow-listed hosts (for a Label Studio URL nobody configured, e.g. /setup's)
    storage_redirects: bool = True

    def __post_init__(self) -> None:
        if self.max_per_host < 1:
            raise ValueError(f"max_per_host must be at least 1, got {self.max_per_host}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")


class ImageFetcher:
    """Fetches image bytes by reference under an :class:`ImagePolicy` (thread-safe)."""

    def __init__(
        self,
        policy: ImagePolicy,
        auth_headers: Callable[[], dict[str, str]] | None,
        proxies: Proxies | None = None,
    ) -> None:
        """``proxies``: the HTTP proxies to fetch through; None reads them from the environment
        (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``...: :mod:`labelwheel.media.proxies`), and
        raises ``ValueError`` naming the variable if one cannot be used."""
        self.policy = policy
        self.proxies = Proxies.from_environment() if proxies is None else proxies
        self._auth_headers = auth_headers
        self._ls: HttpURL | None = None
        self._ls_error: str | None = None
        if policy.ls_url:
            try:
                self._ls = parse_http_url(policy.ls_url.strip().rstrip("/"))
            except ImageError as exc:
                self._ls_error = exc.detail or exc.reason
            else:
                if self._ls.query is not None:
                    self._ls, self._ls_error = None, "it has a query"
        self._ls_base = self._ls.path.rstrip("/") if self._ls is not None else ""
        self._allowed = frozenset(h.strip().lower() for h in policy.allowed_hosts if h.strip())
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()
        self._connections = ConnectionPool(policy.max_per_host)
        self._root: tuple[Path, str] | None = None  # the local files root, and resolved

    # -- public -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the kept-alive connections. Fetches still running finish, on connections closed
        after them; the fetcher can still fetch (without keeping connections)."""
        self._connections.close()

    def fetch_bytes(self, ref: str) -> bytes:
        """The bytes behind ``ref`` (see the module doc for what is allowed); raises ImageError."""
        kind, where = self._route(ref)
        if kind == "data":
            return self._data_uri(where)
        if kind == "local":
            return self._local_file(where)
        return self._http(where)

    def is_local(self, ref: object) -> bool:
        """True when :meth:`fetch_bytes` reads ``ref`` without a network: a ``data:`` URI or a
        Label Studio local-files URL (relative, or on Label Studio's origin) while a local files
        root is set. Such reads are CPU-bound (decoding), so they need no more threads than
        cores. Anything else, and anything malformed, is False."""
        try:
            kind, _ = self._route(ref)
        except (ImageError, ValueError):
            return False
        return kind == "data" or (kind == "local" and self.policy.local_files_root is not None)

    def _route(self, ref: object) -> tuple[str, Any]:
        """How ``ref`` is read: ``("data", the URI)``, ``("local", the local-files query)`` or
        ``("http", the parsed URL)``; raises ImageError for what is never fetched."""
        if not isinstance(ref, str) or not ref.strip():
            raise ImageError("no image reference")
        ref = ref.strip()
        if ref[:5].lower() == "data:":
            return "data", ref
        scheme = _SCHEME.match(ref)
        if scheme is not None:
            if scheme.group(1).lower() not in ("http", "https"):
                raise ImageError("unsupported URL scheme", scheme.group(1).lower()[:20])
            url = parse_http_url(ref)
            if self._is_ls(url) and self._ls_relative(url).rstrip("/") == _LOCAL_FILES_PATH:
                return "local", url.query or ""
            return "http", url
        if ref.startswith("//"):
            raise ImageError("unsupported URL", "scheme-relative URLs are not fetched")
        parts = urllib.parse.urlsplit(ref)
        if "/" + parts.path.lstrip("/").rstrip("/") == _LOCAL_FILES_PATH:
            return "local", parts.query
        return "http", self._ls_join(ref)

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
        if self._root is None or self._root[0] != root:
            self._root = (root, os.path.realpath(root))  # resolved once per root
        root_resolved = self._root[1]
        try:
            target = os.path.realpath(os.path.join(root_resolved, rel), strict=True)
        except FileNotFoundError:
            raise ImageError("not found", rel) from None
        except (OSError, RuntimeError, ValueError):
            raise ImageError("not readable", rel) from None
        if target != root_resolved and not target.startswith(root_resolved.rstrip(os.sep) + os.sep):
            raise ImageError("path outside the local files root", rel)
        try:
            with open(target, "rb") as fh:  # the resolved file itself: no link to follow
                info = os.fstat(fh.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise ImageError("not found", rel)
                if info.st_size > self.policy.max_bytes:
                    raise ImageError("too large", f"{info.st_size} bytes")
                data = fh.read(self.policy.max_bytes + 1)
        except IsADirectoryError:
            raise ImageError("not found", rel) from None
        except OSError:
            raise ImageError("not readable", rel) from None
        if len(data) > self.policy.max_bytes:
            raise ImageError("too large", f"over {self.policy.max_bytes} bytes")
        return data

    # -- Label Studio's origin and paths ----------------------------------------------------

    def _ls_join(self, relative: str) -> HttpURL:
        """A path relative to the Label Studio URL (``/data/upload/...``), parsed strictly."""
        if self._ls is None:
            if self._ls_error is not None:
                raise ImageError("the Label Studio URL is not usable", self._ls_error)
            raise ImageError("relative URL but no Label Studio URL configured")
        return parse_http_url(f"{str(self._ls).rstrip('/')}/{relative.lstrip('/')}")

    def _is_ls(self, url: HttpURL) -> bool:
        return self._ls is not None and url.origin == self._ls.origin

    def _ls_relative(self, url: HttpURL) -> str:
        """``url``'s path below the Label Studio base path ("" if it is not below it)."""
        if not self._ls_base:
            return url.path
        if url.path.startswith(self._ls_base + "/"):
            return url.path[len(self._ls_base) :]
        return ""

    def _is_media(self, url: HttpURL) -> bool:
        """True if ``url`` (on the Label Studio origin) is one of its media paths."""
        path = self._ls_relative(url)
        lowered = path.lower()
        if "%2f" in lowered or "%5c" in lowered or "%2e" in lowered:
            return False  # encoded slashes, backslashes or dots: never a media path
        if any(seg in (".", "..") for seg in path.split("/")):
            return False
        for pattern, key in _MEDIA_PATHS:
            if pattern.fullmatch(path):
                return key is None or bool(urllib.parse.parse_qs(url.query or "").get(key))
        return False

    def _admit(self, url: HttpURL, hop: int, chain_on_ls: bool, after_resolver: bool) -> bool:
        """Whether ``url`` may be fetched: True = with credentials, False = without; else
        ImageError."""
        if self._is_ls(url):
            if not chain_on_ls:
                raise ImageError(
                    "redirect to a host not allowed", "back to Label Studio from another host"
                )
            if not self._is_media(url):
                reason = "not a Label Studio media path" if hop == 0 else "redirect not to media"
                raise ImageError(reason, url.path[:80])
            return True
        if after_resolver and self.policy.storage_redirects:
            return False  # Label Studio's presigned storage URL: any host, never credentials
        if url.host in self._allowed or f"{url.host}:{url.port}" in self._allowed:
            return False
        if after_resolver:
            raise ImageError(
                "redirect to a host not allowed",
                f"{url.host} (storage redirects are followed to any host only from a configured "
                "Label Studio URL)",
            )
        raise ImageError(
            "host not allowed" if hop == 0 else "redirect to a host not allowed", url.host
        )

    # -- HTTP -------------------------------------------------------------------------------

    def _slot(self, host: str) -> threading.BoundedSemaphore:
        with self._slots_lock:
            slot = self._slots.get(host)
            if slot is None:
                slot = self._slots[host] = threading.BoundedSemaphore(self.policy.max_per_host)
            return slot

    def _credentials(self) -> dict[str, str]:
        if self._auth_headers is None:
            return {}
        try:
            return dict(self._auth_headers())
        except Exception as exc:
            raise ImageError("cannot authenticate to Label Studio", str(exc)[:200]) from None

    def _http(self, url: HttpURL) -> bytes:
        deadline = Deadline(self.policy.timeout)
        chain_on_ls = True
        after_resolver = False
        for hop in range(_MAX_REDIRECTS + 1):
            with_auth = self._admit(url, hop, chain_on_ls, after_resolver)
            headers = {"Accept": "image/*,*/*;q=0.5", "User-Agent": "labelwheel"}
            if with_auth:
                headers.update(self._credentials())
            slot = self._slot(url.host)
            if not slot.acquire(timeout=max(0.0, deadline.remaining())):
                raise ImageError("timeout", f"all connections to {url.host} busy")
            proxy = self.proxies.for_url(url)
            try:
                reply = http_get(
                    url, headers, deadline, self.policy.max_bytes, self._connections, proxy
                )
            finally:
                slot.release()
            if reply.location is None:
                if reply.status == 407 and proxy is not None:
                    raise ImageError("unreachable", proxy.refusal(407, "GET"))
                if reply.status != 200:
                    raise ImageError(f"HTTP {reply.status}")
                return reply.body
            after_resolver = with_auth and bool(_RESOLVER_PATH.fullmatch(self._ls_relative(url)))
            chain_on_ls = chain_on_ls and self._is_ls(url)
            url = join_url(url, reply.location)
        raise ImageError("too many redirects")
