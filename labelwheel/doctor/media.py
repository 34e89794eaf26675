"""The media checks of ``labelwheel doctor``: for each storage of the project and each URL form
found in a sample of its tasks, one image fetched end to end and decoded.

The tasks are read raw (``resolve_uri=false``): the values the backend receives in ``/predict``.
Each sample is fetched as the backend fetches it (see :mod:`labelwheel.doctor.resolve`): cloud
storage URIs through Label Studio's resolve path, everything else through the backend's
:class:`~labelwheel.media.ImageFetcher` under the backend's policy.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from labelwheel.doctor.checks import Doctor
from labelwheel.doctor.report import FAIL, PASS, SKIP, WARN, Check
from labelwheel.ls_api import LabelStudioError

__all__ = ["FORMS", "STORAGE_TYPE_SCHEMES", "check_media", "classify_ref", "sample_tasks"]

# URL form -> how a person calls it (storage URI schemes are named by scheme)
FORMS = {
    "upload": "uploaded files (/data/upload/...)",
    "local-files": "local files (/data/local-files/?d=...)",
    "data-uri": "inline data: URIs",
    "http": "http(s) URLs on other hosts",
    "resolve": "Label Studio resolve URLs (/tasks/<id>/resolve/...)",
    "storage-data": "Label Studio storage-data URLs (/storage-data/uploaded/...)",
    "file-proxy": "Label Studio file-proxy URLs (/projects/<id>/file-proxy/...)",
    "label-studio": "other Label Studio URLs",
    "s3": "S3 URIs (s3://...)",
    "gs": "Google Cloud Storage URIs (gs://...)",
    "azure-blob": "Azure Blob URIs (azure-blob://...)",
    "azure-spi": "Azure Blob (service principal) URIs (azure-spi://...)",
    "other": "other references",
}
# Label Studio's storage "type" -> the URI scheme its tasks hold
STORAGE_TYPE_SCHEMES = {
    "s3": "s3",
    "gcs": "gs",
    "azure_blob": "azure-blob",
    "azure_spi": "azure-spi",
}
_STORAGE_TITLES = {
    "s3": "S3",
    "gcs": "Google Cloud Storage",
    "azure_blob": "Azure Blob",
    "azure_spi": "Azure Blob",
    "redis": "Redis",
    "localfiles": "Local files",
}


def classify_ref(ref: str, ls_url: str) -> str:
    """The URL form of an image reference (a key of :data:`FORMS`, or a storage URI scheme)."""
    from labelwheel.media.storage import ls_media_kind, storage_scheme

    ref = ref.strip()
    if ref[:5].lower() == "data:":
        return "data-uri"
    scheme = storage_scheme(ref)
    if scheme is not None:
        return scheme
    parts = urllib.parse.urlsplit(ref)
    web = parts.scheme.lower()
    if web in ("http", "https"):
        ls = urllib.parse.urlsplit(ls_url)
        if (web, parts.netloc.lower()) != (ls.scheme.lower(), ls.netloc.lower()):
            return "http"
    elif web or parts.netloc:
        return "other"
    kind = ls_media_kind(ref)
    if kind is not None:
        return kind
    return "label-studio" if parts.path.startswith("/") else "other"


@dataclass
class Sample:
    """One task's image reference and its URL form."""

    task_id: int
    ref: str
    form: str


def sample_tasks(doc: Doctor, data_key: str) -> Iterator[Sample]:
    """Up to ``options.sample_tasks`` tasks with a string under ``data_key``, raw (unresolved)."""
    assert doc.client is not None
    limit = doc.options.sample_tasks
    seen, page = 0, 1
    while seen < limit:
        page_size = min(100, limit)
        params: dict[str, Any] = {
            "project": doc.options.project_id,
            "page": page,
            "page_size": page_size,
            "resolve_uri": "false",
        }
        try:
            body = doc.client.request("GET", "/api/tasks", params=params).json()
        except LabelStudioError as exc:
            if exc.status == 404 and page > 1:  # past the last page
                return
            raise
        tasks = body.get("tasks", []) if isinstance(body, dict) else list(body)
        for task in tasks:
            seen += 1
            ref = (task.get("data") or {}).get(data_key)
            if isinstance(ref, str) and ref.strip():
                yield Sample(int(task["id"]), ref.strip(), classify_ref(ref, doc.ls_url))
            if seen >= limit:
                return
        if len(tasks) < page_size:
            return
        page += 1


