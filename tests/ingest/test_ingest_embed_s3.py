"""``labelwheel embed s3://bucket/prefix`` against moto's S3 server: the store holds the same
content hashes and vectors as embedding the same files from a folder, under s3:// references."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labelwheel.distributed import EmbedSource, run_embed
from labelwheel.features.store import EmbeddingStore

SIZE = 64


def test_embed_an_s3_prefix(
    moto_s3: Any, monkeypatch: pytest.MonkeyPatch, source_template: Any, tmp_path: Path
) -> None:
    for name, value in moto_s3.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"lw-{uuid.uuid4().hex[:12]}"
    client: Any = moto_s3.client()
    client.create_bucket(Bucket=bucket)
    files = sorted(p for p in source_template.root.iterdir() if p.is_file())
    for path in files:
        client.put_object(Bucket=bucket, Key=f"in/{path.name}", Body=path.read_bytes())
    client.put_object(Bucket=bucket, Key="elsewhere/x.png", Body=b"outside the prefix")

    s3 = EmbedSource(f"s3://{bucket}/in/", endpoint_url=moto_s3.endpoint_url)
    on_s3 = run_embed(s3, tmp_path / "s3", backbone="efficientnet-lite0", image_size=SIZE)
    folder = EmbedSource(str(source_template.root))
    local = run_embed(folder, tmp_path / "local", backbone="efficientnet-lite0", image_size=SIZE)
    assert on_s3.listed == local.listed > 0
    assert on_s3.embedded == local.embedded > 0
    assert len(on_s3.failed) == len(local.failed)

    s3_rows, s3_matrix = EmbeddingStore.open(tmp_path / "s3").matrix()
    local_rows, local_matrix = EmbeddingStore.open(tmp_path / "local").matrix()
    assert all(r.ref.startswith(f"s3://{bucket}/in/") for r in s3_rows)
    s3_by_name = {r.ref.rsplit("/", 1)[1]: (r.sha, s3_matrix[i]) for i, r in enumerate(s3_rows)}
    for i, r in enumerate(local_rows):
        sha, vec = s3_by_name[Path(r.ref).name]
        assert sha == r.sha
        np.testing.assert_allclose(vec, local_matrix[i], rtol=1e-5, atol=1e-5)
    again = run_embed(s3, tmp_path / "s3", backbone="efficientnet-lite0", image_size=SIZE)
    assert (again.skipped, again.embedded) == (on_s3.embedded, 0)
