"""Optional: read S3 objects directly with the user's own credentials instead of through Label
Studio.

By default every ``s3://`` image is read through Label Studio's resolve endpoint (see
:mod:`labelwheel.media.storage`): the storage's credentials stay in Label Studio. A user who
prefers it (Label Studio's presigned URLs unreachable from the backend's network, or fewer hops)
names the buckets the backend may read itself; objects of those buckets are then read with boto3
and its usual credential chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
an instance or pod role), from AWS or any S3-compatible endpoint (MinIO, Ceph, R2...). Buckets not
named still go through Label Studio, so a task cannot make the backend read a bucket it was not
told about. boto3 is imported only when the option is on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from PIL import Image

from labelwheel.media.decode import decode_image
from labelwheel.media.errors import ImageError
from labelwheel.media.storage import parse_resolve_path, storage_scheme

__all__ = ["DirectS3Fetcher", "S3DirectReader", "boto3_available"]


def boto3_available() -> bool:
    """True if boto3 can be imported (the direct-S3 option needs it)."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        return False
    return True


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.strip().split("://", 1)[1].partition("/")
    return bucket, key


class S3DirectReader:
    """Reads ``s3://bucket/key`` objects of the named buckets with boto3 (thread-safe)."""

    def __init__(
        self,
        buckets: Iterable[str],
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        max_bytes: int = 20 * 2**20,
        timeout: float = 10.0,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.buckets = frozenset(b.strip() for b in buckets if b.strip())
        self.endpoint_url = endpoint_url
        self.region = region
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._factory = client_factory
        self._local = threading.local()

    def s3_uri(self, ref: str) -> str | None:
        """The ``s3://`` URI behind ``ref`` if this reader reads it directly: a raw URI or Label
        Studio's resolve path of one, in one of the named buckets. None otherwise."""
        uri: str | None = None
        if storage_scheme(ref) == "s3":
            uri = ref.strip()
        else:
            target = parse_resolve_path(ref) if isinstance(ref, str) else None
            if target is not None and storage_scheme(target.uri) == "s3":
                uri = target.uri
        if uri is None:
            return None
        bucket, key = _split(uri)
        return uri if bucket in self.buckets and key else None

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self._factory is not None:
                client = self._factory()
            else:
                import boto3
                from botocore.config import Config

                client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    region_name=self.region,
                    config=Config(
                        connect_timeout=self.timeout,
                        read_timeout=self.timeout,
                        retries={"max_attempts": 2},
                    ),
                )
            self._local.client = client
        return client

    def read(self, uri: str) -> bytes:
        """The object's bytes (at most ``max_bytes``); raises ImageError with a short reason."""
        bucket, key = _split(uri)
        if bucket not in self.buckets:
            raise ImageError("bucket not read directly", bucket)
        try:
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError:  # pragma: no cover - boto3 is checked at start-up
            raise ImageError("direct S3 reading needs boto3 (pip install boto3)") from None
        try:
            obj = self._client().get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "error"))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ImageError("not found", uri) from None
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ImageError("S3 access denied", f"{code} for {uri}") from None
            raise ImageError("S3 error", f"{code} for {uri}") from None
        except BotoCoreError as exc:
            raise ImageError("S3 unreachable", exc.__class__.__name__) from None
        body = obj["Body"]
        try:
            length = obj.get("ContentLength")
            if isinstance(length, int) and length > self.max_bytes:
                raise ImageError("too large", f"{length} bytes")
            data = body.read(self.max_bytes + 1)
        except ImageError:
            raise
        except Exception as exc:  # botocore/urllib3 errors while streaming
            raise ImageError("download failed", exc.__class__.__name__) from None
        finally:
            body.close()
        if len(data) > self.max_bytes:
            raise ImageError("too large", f"over {self.max_bytes} bytes")
        if not data:
            raise ImageError("empty image")
        return data


class DirectS3Fetcher:
    """An image fetcher that reads the objects of :class:`S3DirectReader`'s buckets directly
    and hands every other reference to the wrapped fetcher (``fetch_bytes``/``load``)."""

    def __init__(self, fetcher: Any, reader: S3DirectReader) -> None:
        self.fetcher = fetcher
        self.reader = reader
        self.policy = fetcher.policy

    def fetch_bytes(self, ref: str) -> bytes:
        """The bytes behind ``ref``; raises ImageError."""
        uri = self.reader.s3_uri(ref) if isinstance(ref, str) else None
        if uri is not None:
            return self.reader.read(uri)
        data: bytes = self.fetcher.fetch_bytes(ref)
        return data

    def load(self, ref: str) -> Image.Image:
        """Fetch and safely decode ``ref`` into an RGB image; raises ImageError."""
        return decode_image(self.fetch_bytes(ref), self.policy.max_pixels)

    def __getattr__(self, name: str) -> Any:
        # anything else the wrapped fetcher offers (it reads all non-direct references)
        if name == "fetcher":
            raise AttributeError(name)
        return getattr(self.fetcher, name)
