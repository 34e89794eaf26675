"""The funnel's first pass on real images (no Label Studio): every decision, the ledger, resume."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_IMAGE_SIZE, SourceTruth
from PIL import Image

from labelwheel.features import Embedder
from labelwheel.ingest.dedup import NEAR_DUPLICATE_SIMILARITY, NearDuplicateIndex, descriptor
from labelwheel.ingest.funnel import FunnelPass, run_funnel
from labelwheel.ingest.project import ProjectContext
from labelwheel.ingest.sources import FolderSource, open_source
from labelwheel.ingest.state import Ledger, LedgerItem


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    emb = Embedder("efficientnet-lite0", int(TEST_IMAGE_SIZE), 16, cache_root=None)
    yield emb
    emb.close()


def _ctx() -> ProjectContext:
    return ProjectContext(project_id=1, title="t", data_key="image", labels=("a", "b"))


def _run(
    root: Path, ledger: Ledger, embedder: Embedder, ctx: ProjectContext | None = None
) -> FunnelPass:
    return run_funnel(
        FolderSource(root),
        ctx or _ctx(),
        embedder,
        ledger,
        near_threshold=NEAR_DUPLICATE_SIMILARITY,
        threads=2,
    )


def test_first_pass_decides_every_file(
    tmp_path: Path, make_source: Callable[[Path], SourceTruth], embedder: Embedder
) -> None:
    truth = make_source(tmp_path / "src")
    # a copy of a near duplicate: an exact duplicate of it, though its content is already
    # recorded as dropped in this run's ledger
    (truth.root / "zz_copy_of_near.jpg").write_bytes(
        (truth.root / "z_near_chelsea_q70.jpg").read_bytes()
    )
    truth.dropped["zz_copy_of_near.jpg"] = ("exact_duplicate", "z_near_chelsea_q70.jpg")
    ledger = Ledger(tmp_path / "ledger.sqlite3", 1)
    result = _run(truth.root, ledger, embedder)
    assert result.skipped == []
    assert result.listed == len(truth.files)  # notes.txt is not an image: not listed
    assert result.read == len(truth.files)
    assert sorted(c.item.key for c in result.candidates) == sorted(truth.kept)
    got = {o.key: (o.reason, o.duplicate_of) for o in result.dropped}
    assert got == truth.dropped
    details = {o.key: o.detail for o in result.dropped}
    assert details["z_corrupt_random.jpg"] == "not an image"
    assert details["z_corrupt_truncated.png"] == "corrupt or truncated"
    assert details["z_empty.png"] == "empty image"
    for o in result.dropped:
        if o.reason == "near_duplicate":
            assert o.similarity is not None and NEAR_DUPLICATE_SIMILARITY <= o.similarity <= 1.0
    # the embeddings are the backbone's, one per kept image
    dims = {c.vector.shape for c in result.candidates}
    assert dims == {(embedder.backbone().dim,)}
    # the ledger: kept contents "passed", near duplicates and corrupt ones "dropped"; exact
    # copies share their original's content and have no row of their own
    counts = ledger.counts()
    assert counts == {"passed": len(truth.kept), "dropped": 6}  # 4 near, 2 corrupt
    ledger.close()


def test_second_run_skips_decided_files_without_reading_them(
    tmp_path: Path, make_source: Callable[[Path], SourceTruth], embedder: Embedder
) -> None:
    truth = make_source(tmp_path / "src")
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path, 1) as ledger:
        _run(truth.root, ledger, embedder)
        # as if the kept ones had been imported
        ledger.record(
            [
                LedgerItem(it.sha, it.key, "imported", task_id=100 + i)
                for i, it in enumerate(ledger.all("passed"))
            ]
        )
    with Ledger(path, 1) as ledger:
        again = _run(truth.root, ledger, embedder)
    # every readable file is recognised by key, size and mtime: nothing read but the empty file
    assert again.read == 1
    assert again.candidates == []
    reasons = {o.key: o.reason for o in again.skipped}
    assert reasons["a_photo_astronaut.png"] == "already_imported"
    assert reasons["z_exact_astronaut.png"] == "already_imported"  # same content
    assert reasons["z_near_chelsea_q70.jpg"] == "already_dropped:near_duplicate"
    assert reasons["z_corrupt_random.jpg"] == "already_dropped:corrupt"
    assert [o.key for o in again.dropped] == ["z_empty.png"]


def test_renamed_or_touched_file_is_read_again_and_recognised_by_content(
    tmp_path: Path, make_source: Callable[[Path], SourceTruth], embedder: Embedder
) -> None:
    truth = make_source(tmp_path / "src")
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path, 1) as ledger:
        _run(truth.root, ledger, embedder)
        ledger.record(
            [LedgerItem(i.sha, i.key, "imported", task_id=7) for i in ledger.all("passed")]
        )
    (truth.root / "a_photo_coins.png").rename(truth.root / "renamed_coins.png")
    with Ledger(path, 1) as ledger:
        again = _run(truth.root, ledger, embedder)
    assert again.read == 2  # the renamed file and the empty one
    assert {o.key: o.reason for o in again.skipped}["renamed_coins.png"] == "already_imported"


def test_dry_run_ledger_writes_nothing(
    tmp_path: Path, make_source: Callable[[Path], SourceTruth], embedder: Embedder
) -> None:
    truth = make_source(tmp_path / "src")
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path, 1, read_only=True)
    result = _run(truth.root, ledger, embedder)
    assert len(result.candidates) == len(truth.kept)
    assert not path.exists()


def test_duplicates_of_the_project_are_dropped(
    tmp_path: Path, make_source: Callable[[Path], SourceTruth], embedder: Embedder
) -> None:
    truth = make_source(tmp_path / "src")
    ctx = _ctx()
    # the project already holds the astronaut (same bytes) and the clock (its descriptor)
    from labelwheel.ingest.state import sha_of

    ctx.shas = {sha_of((truth.root / "a_photo_astronaut.png").read_bytes()): 41}
    clock = Image.open(truth.root / "a_photo_clock.png")
    ctx.descriptors = descriptor(clock.resize((clock.width // 2, clock.height // 2)))[None, :]
    ctx.descriptor_tasks = [42]
    with Ledger(tmp_path / "ledger.sqlite3", 1) as ledger:
        result = _run(truth.root, ledger, embedder, ctx)
    got = {o.key: (o.reason, o.duplicate_of) for o in result.dropped}
    assert got["a_photo_astronaut.png"] == ("exact_duplicate", "task 41")
    assert got["z_exact_astronaut.png"] == ("exact_duplicate", "task 41")
    assert got["a_photo_clock.png"][0] == "near_duplicate"
    assert got["a_photo_clock.png"][1] == "task 42"
    assert len(result.candidates) == len(truth.kept) - 2


def test_descriptor_separates_copies_from_other_images(
    source_template: SourceTruth,
) -> None:
    root = source_template.root
    index = NearDuplicateIndex()
    kept = sorted(source_template.kept)
    vecs = np.stack([descriptor(Image.open(root / k)) for k in kept])
    index.add(vecs, kept)
    for name, (reason, owner) in source_template.dropped.items():
        if reason == "near_duplicate":
            match = index.match(descriptor(Image.open(root / name)))
            assert match is not None and match[0] == owner
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -1)
    assert sims.max() < NEAR_DUPLICATE_SIMILARITY  # no two distinct test images collide
    flat = descriptor(Image.new("RGB", (40, 30), (120, 120, 120)))
    assert not flat.any() and index.match(flat) is None


def test_ledger_belongs_to_one_project(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    Ledger(path, 3).close()
    with pytest.raises(ValueError, match="belongs to project 3"):
        Ledger(path, 4)
    path.write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match="not usable"):
        Ledger(path, 3)


def test_ledger_commits_are_atomic_per_batch(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    with Ledger(path, 1) as ledger:
        ledger.record([LedgerItem("a" * 64, "k1", "passed")])
        with pytest.raises(ValueError, match="unknown ledger status"):
            ledger.record([LedgerItem("b" * 64, "k2", "passed"), LedgerItem("c" * 64, "k3", "x")])
    rows = sqlite3.connect(path).execute("SELECT key FROM items").fetchall()
    assert rows == [("k1",)]


def test_open_source_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a folder"):
        open_source(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="unsupported source"):
        open_source("gs://bucket/x")
    with pytest.raises(ValueError, match="no bucket"):
        open_source("s3:///prefix")
