"""The optional direct S3 reading (``labelwheel.media.s3direct``) against a real S3-compatible
server on loopback (moto's standalone server, its own process), and its settings."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from labelwheel.ls_local import free_port
from labelwheel.media import ImageError, ImageFetcher, ImagePolicy
from labelwheel.media.s3direct import DirectS3Fetcher, S3DirectReader
from labelwheel.media.storage import task_resolve_path
from labelwheel.ml_backend.config import ConfigError, Settings
from labelwheel.ml_backend.link import LabelStudioLink

KEY_ID, SECRET = "AKIADIRECTTEST", "direct-secret"
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        pytest.fail("moto_server not found: pip install 'moto[server]' (dev extra)", pytrace=False)
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "moto_server exited"
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{endpoint}/moto-api/", timeout=2).status_code < 500:
                    break
            assert time.monotonic() < deadline, "moto_server did not answer in 60 s"
            time.sleep(0.2)
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        for bucket in ("photos", "private"):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket="photos", Key="cats/1.png", Body=PNG)
        s3.put_object(Bucket="photos", Key="big.bin", Body=b"x" * 5000)
        s3.put_object(Bucket="private", Key="secret.png", Body=PNG)
        yield endpoint
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend's own credentials, from the environment (boto3's usual chain)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


def _closed_ls_fetcher() -> ImageFetcher:
    # Label Studio on a port nobody listens on: a direct read must never need it.
    return ImageFetcher(ImagePolicy(f"http://127.0.0.1:{free_port()}", None), lambda: {})


def test_direct_reader_reads_named_buckets_only(s3_endpoint: str, aws_env: None) -> None:
    reader = S3DirectReader(["photos"], endpoint_url=s3_endpoint, max_bytes=4096, timeout=5)
    fetcher = DirectS3Fetcher(_closed_ls_fetcher(), reader)
    # the raw URI and Label Studio's resolve path of it (relative or on any host) read directly
    assert fetcher.fetch_bytes("s3://photos/cats/1.png") == PNG
    assert fetcher.fetch_bytes(task_resolve_path(4, "s3://photos/cats/1.png")) == PNG
    assert fetcher.load("s3://photos/cats/1.png").size == (1, 1)
    # errors are ImageErrors with a short reason
    with pytest.raises(ImageError, match="not found"):
        fetcher.fetch_bytes("s3://photos/cats/none.png")
    with pytest.raises(ImageError, match="too large"):
        fetcher.fetch_bytes("s3://photos/big.bin")
    # a bucket not named goes to Label Studio (here unreachable), never to S3 directly
    assert reader.s3_uri("s3://private/secret.png") is None
    with pytest.raises(ImageError):  # read directly, it would have returned the bytes
        fetcher.fetch_bytes(task_resolve_path(4, "s3://private/secret.png"))
    assert reader.s3_uri("gs://photos/cats/1.png") is None


def test_direct_reader_unreachable_endpoint_is_an_image_error(aws_env: None) -> None:
    import boto3

    reader = S3DirectReader(
        ["photos"],
        client_factory=lambda: boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{free_port()}", region_name="us-east-1"
        ),
        timeout=2,
    )
    with pytest.raises(ImageError, match="S3 unreachable"):
        reader.read("s3://photos/cats/1.png")


def test_backend_link_reads_direct_buckets_itself(
    s3_endpoint: str, aws_env: None, tmp_path: Path
) -> None:
    settings = Settings.from_env(
        {
            "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}",
            "LABEL_STUDIO_API_KEY": "x" * 40,
            "MODEL_DIR": str(tmp_path),
            "LABELWHEEL_S3_DIRECT_BUCKETS": "photos",
            "LABELWHEEL_S3_ENDPOINT_URL": s3_endpoint + "/",
        }
    )
    assert settings.s3_direct_buckets == frozenset({"photos"})
    assert settings.s3_endpoint_url == s3_endpoint
    fetcher = LabelStudioLink(settings).fetcher()
    assert fetcher.fetch_bytes(task_resolve_path(9, "s3://photos/cats/1.png")) == PNG


def test_direct_reading_is_off_by_default(tmp_path: Path) -> None:
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path)})
    assert settings.s3_direct_buckets == frozenset()
    assert settings.s3_endpoint_url is None
    assert isinstance(LabelStudioLink(settings).fetcher(), ImageFetcher)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LABELWHEEL_S3_DIRECT_BUCKETS": "Bad_Bucket"}, "LABELWHEEL_S3_DIRECT_BUCKETS"),
        ({"LABELWHEEL_S3_DIRECT_BUCKETS": "ok-bucket,s3://x"}, "LABELWHEEL_S3_DIRECT_BUCKETS"),
        ({"LABELWHEEL_S3_ENDPOINT_URL": "minio:9000"}, "LABELWHEEL_S3_ENDPOINT_URL"),
    ],
)
def test_bad_direct_s3_settings_name_the_variable(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"MODEL_DIR": str(tmp_path), **env})
