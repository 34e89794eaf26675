"""What ``labelwheel embed`` reads: a folder, an ``s3://`` prefix or a Label Studio project.

An :class:`EmbedSource` is a small picklable description: the driver lists its image references
(:meth:`EmbedSource.references`) and every worker, in-process or a Ray actor on another node,
builds its own reader from it (:meth:`EmbedSource.reader`). Listing and reading are the ingest
sources' (:mod:`labelwheel.ingest.sources`) and the pool loader's
(:func:`labelwheel.pool.sources.project_reader`), not copies of them.

References are what the backend would see: an absolute file path for a folder,
``s3://bucket/key`` for an object, the task's image URL (cloud URIs through Label Studio's
resolve path) for a project, so the store's reference → hash map serves the backend directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labelwheel.media import ImageError

__all__ = ["EmbedSource"]

Reader = Callable[[str], bytes]


@dataclass(frozen=True)
class EmbedSource:
    """A folder path, an ``s3://bucket/prefix`` URI or a Label Studio project (``project``)."""

    spec: str
    project: int | None = None
    url: str | None = None
    api_key: str | None = None
    endpoint_url: str | None = None

    @property
    def description(self) -> str:
        """For messages."""
        return f"Label Studio project {self.project}" if self.project is not None else self.spec

    @property
    def local(self) -> bool:
        """Whether its reads touch only local disk (a folder): then decoding, not waiting, is
        the work (see :func:`labelwheel.features.local_read_threads`)."""
        return self.project is None and "://" not in self.spec

    def references(self) -> list[str]:
        """Every image reference, in a stable order; raises ValueError for a bad source."""
        if self.project is not None:
            return self._project_references()
        from labelwheel.ingest.sources import S3Source, open_source

        source = open_source(self.spec, endpoint_url=self.endpoint_url)
        if isinstance(source, S3Source):
            return [f"s3://{source.bucket}/{item.key}" for item in source.items()]
        root = source.root.resolve()
        return [str(root / item.key) for item in source.items()]

    def reader(self) -> Reader:
        """A function reading one reference's bytes (raises ImageError), built where it runs."""
        if self.project is not None:
            from labelwheel.pool.sources import project_reader

            return project_reader(self._client())
        from labelwheel.ingest.sources import S3Source, SourceItem, open_source

        source = open_source(self.spec, endpoint_url=self.endpoint_url)
        if isinstance(source, S3Source):
            head = f"s3://{source.bucket}/"

            def read_object(ref: str) -> bytes:
                if not ref.startswith(head):
                    raise ImageError("not in this source", ref)
                return source.read(SourceItem(ref[len(head) :], 0, ""))

            return read_object
        root = source.root.resolve()

        def read_file(ref: str) -> bytes:
            try:
                key = Path(ref).relative_to(root).as_posix()
            except ValueError:
                raise ImageError("not in this source", ref) from None
            return source.read(SourceItem(key, 0, ""))

        return read_file

    def _client(self) -> object:
        from labelwheel.ls_api import LabelStudioClient

        if not self.url or not self.api_key:
            raise ValueError("a Label Studio project needs --url and --api-key")
        return LabelStudioClient(self.url, self.api_key, timeout=120)

    def _project_references(self) -> list[str]:
        from labelwheel.label_config import parse_classification_config
        from labelwheel.media.storage import task_image_ref
        from labelwheel.pool.sources import get_project_or_fail

        assert self.project is not None
        client: object = self._client()
        project = get_project_or_fail(client, self.project)
        config = parse_classification_config(project.get("label_config") or "")
        refs: list[str] = []
        for task in client.iter_tasks(self.project, fields="all"):  # type: ignore[attr-defined]
            ref = (task.get("data") or {}).get(config.data_key)
            if ref is not None and str(ref):
                refs.append(task_image_ref(str(ref), task.get("id"), self.project))
        if not refs:
            raise ValueError(f"project {self.project} has no tasks with an image")
        return refs
