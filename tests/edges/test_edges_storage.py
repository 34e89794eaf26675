"""Cloud-storage references (``labelwheel.media.storage``): schemes, Label Studio's resolve path,
and the media paths Label Studio serves. Pure functions; the end-to-end test
``tests/e2e/test_e2e_s3_storage.py`` checks the same forms against a real Label Studio."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labelwheel.media.storage import (
    STORAGE_SCHEMES,
    ResolveTarget,
    decode_fileuri,
    encode_fileuri,
    is_storage_uri,
    ls_media_kind,
    parse_resolve_path,
    project_resolve_path,
    storage_scheme,
    task_image_ref,
    task_resolve_path,
)


@pytest.mark.parametrize(
    ("ref", "scheme"),
    [
        ("s3://bucket/cats/1.png", "s3"),
        ("S3://bucket/cats/1.png", "s3"),
        ("  s3://bucket/a b/ü.png  ", "s3"),
        ("gs://my-bucket/dir/img.jpg", "gs"),
        ("azure-blob://container/path/img.jpeg", "azure-blob"),
        ("azure-spi://container/img.png", "azure-spi"),
        ("r2x://bucket/other-connector.png", "r2x"),  # a scheme LS may know: LS decides
    ],
)
def test_storage_uris_are_recognised(ref: str, scheme: str) -> None:
    assert storage_scheme(ref) == scheme
    assert is_storage_uri(ref)


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "   ",
        "/data/upload/3/ab-cat.png",
        "/data/local-files/?d=x.png",
        "http://ls:8080/data/upload/1/a.png",
        "https://bucket.s3.amazonaws.com/a.png",
        "data:image/png;base64,AAAA",
        "file:///etc/passwd",
        "ftp://host/a.png",
        "s3://bucket-only",
        "s3://bucket/",
        "s3:///key-without-bucket",
        "s3:bucket/key",
        "s3://bucket/key\nHost: evil",
        "s3://buck\\et/key",
        "1s3://bucket/key",
        None,
        42,
    ],
)
def test_other_references_are_not_storage_uris(ref: object) -> None:
    assert storage_scheme(ref) is None
    assert not is_storage_uri(ref)


def test_label_studio_schemes_are_listed() -> None:
    # The community storages of Label Studio 1.23 (url_scheme of S3/GCS/Azure import storages).
    assert {"s3", "gs", "azure-blob"} <= set(STORAGE_SCHEMES)
    for scheme in STORAGE_SCHEMES:
        assert storage_scheme(f"{scheme}://b/k.png") == scheme


def test_fileuri_is_label_studios_urlsafe_padded_base64() -> None:
    uri = "s3://bucket/dir/ä?x>.png"  # non-ASCII and characters that differ in urlsafe base64
    value = encode_fileuri(uri)
    assert value == base64.urlsafe_b64encode(uri.encode()).decode()
    assert "+" not in value and "/" not in value
    assert decode_fileuri(value) == uri
    assert decode_fileuri(value.rstrip("=")) == uri  # padding optional on the way in


@pytest.mark.parametrize("value", ["", "not base64!", "%73%33", "/w==", "gA=="])
def test_fileuri_that_is_not_base64_of_utf8_decodes_to_none(value: str) -> None:
    assert decode_fileuri(value) is None


@given(st.text(min_size=1, max_size=200))
def test_fileuri_round_trips(uri: str) -> None:
    assert decode_fileuri(encode_fileuri(uri)) == uri


def test_task_resolve_path() -> None:
    uri = "s3://bucket/digits/7.png"
    path = task_resolve_path(12, uri)
    assert path == "/tasks/12/resolve/?fileuri=" + base64.urlsafe_b64encode(uri.encode()).decode()
    assert parse_resolve_path(path) == ResolveTarget("task", 12, uri)
    assert ls_media_kind(path) == "resolve"


def test_project_resolve_path() -> None:
    path = project_resolve_path(3, "gs://b/k.png")
    assert path.startswith("/projects/3/resolve/?fileuri=")
    assert parse_resolve_path(path) == ResolveTarget("project", 3, "gs://b/k.png")


@pytest.mark.parametrize("bad", [0, -1, True, "12", 1.5, None])
def test_resolve_paths_need_a_positive_integer_id(bad: object) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        task_resolve_path(bad, "s3://b/k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive integer"):
        project_resolve_path(bad, "s3://b/k")  # type: ignore[arg-type]


def test_parse_resolve_path_takes_absolute_urls_and_presign() -> None:
    b64 = encode_fileuri("azure-blob://c/x.png")
    for url in (
        f"http://ls.example.com/tasks/5/resolve/?fileuri={b64}",
        f"https://ls.example.com:8443/tasks/5/presign/?fileuri={b64}",
        f"/tasks/5/presign?fileuri={b64}",
    ):
        assert parse_resolve_path(url) == ResolveTarget("task", 5, "azure-blob://c/x.png")


@pytest.mark.parametrize(
    "url",
    [
        "/tasks/5/resolve/",
        "/tasks/5/resolve/?fileuri=",
        "/tasks/x/resolve/?fileuri=czM6Ly9iL2s=",
        "/tasks/5/resolve/?fileuri=czM6Ly9iL2s=&fileuri=czM6Ly9iL2s=",
        "/tasks/5/resolve/?fileuri=" + encode_fileuri("http://evil/x.png"),
        "/tasks/5/other/?fileuri=czM6Ly9iL2s=",
        "ftp://h/tasks/5/resolve/?fileuri=czM6Ly9iL2s=",
        "/tasks/5/resolve/?fileuri=czM6Ly9iL2s=\\",
    ],
)
def test_parse_resolve_path_refuses_other_forms(url: str) -> None:
    assert parse_resolve_path(url) is None


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/data/upload/3/ab12-cat.png", "upload"),
        ("/data/local-files/?d=photos/cat.png", "local-files"),
        ("/data/local-files?d=photos/cat.png", "local-files"),
        ("/tasks/9/resolve/?fileuri=czM6Ly9iL2s=", "resolve"),
        ("/tasks/9/presign/?fileuri=czM6Ly9iL2s=", "resolve"),
        ("/projects/2/resolve/?fileuri=czM6Ly9iL2s=", "resolve"),
        ("/projects/2/presign/?fileuri=czM6Ly9iL2s=", "resolve"),
        ("/storage-data/uploaded/?filepath=upload/1/a.png", "storage-data"),
        ("/projects/2/file-proxy/?url=aHR0cDovL3gvYS5wbmc=", "file-proxy"),
        ("http://ls:8080/data/upload/3/a.png", "upload"),
        ("/api/projects/1", None),
        ("/api/tasks?project=1", None),
        ("/data/upload/", None),
        ("/data/upload/../../api/projects", None),
        ("/data/upload/%2e%2e/api", None),
        ("/data/upload/1%2Fa.png", None),
        ("//evil/data/upload/1/a.png", None),
        ("data/upload/1/a.png", None),
        ("/tasks/9/resolve/x", None),
        ("/data/upload/1/a.png\r\n", None),
        ("/data\\upload/1/a.png", None),
    ],
)
def test_ls_media_kind(path: str, kind: str | None) -> None:
    assert ls_media_kind(path) == kind


def test_task_image_ref_turns_storage_uris_into_the_tasks_resolve_path() -> None:
    uri = "s3://bucket/digits/0001.png"
    assert task_image_ref(uri, 7) == task_resolve_path(7, uri)
    assert task_image_ref(f"  {uri} ", 7) == task_resolve_path(7, uri)
    assert task_image_ref("gs://b/k.png", 7) == task_resolve_path(7, "gs://b/k.png")
    assert task_image_ref("azure-blob://c/k.png", 7) == task_resolve_path(7, "azure-blob://c/k.png")
    # only the project known: the project's resolve path; neither: unchanged
    assert task_image_ref(uri, None, 3) == project_resolve_path(3, uri)
    assert task_image_ref(uri) == uri
    assert task_image_ref(uri, True) == uri  # a bool is not a task id
    assert task_image_ref(uri, "7") == uri


def test_task_image_ref_brings_label_studios_own_url_of_the_task_to_one_form() -> None:
    uri = "s3://bucket/digits/0001.png"
    handed_out = f"http://public-ls.example.com/tasks/7/resolve/?fileuri={encode_fileuri(uri)}"
    assert task_image_ref(handed_out, 7) == task_image_ref(uri, 7) == task_resolve_path(7, uri)
    # another task's resolve URL, or one without a storage URI inside, stays as it is
    other = f"http://public-ls.example.com/tasks/8/resolve/?fileuri={encode_fileuri(uri)}"
    assert task_image_ref(other, 7) == other


@pytest.mark.parametrize(
    "ref",
    [
        "/data/upload/1/a.png",
        "/data/local-files/?d=a.png",
        "/storage-data/uploaded/?filepath=upload/1/a.png",
        "http://ls:8080/data/upload/1/a.png",
        "https://images.example.com/a.png",
        "data:image/png;base64,AAAA",
    ],
)
def test_task_image_ref_keeps_everything_else(ref: str) -> None:
    assert task_image_ref(ref, 7, 3) == ref
