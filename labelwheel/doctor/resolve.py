"""How ``labelwheel doctor`` fetches one sample image: exactly as the backend does.

The backend turns a task's image value into the reference it fetches with
:func:`labelwheel.media.storage.task_image_ref` (a cloud storage URI such as ``s3://bucket/key``
becomes Label Studio's ``/tasks/<task id>/resolve/?fileuri=...`` path, read with the token; the
storage's credentials stay in Label Studio) and fetches it with
:class:`labelwheel.media.ImageFetcher` under its policy. The doctor builds the same policy from
the same settings (Label Studio URL and token, ``LABELWHEEL_LOCAL_FILES_ROOT``,
``LABELWHEEL_ALLOWED_HOSTS``, size and time limits), so a sample that passes here is one the
backend can read.
"""

from __future__ import annotations

from typing import Any

from labelwheel.doctor.checks import Doctor

__all__ = ["fetch_image_bytes", "make_fetcher"]


def make_fetcher(doc: Doctor) -> Any:
    """The backend's :class:`~labelwheel.media.ImageFetcher` under the doctor's options."""
    from labelwheel.media import ImageFetcher, ImagePolicy

    opts = doc.options
    policy = ImagePolicy(
        ls_url=doc.ls_url,
        local_files_root=opts.local_files_root,
        allowed_hosts=opts.allowed_hosts,
        max_bytes=opts.max_image_bytes,
        timeout=opts.timeout,
        max_pixels=opts.max_image_pixels,
    )
    return ImageFetcher(policy, doc.client.auth_headers if doc.client is not None else None)


def fetch_image_bytes(doc: Doctor, fetcher: Any, task_id: int, ref: str) -> bytes:
    """The bytes of one task's image, fetched as the backend fetches it; raises ImageError."""
    from labelwheel.media.storage import task_image_ref

    return bytes(fetcher.fetch_bytes(task_image_ref(ref, task_id, doc.options.project_id)))
