"""Where incoming images come from: a local folder or an S3-compatible prefix.

A source lists its items (key, size, version) without reading them, and reads one item's bytes
on demand, size-capped; every read failure is an :class:`~labelwheel.media.ImageError` with a
short reason. ``version`` (the file's mtime and size, or the object's ETag) lets the ingest
ledger recognise an item it has already read without reading it again.

S3-compatible stores (AWS S3, MinIO, Ceph, moto, ...) are reached with boto3; the endpoint comes
from ``endpoint_url`` (``--s3-endpoint-url`` / ``LABELWHEEL_S3_ENDPOINT_URL``) or from boto3's
own ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``; credentials and region from the usual
``AWS_*`` variables or profile.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from labelwheel.media import ImageError, read_file
from labelwheel.pool import IMAGE_EXTENSIONS, list_images

__all__ = [
    "FolderSource",
    "S3Source",
    "Source",
    "SourceItem",
    "open_source",
]

DEFAULT_MAX_BYTES = 20 * 2**20


@dataclass(frozen=True)
class SourceItem:
    """One listed item: its key in the source, size in bytes and a version stamp."""

    key: str
    size: int
    version: str

    @property
    def name(self) -> str:
        """The file name part of the key (what the upload to Label Studio is called)."""
        return PurePosixPath(self.key).name or "image"


class Source(Protocol):
    """A listing of image items and a reader of their bytes."""

    description: str

    def items(self) -> Iterator[SourceItem]:
        """The source's image items, in a stable order."""
        ...

    def read(self, item: SourceItem) -> bytes:
        """The item's bytes; raises ImageError."""
        ...

    def local_path(self, item: SourceItem, scratch: Path) -> Path:
        """A local file holding the item's bytes (written under ``scratch`` if need be)."""
        ...


def _is_image_key(key: str) -> bool:
    path = PurePosixPath(key)
    if any(part.startswith(".") for part in path.parts):
        return False
    return path.suffix.lower() in IMAGE_EXTENSIONS


class FolderSource:
    """Image files under a local folder (recursive; hidden files skipped)."""

    def __init__(self, root: Path | str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise ValueError(f"source {root} is not a folder (nor an s3:// URI)")
        self.max_bytes = int(max_bytes)
        self.description = f"folder {self.root}"

    def items(self) -> Iterator[SourceItem]:
        """Image files (by extension), sorted by relative path."""
        for path in list_images(self.root):
            try:
                st = path.stat()
            except OSError:
                continue
            yield SourceItem(
                path.relative_to(self.root).as_posix(),
                int(st.st_size),
                f"{st.st_mtime_ns}:{st.st_size}",
            )

    def read(self, item: SourceItem) -> bytes:
        """The file's bytes (size-capped by the media layer)."""
        return read_file(self.root / item.key, self.max_bytes)

    def local_path(self, item: SourceItem, scratch: Path) -> Path:
        """The file itself."""
        return self.root / item.key


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix); raises ValueError for anything else."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri}")
    rest = uri[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri} (use s3://bucket/prefix)")
    return bucket, prefix


class S3Source:
    """Image objects under ``s3://bucket/prefix`` on an S3-compatible endpoint (boto3)."""

    def __init__(
        self,
        uri: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = 30.0,
    ) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - boto3 is a dependency
            raise ValueError("s3:// sources need boto3: pip install boto3") from exc
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.max_bytes = int(max_bytes)
        self.description = f"s3://{self.bucket}/{self.prefix}"
        endpoint = endpoint_url or os.environ.get("LABELWHEEL_S3_ENDPOINT_URL") or None
        config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=16,
        )
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1",
            config=config,
        )

    def items(self) -> Iterator[SourceItem]:
        """Image objects (by extension) under the prefix, in key order (S3 lists sorted)."""
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents") or []:
                    key = str(obj["Key"])
                    rel = key[len(self.prefix) :].lstrip("/") if self.prefix else key
                    if key.endswith("/") or not _is_image_key(rel):
                        continue
                    etag = str(obj.get("ETag") or "").strip('"')
                    yield SourceItem(key, int(obj.get("Size") or 0), f"{etag}:{obj.get('Size')}")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise ValueError(f"cannot list {self.description}: {code}") from None
        except BotoCoreError as exc:
            raise ValueError(f"cannot list {self.description}: {exc}") from None

    def read(self, item: SourceItem) -> bytes:
        """The object's bytes, refusing objects over ``max_bytes``."""
        from botocore.exceptions import BotoCoreError, ClientError

        if item.size > self.max_bytes:
            raise ImageError("too large", f"{item.size} bytes")
        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=item.key)
            body = obj["Body"]
            try:
                data = bytes(body.read(self.max_bytes + 1))
            finally:
                body.close()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "error"))
            if code in ("NoSuchKey", "404"):
                raise ImageError("not found", item.key) from None
            raise ImageError("not readable", code) from None
        except BotoCoreError as exc:
            raise ImageError("not readable", exc.__class__.__name__) from None
        if len(data) > self.max_bytes:
            raise ImageError("too large", f"over {self.max_bytes} bytes")
        if not data:
            raise ImageError("empty image")
        return data

    def local_path(self, item: SourceItem, scratch: Path) -> Path:
        """Download the object into ``scratch`` (one sub-folder per item keeps names)."""
        data = self.read(item)
        folder = Path(tempfile.mkdtemp(dir=scratch))
        path = folder / item.name
        path.write_bytes(data)
        return path


def open_source(
    spec: str, *, endpoint_url: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> FolderSource | S3Source:
    """A folder path or ``s3://bucket/prefix`` as a source; raises ValueError."""
    if spec.startswith("s3://"):
        return S3Source(spec, endpoint_url=endpoint_url, max_bytes=max_bytes)
    if "://" in spec:
        raise ValueError(f"unsupported source {spec!r}: use a folder or s3://bucket/prefix")
    return FolderSource(spec, max_bytes=max_bytes)


def clear_scratch(scratch: Path) -> None:
    """Remove a scratch folder's contents (downloads made for an upload)."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True, exist_ok=True)
