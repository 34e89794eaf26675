"""The S3-compatible source against moto's standalone server on loopback (a real HTTP endpoint)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import TEST_IMAGE_SIZE, S3Server, SourceTruth

from labelwheel.cli import cli
from labelwheel.features import Embedder
from labelwheel.ingest.dedup import NEAR_DUPLICATE_SIMILARITY
from labelwheel.ingest.funnel import run_funnel
from labelwheel.ingest.project import ProjectContext
from labelwheel.ingest.sources import S3Source, SourceItem
from labelwheel.ingest.state import Ledger
from labelwheel.media import ImageError


@pytest.fixture
def s3_env(moto_s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for name, value in moto_s3.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_s3


@pytest.fixture
def bucket(s3_env: S3Server, source_template: SourceTruth) -> Iterator[str]:
    """A fresh bucket holding the test source under ``incoming/`` and some noise around it."""
    name = f"lw-{uuid.uuid4().hex[:12]}"
    client: Any = s3_env.client()
    client.create_bucket(Bucket=name)
    for path in sorted(source_template.root.iterdir()):
        client.put_object(Bucket=name, Key=f"incoming/{path.name}", Body=path.read_bytes())
    client.put_object(Bucket=name, Key="incoming/sub/", Body=b"")
    client.put_object(Bucket=name, Key="other/a_photo_moon.png", Body=b"outside the prefix")
    client.put_object(Bucket=name, Key="incoming/.hidden.png", Body=b"hidden")
    yield name


def test_lists_and_reads_objects(
    s3_env: S3Server, bucket: str, source_template: SourceTruth
) -> None:
    src = S3Source(f"s3://{bucket}/incoming/", endpoint_url=s3_env.endpoint_url)
    items = list(src.items())
    assert [i.key for i in items] == [f"incoming/{n}" for n in source_template.files]
    assert all(i.version and ":" in i.version for i in items)
    first = items[0]
    assert src.read(first) == (source_template.root / first.name).read_bytes()
    assert first.size == len(src.read(first))
    with pytest.raises(ImageError, match="not found"):
        src.read(SourceItem("incoming/missing.png", 10, "x"))
    empty = next(i for i in items if i.name == "z_empty.png")
    with pytest.raises(ImageError, match="empty image"):
        src.read(empty)
    small = S3Source(f"s3://{bucket}/incoming/", endpoint_url=s3_env.endpoint_url, max_bytes=100)
    with pytest.raises(ImageError, match="too large"):
        small.read(first)


def test_listing_errors_are_clear(s3_env: S3Server) -> None:
    src = S3Source("s3://no-such-bucket-here/x", endpoint_url=s3_env.endpoint_url)
    with pytest.raises(ValueError, match="cannot list s3://no-such-bucket-here/x: NoSuchBucket"):
        list(src.items())
    dead = S3Source("s3://b/x", endpoint_url="http://127.0.0.1:9", max_bytes=10)
    dead._client.meta.config.retries = {"max_attempts": 1}
    with pytest.raises(ValueError, match="cannot list s3://b/x"):
        list(dead.items())


def test_funnel_on_s3_decides_like_on_a_folder(
    s3_env: S3Server, bucket: str, source_template: SourceTruth, tmp_path: Path
) -> None:
    src = S3Source(f"s3://{bucket}/incoming", endpoint_url=s3_env.endpoint_url)
    embedder = Embedder("efficientnet-lite0", int(TEST_IMAGE_SIZE), 16, cache_root=None)
    ctx = ProjectContext(project_id=1, title="t", data_key="image", labels=())
    with Ledger(tmp_path / "l.sqlite3", 1) as ledger:
        result = run_funnel(
            src, ctx, embedder, ledger, near_threshold=NEAR_DUPLICATE_SIMILARITY, threads=4
        )
    embedder.close()
    strip = len("incoming/")
    assert sorted(c.item.key[strip:] for c in result.candidates) == sorted(source_template.kept)
    got = {
        o.key[strip:]: (o.reason, o.duplicate_of[strip:] if o.duplicate_of else None)
        for o in result.dropped
    }
    assert got == source_template.dropped


@pytest.mark.e2e
def test_cli_imports_from_s3(
    s3_env: S3Server, bucket: str, label_studio: Any, ls_client: Any, tmp_path: Path
) -> None:
    from labelwheel.label_config import image_classification_config

    project = ls_client.create_project("ingest from s3", image_classification_config(["a", "b"]))
    argv = [
        "ingest",
        f"s3://{bucket}/incoming/",
        "--project",
        str(project["id"]),
        "--s3-endpoint-url",
        s3_env.endpoint_url,
        "--budget",
        "3",
        "--json",
        "--image-size",
        TEST_IMAGE_SIZE,
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    env = {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
    result = CliRunner().invoke(cli, argv, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["source"] == f"s3://{bucket}/incoming/"
    assert out["imported"] == 3 and out["dropped"]["total"] == 9
    tasks = list(ls_client.iter_tasks(project["id"]))
    assert len(tasks) == 3
    by_source = {t["data"]["labelwheel_source"]: t for t in tasks}
    s3: Any = s3_env.client()
    for row in out["tasks"]:
        task = by_source[row["key"]]
        assert task["id"] == row["task_id"]
        # the uploaded file is the object's bytes, under its own name
        assert task["data"]["image"].endswith(row["key"].rsplit("/", 1)[-1])
        data = ls_client.fetch_bytes(task["data"]["image"], 10**7, 30)
        body = s3.get_object(Bucket=bucket, Key=row["key"])["Body"].read()
        assert data == body
    # the default ledger lives in the cache dir: a re-run imports nothing twice
    again = CliRunner().invoke(cli, argv, env=env, catch_exceptions=False)
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["imported"] == 3  # the next 3, not the same
    shas = [t["data"]["labelwheel_sha256"] for t in ls_client.iter_tasks(project["id"])]
    assert len(shas) == 6 and len(set(shas)) == 6
