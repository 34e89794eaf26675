"""Which references the fetcher reads without a network (``ImageFetcher.is_local``): they decide
how many threads a call reads with, so a reference called local must be read from disk or
memory, and every other one must not be."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from labelwheel.media import ImageError, ImageFetcher, ImagePolicy

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJRU5ErkJggg=="
)
LS = "http://127.0.0.1:9"  # nothing listens: a network read would fail at once


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "a.png").write_bytes(PNG)
    return tmp_path


def _fetcher(root: Path | None, ls: str | None = LS) -> ImageFetcher:
    return ImageFetcher(ImagePolicy(ls, root, timeout=2.0), lambda: {})


LOCAL = [
    "/data/local-files/?d=set/a.png",
    "data/local-files?d=set/a.png",
    "  /data/local-files/?d=set%2Fa.png",
    f"{LS}/data/local-files/?d=set/a.png",
    "data:image/png;base64," + base64.b64encode(PNG).decode(),
    "DATA:image/png;base64," + base64.b64encode(PNG).decode(),
]
NOT_LOCAL = [
    "/data/upload/1/a.png",
    "http://elsewhere.example/data/local-files/?d=set/a.png",  # another origin: a network read
    f"{LS}/data/upload/1/a.png",
    "s3://bucket/a.png",
    "//elsewhere.example/data/local-files/?d=set/a.png",
    "ftp://x/a.png",
    "",
    None,
    42,
]


@pytest.mark.parametrize("ref", LOCAL)
def test_local_references_are_read_without_a_network(root: Path, ref: str) -> None:
    fetcher = _fetcher(root)
    assert fetcher.is_local(ref)
    assert fetcher.fetch_bytes(ref) == PNG  # Label Studio's port is closed: read from disk


@pytest.mark.parametrize("ref", NOT_LOCAL)
def test_other_references_are_not_local(root: Path, ref: object) -> None:
    assert not _fetcher(root).is_local(ref)


def test_without_a_local_files_root_only_data_uris_are_local(root: Path) -> None:
    fetcher = _fetcher(None)
    assert not fetcher.is_local("/data/local-files/?d=set/a.png")
    with pytest.raises(ImageError):
        fetcher.fetch_bytes("/data/local-files/?d=set/a.png")
    assert fetcher.is_local(LOCAL[4])


def test_absolute_local_files_urls_need_label_studios_origin(root: Path) -> None:
    assert not _fetcher(root, ls=None).is_local(f"{LS}/data/local-files/?d=set/a.png")
    assert _fetcher(root, ls=None).is_local("/data/local-files/?d=set/a.png")