def _storage_matches(storage: dict[str, Any], sample: Sample) -> bool:
    """True if the sample's URI is one this storage serves (Label Studio matches the same way:
    scheme and bucket, or the local path)."""
    kind = str(storage.get("type", ""))
    if kind == "localfiles":
        if sample.form != "local-files":
            return False
        query = urllib.parse.urlsplit(sample.ref).query
        rel = (urllib.parse.parse_qs(query).get("d") or [""])[0].strip("/")
        root = str(storage.get("path") or "").rstrip("/")
        parts = rel.split("/")[:-1]  # folders of the file, relative to the document root
        # the storage path is <document root>/<some leading folders of rel>
        return any(root.endswith("/" + "/".join(parts[:k])) for k in range(1, len(parts) + 1))
    scheme = STORAGE_TYPE_SCHEMES.get(kind)
    if scheme is None:
        return False
    uri = _raw_uri(sample)
    bucket = str(storage.get("bucket") or storage.get("container") or "")
    prefix = str(storage.get("prefix") or "").lstrip("/")
    return bool(bucket) and uri.startswith(f"{scheme}://{bucket}/{prefix}")


def _raw_uri(sample: Sample) -> str:
    """The storage URI behind a sample (decoded from a resolve URL's ``fileuri``)."""
    if sample.form != "resolve":
        return sample.ref
    from labelwheel.media.storage import parse_resolve_path

    target = parse_resolve_path(sample.ref)
    return target.uri if target is not None else sample.ref


def _describe_storage(storage: dict[str, Any]) -> str:
    kind = str(storage.get("type", "?"))
    where = storage.get("path") or (
        f"{storage.get('bucket') or storage.get('container') or '?'}/"
        f"{(storage.get('prefix') or '').lstrip('/')}"
    )
    title = storage.get("title") or _STORAGE_TITLES.get(kind, kind)
    return f"{title!s} ({_STORAGE_TITLES.get(kind, kind)} {where})"


def _fix_for(form: str, reason: str, storage_kind: str | None = None) -> str:
    """What to do about a failed fetch, by URL form and reason."""
    low = reason.lower()
    if form == "local-files":
        if "not enabled" in low:
            return (
                "set LABELWHEEL_LOCAL_FILES_ROOT (here and for `labelwheel serve`) to Label "
                "Studio's LOCAL_FILES_DOCUMENT_ROOT: the backend reads local files from disk"
            )
        return (
            "the file is not under LABELWHEEL_LOCAL_FILES_ROOT: it must equal Label Studio's "
            "LOCAL_FILES_DOCUMENT_ROOT, and the storage's directory must still exist (re-create "
            "it, or fix the storage's path and sync it again)"
        )
    if form == "upload":
        if "401" in low or "403" in low or "authenticate" in low:
            return "check LABEL_STUDIO_API_KEY (see the token check)"
        return (
            "Label Studio cannot serve this uploaded file (1.23 answers HTTP 500 when the file is "
            "gone from its media/upload directory): restore Label Studio's data directory or "
            "import the file again"
        )
    if form == "http":
        if "not allowed" in low:
            return (
                "add the image host to LABELWHEEL_ALLOWED_HOSTS (comma-separated host names) "
                "for `labelwheel serve` and here"
            )
        return "check that the image URL answers from the backend's machine"
    if form == "data-uri":
        return "the task's data: URI is not a valid image: import the image again"
    if form == "label-studio":
        return (
            "the backend reads only Label Studio's media paths (/data/upload/, "
            "/data/local-files/, /tasks/<id>/resolve/ ...): point the task's data at one of them"
        )
    schemes = set(STORAGE_TYPE_SCHEMES.values())
    if form in schemes or form == "resolve" or (storage_kind or "") in STORAGE_TYPE_SCHEMES:
        by_scheme = {v: k for k, v in STORAGE_TYPE_SCHEMES.items()}
        kind = _STORAGE_TITLES.get(storage_kind or by_scheme.get(form, ""), "cloud")
        article = "an" if kind[0] in "AEIOS" else "a"
        return (
            f"connect {article} {kind} storage to the project whose bucket and credentials can "
            "read this object (Label Studio > project Settings > Cloud Storage > Check "
            "connection), and that the object is still in the bucket (HTTP 403/404 from the "
            "storage host: it was deleted or moved; sync the storage again); the backend reads "
            "it through Label Studio, never with the storage's credentials"
        )
    if "not an image" in low or "decode" in low:
        return "the file is not an image the backend can decode"
    return "check that Label Studio serves this reference to the token's user"


@dataclass
class _Outcome:
    ok: bool
    message: str
    details: dict[str, Any]


def _try_sample(doc: Doctor, fetcher: Any, sample: Sample) -> _Outcome:
    from labelwheel.doctor.resolve import fetch_image_bytes
    from labelwheel.media import ImageError, decode_image

    details: dict[str, Any] = {"task": sample.task_id, "ref": _shorten(sample.ref)}
    try:
        data = fetch_image_bytes(doc, fetcher, sample.task_id, sample.ref)
        image = decode_image(data, doc.options.max_image_pixels)
    except ImageError as exc:
        details["reason"] = str(exc)
        return _Outcome(False, f"task {sample.task_id}: {exc}", details)
    details.update(bytes=len(data), width=image.width, height=image.height)
    return _Outcome(
        True,
        f"task {sample.task_id}: fetched {len(data)} bytes, decoded {image.width}x{image.height}",
        details,
    )


