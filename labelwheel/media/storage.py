"""Cloud-storage references: turn a task's storage URI into Label Studio's own resolve path.

A project that imports its images from cloud storage (Label Studio's "source storage") keeps the
raw object URI in the task data, e.g. ``s3://bucket/cats/1.png``, and that raw URI is what the ML
backend receives in ``/predict`` and in webhooks. Only Label Studio holds the storage's
credentials, and it answers

    GET /tasks/<task id>/resolve/?fileuri=<urlsafe base64 of the URI>     (with the API token)

with a 303 redirect to a presigned URL on the storage host (storage with ``presign`` on), or with
the bytes themselves (``presign`` off: proxy mode). So the backend never needs the storage's
credentials: it reads every cloud image through that path, exactly the one Label Studio's own
``GET /api/tasks?fields=all`` hands out (minus the host).

This module is pure: no I/O. It knows

- the URI schemes of Label Studio's import storages (:data:`STORAGE_SCHEMES`): ``s3`` (Amazon S3
  and S3-compatible servers such as MinIO; also Enterprise's S3 with IAM role), ``gs`` (Google
  Cloud Storage, also with WIF), ``azure-blob`` (Azure Blob Storage) and ``azure-spi`` (Azure Blob
  with a Service Principal, Enterprise). A URI of another non-web scheme of the same shape
  (``<scheme>://<bucket>/<key>``) is also sent to Label Studio, which is the authority on what its
  storages resolve (it answers 404 for a URI no storage of the project can read);
- the Label Studio paths that already serve media (:func:`ls_media_kind`): uploads
  (``/data/upload/...``), local files (``/data/local-files/?d=...``), the resolve/presign paths of
  a task or project (proxy mode), ``/storage-data/uploaded/?filepath=...`` (uploads kept in cloud
  storage) and a project's file proxy (``/projects/<id>/file-proxy/?url=...``).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from dataclasses import dataclass
from typing import Final

__all__ = [
    "STORAGE_SCHEMES",
    "ResolveTarget",
    "decode_fileuri",
    "encode_fileuri",
    "is_storage_uri",
    "ls_media_kind",
    "parse_resolve_path",
    "project_resolve_path",
    "storage_scheme",
    "task_image_ref",
    "task_resolve_path",
]

#: URI schemes of Label Studio's import storages (1.23; ``azure-spi`` is Enterprise's) and what
#: each one is. Label Studio stores ``<scheme>://<bucket or container>/<key>`` in task data.
STORAGE_SCHEMES: Final[dict[str, str]] = {
    "s3": "Amazon S3 or an S3-compatible server (MinIO, Ceph, R2, ...)",
    "gs": "Google Cloud Storage",
    "azure-blob": "Azure Blob Storage",
    "azure-spi": "Azure Blob Storage with a Service Principal (Label Studio Enterprise)",
}

# Schemes of ordinary web or local references: never a storage object.
_NOT_STORAGE: Final = frozenset(
    {"http", "https", "ftp", "ftps", "file", "data", "ws", "wss", "javascript", "mailto", "blob"}
)
# RFC 3986 scheme, then "://", a bucket (no slash, no whitespace) and "/".
_STORAGE_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://([^/\s?#\\]+)/(\S.*)?$", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_TASK_RESOLVE = re.compile(r"^/tasks/([0-9]{1,18})/(resolve|presign)/?$")
_PROJECT_RESOLVE = re.compile(r"^/projects/([0-9]{1,18})/(resolve|presign)/?$")
_FILE_PROXY = re.compile(r"^/projects/([0-9]{1,18})/file-proxy/?$")


def storage_scheme(ref: object) -> str | None:
    """The storage scheme of ``ref`` (lower case) if it is a cloud-storage object URI
    (``s3://bucket/key``, ``gs://...``, ``azure-blob://container/blob`` ...), else None.

    Web and local references (``http(s)``, ``data:``, ``file:``, relative paths) are not storage
    URIs; neither is a bucket without a key, nor anything with control characters.
    """
    if not isinstance(ref, str):
        return None
    text = ref.strip()
    if not text or _CONTROL.search(text):
        return None
    match = _STORAGE_URI.match(text)
    if match is None or not match.group(3):
        return None
    scheme = match.group(1).lower()
    if scheme in _NOT_STORAGE:
        return None
    return scheme


def is_storage_uri(ref: object) -> bool:
    """True if ``ref`` is a cloud-storage object URI (see :func:`storage_scheme`)."""
    return storage_scheme(ref) is not None


def encode_fileuri(uri: str) -> str:
    """The ``fileuri`` query value Label Studio uses: URL-safe base64 of the UTF-8 URI, padded
    (``base64.urlsafe_b64encode``), placed in the query as is."""
    return base64.urlsafe_b64encode(uri.encode("utf-8")).decode("ascii")


def decode_fileuri(value: str) -> str | None:
    """The URI inside a ``fileuri`` value, or None if it is not valid URL-safe base64 of UTF-8.

    Label Studio also accepts a percent-encoded URI there (older clients); this returns None for
    those, and callers keep the value as it is.
    """
    if not isinstance(value, str) or not value:
        return None
    compact = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9_\-]+={0,2}", compact):
        return None
    try:
        raw = base64.urlsafe_b64decode(compact + "=" * (-len(compact) % 4))
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def task_resolve_path(task_id: int, uri: str) -> str:
    """Label Studio's resolve path of a task's storage URI:
    ``/tasks/<task id>/resolve/?fileuri=<urlsafe base64 of uri>``."""
    if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id < 1:
        raise ValueError(f"task id must be a positive integer, not {task_id!r}")
    return f"/tasks/{task_id}/resolve/?fileuri={encode_fileuri(uri.strip())}"


def project_resolve_path(project_id: int, uri: str) -> str:
    """Label Studio's resolve path of a storage URI in a project (when the task is unknown):
    ``/projects/<project id>/resolve/?fileuri=<urlsafe base64 of uri>``."""
    if isinstance(project_id, bool) or not isinstance(project_id, int) or project_id < 1:
        raise ValueError(f"project id must be a positive integer, not {project_id!r}")
    return f"/projects/{project_id}/resolve/?fileuri={encode_fileuri(uri.strip())}"


@dataclass(frozen=True)
class ResolveTarget:
    """A Label Studio resolve (or presign) URL taken apart."""

    kind: str  # "task" or "project"
    id: int
    uri: str  # the storage URI (decoded from fileuri)

    def path(self) -> str:
        """The canonical relative path for this target (``/tasks/<id>/resolve/?fileuri=...``)."""
        if self.kind == "task":
            return task_resolve_path(self.id, self.uri)
        return project_resolve_path(self.id, self.uri)


def parse_resolve_path(path_or_url: str) -> ResolveTarget | None:
    """Take apart ``[http://host]/tasks/<id>/resolve/?fileuri=<base64>`` (also ``presign`` and
    ``/projects/<id>/...``). None if it is not one, or its ``fileuri`` does not decode to a
    storage URI."""
    if not isinstance(path_or_url, str) or _CONTROL.search(path_or_url) or "\\" in path_or_url:
        return None
    parts = urllib.parse.urlsplit(path_or_url.strip())
    if parts.scheme and parts.scheme.lower() not in ("http", "https"):
        return None
    for kind, pattern in (("task", _TASK_RESOLVE), ("project", _PROJECT_RESOLVE)):
        match = pattern.match(parts.path)
        if match is None:
            continue
        values = urllib.parse.parse_qs(parts.query, keep_blank_values=True).get("fileuri")
        if not values or len(values) != 1:
            return None
        uri = decode_fileuri(values[0])
        if uri is None or not is_storage_uri(uri):
            return None
        return ResolveTarget(kind, int(match.group(1)), uri)
    return None


def ls_media_kind(path: str) -> str | None:
    """Which Label Studio media path ``path`` is (a relative path or the path part of a URL on
    Label Studio's host), or None if it is none of them.

    ``"upload"`` (``/data/upload/...``), ``"local-files"`` (``/data/local-files/?d=...``),
    ``"resolve"`` (``/tasks/<id>/resolve/`` or ``/presign/``, and the project forms: proxy mode
    and presign redirects), ``"storage-data"`` (``/storage-data/uploaded/?filepath=...``),
    ``"file-proxy"`` (``/projects/<id>/file-proxy/?url=...``). Paths with ``..`` segments or
    encoded slashes are refused (None).
    """
    if not isinstance(path, str) or _CONTROL.search(path) or "\\" in path:
        return None
    parts = urllib.parse.urlsplit(path)
    if parts.netloc and parts.scheme.lower() not in ("http", "https"):
        return None  # //host/... or another scheme
    p = parts.path
    if not p.startswith("/") or p.startswith("//"):
        return None
    lowered = p.lower()
    if "%2f" in lowered or "%5c" in lowered or "%2e" in lowered:
        return None
    if any(seg in (".", "..") for seg in p.split("/")):
        return None
    if p.startswith("/data/upload/") and len(p) > len("/data/upload/"):
        return "upload"
    if p.rstrip("/") == "/data/local-files":
        return "local-files"
    if _TASK_RESOLVE.match(p) or _PROJECT_RESOLVE.match(p):
        return "resolve"
    if p.rstrip("/") == "/storage-data/uploaded":
        return "storage-data"
    if _FILE_PROXY.match(p):
        return "file-proxy"
    return None


def task_image_ref(ref: str, task_id: object = None, project_id: object = None) -> str:
    """The reference the backend fetches for a task's image value ``ref``.

    - a storage URI (``s3://``, ``gs://``, ``azure-blob://`` ...) becomes the task's resolve path
      (``/tasks/<task id>/resolve/?fileuri=...``), or the project's when only the project id is
      known; with neither it is returned as it is (the fetcher refuses it with a clear reason);
    - Label Studio's own resolve URL for this task on any host (what ``GET /api/tasks?fields=all``
      hands out, with Label Studio's public host name) becomes the same relative path, so the
      backend reads it from its configured Label Studio URL and every form of a task's image has
      one key in the caches;
    - everything else (uploads, local files, proxy URLs, ``data:`` URIs, http URLs) is returned as
      it is (stripped).
    """
    text = ref.strip()
    tid = task_id if isinstance(task_id, int) and not isinstance(task_id, bool) else None
    pid = project_id if isinstance(project_id, int) and not isinstance(project_id, bool) else None
    if is_storage_uri(text):
        if tid is not None and tid > 0:
            return task_resolve_path(tid, text)
        if pid is not None and pid > 0:
            return project_resolve_path(pid, text)
        return text
    if tid is not None and ("/resolve/" in text or "/presign/" in text):
        target = parse_resolve_path(text)
        if target is not None and target.kind == "task" and target.id == tid:
            return target.path()
    return text
