"""``labelwheel embed --project`` against a real Label Studio: the store's references are the
ones the backend reads from the tasks, so a backend-like Embedder reading that project uses the
stored vectors without fetching an image."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from labelwheel.cli import cli
from labelwheel.features import Embedder
from labelwheel.features.store import EmbeddingStore
from labelwheel.label_config import image_classification_config
from labelwheel.media.storage import task_image_ref

pytestmark = pytest.mark.e2e

SIZE = "64"


def test_embed_a_project_then_the_backend_reads_the_store(
    label_studio: Any, ls_client: Any, photo_folder: Path, tmp_path: Path
) -> None:
    files = sorted(photo_folder.rglob("photo_*"))[:10]
    project = ls_client.create_project("embed store", image_classification_config(["a", "b"]))
    pid = int(project["id"])
    ids = ls_client.import_files(pid, files)
    assert len(ids) == 10
    model_dir = tmp_path / "model_dir"
    out = model_dir / "stores" / f"project-{pid}"
    env = {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
    args = ["embed", "--project", str(pid), "--out", str(out), "--image-size", SIZE, "--json"]
    res = CliRunner().invoke(cli, args, env=env)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert (summary["listed"], summary["embedded"], summary["failed"]) == (10, 10, 0)

    rows, matrix = EmbeddingStore.open(out).matrix()
    wanted = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert {r.sha for r in rows} == wanted  # the uploaded bytes, read through Label Studio

    tasks = list(ls_client.iter_tasks(pid))
    refs = [task_image_ref(str(t["data"]["image"]), t["id"], pid) for t in tasks]
    assert set(refs) == {r.ref for r in rows}

    def no_reading(ref: str) -> bytes:
        raise AssertionError(f"{ref} was fetched again")

    backend_like = Embedder("efficientnet-lite0", int(SIZE), 8, cache_root=model_dir)
    got = backend_like.embed_refs(refs, no_reading)
    assert got.errors == [None] * 10 and not backend_like.backbone_loaded
    by_ref = {r.ref: matrix[i] for i, r in enumerate(rows)}
    for ref, vec in zip(refs, got.vectors, strict=True):
        np.testing.assert_array_equal(vec, by_ref[ref])

    res = CliRunner().invoke(cli, args, env=env)
    assert res.exit_code == 0 and json.loads(res.stdout)["skipped"] == 10
    res = CliRunner().invoke(
        cli, ["embed", "--project", "999999", "--out", str(tmp_path / "x")], env=env
    )
    assert res.exit_code == 1 and "not found" in res.output and "Traceback" not in res.output