def _shorten(ref: str, n: int = 120) -> str:
    return ref if len(ref) <= n else ref[: n - 3] + "..."


def _list_storages(doc: Doctor) -> list[dict[str, Any]]:
    assert doc.client is not None
    body = doc.client.request(
        "GET", "/api/storages/", params={"project": doc.options.project_id}
    ).json()
    return [s for s in body if isinstance(s, dict)] if isinstance(body, list) else []


def check_media(doc: Doctor) -> list[Check]:
    """One check per import storage, then one per URL form found in the sampled tasks."""
    if doc.client is None or doc.project is None:
        return [Check("media", "images", SKIP, "not checked: the project could not be read")]
    if doc.config is None:
        return [Check("media", "images", SKIP, "not checked: the label config is not servable")]
    checks: list[Check] = []
    try:
        storages = _list_storages(doc)
    except (LabelStudioError, ValueError) as exc:
        storages = []
        checks.append(
            Check("storages", "storages", WARN, f"cannot list the project's storages: {exc}")
        )
    try:
        samples = list(sample_tasks(doc, doc.config.data_key))
    except LabelStudioError as exc:
        return [*checks, Check("media", "images", FAIL, f"cannot read the tasks: {exc}")]
    from labelwheel.doctor.resolve import make_fetcher

    try:
        fetcher = make_fetcher(doc)
    except ValueError as exc:  # a proxy variable the fetcher cannot use
        fix = "set it to an http://[user:password@]host:port proxy, or unset it"
        return [*checks, Check("proxy", "proxy", FAIL, str(exc), fix=fix)]
    if fetcher.proxies:
        checks.append(Check("proxy", "proxy", PASS, f"image fetches use {fetcher.proxies!r}"))
    for storage in storages:
        checks.append(_check_storage(doc, fetcher, storage, samples))
    by_form: dict[str, list[Sample]] = {}
    for s in samples:
        by_form.setdefault(s.form, []).append(s)
    if not samples:
        checks.append(
            Check(
                "media",
                "images",
                WARN,
                f"no task with an image under ${doc.config.data_key} among the first "
                f"{doc.options.sample_tasks} tasks",
                fix="import tasks (or sync the project's storage) whose data has the key "
                f"{doc.config.data_key!r}, as the label config's <Image value=...> says",
            )
        )
    for form, group in by_form.items():
        checks.append(_check_form(doc, fetcher, form, group))
    return checks


def _check_storage(
    doc: Doctor, fetcher: Any, storage: dict[str, Any], samples: list[Sample]
) -> Check:
    kind = str(storage.get("type", "?"))
    name = f"storage:{kind}:{storage.get('id')}"
    title = f"storage {storage.get('id')}: {_describe_storage(storage)}"
    details: dict[str, Any] = {
        "id": storage.get("id"),
        "type": kind,
        "status": storage.get("status"),
        "last_sync_count": storage.get("last_sync_count"),
    }
    status = str(storage.get("status") or "")
    if status == "failed":
        trace = str(storage.get("traceback") or "").strip().splitlines()
        details["error"] = trace[-1] if trace else None
        return Check(
            name,
            title,
            FAIL,
            "its last sync failed" + (f": {trace[-1][:300]}" if trace else ""),
            fix="open the storage in Label Studio (Settings > Cloud Storage), check the "
            "connection and sync it again",
            details=details,
        )
    mine = [s for s in samples if _storage_matches(storage, s)]
    if not mine:
        return Check(
            name,
            title,
            WARN,
            f"no task of this storage among the {len(samples)} tasks sampled "
            f"(sync status {status or 'unknown'})",
            fix="sync the storage in Label Studio (Settings > Cloud Storage > Sync), with "
            "'Treat every bucket object as a source file' for images",
            details=details,
        )
    outcome = _try_sample(doc, fetcher, mine[0])
    details.update(outcome.details)
    if outcome.ok:
        return Check(name, title, PASS, outcome.message, details=details)
    return Check(
        name,
        title,
        FAIL,
        outcome.message,
        fix=_fix_for(mine[0].form, outcome.message, kind),
        details=details,
    )


def _check_form(doc: Doctor, fetcher: Any, form: str, group: list[Sample]) -> Check:
    label = FORMS.get(form, f"storage URIs ({form}://...)")
    name, title = f"media:{form}", f"images: {label}"
    outcome = _try_sample(doc, fetcher, group[0])
    details = {"form": form, "tasks_sampled": len(group), **outcome.details}
    message = f"{outcome.message} ({len(group)} sampled tasks use this form)"
    if outcome.ok:
        return Check(name, title, PASS, message, details=details)
    return Check(name, title, FAIL, message, fix=_fix_for(form, outcome.message), details=details)
