"""The embedding store: round trip, resumption, atomicity, and the cache/embedder reading it."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import labelwheel.features.store as store_module
from labelwheel.distributed import EmbedSource, run_embed
from labelwheel.features import Embedder, EmbeddingCache
from labelwheel.features.store import EmbeddingStore, StoreMismatch, find_stores

SIZE = 64
BACKBONE = "efficientnet-lite0"


def _rows(n: int, dim: int = 8, seed: int = 0) -> tuple[list[str], list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    refs = [f"/data/img_{seed}_{i}.png" for i in range(n)]
    hashes = [f"{seed:02d}{i:062x}" for i in range(n)]
    return refs, hashes, rng.normal(size=(n, dim)).astype(np.float32)


def test_round_trip_across_shards_and_reopen(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = EmbeddingStore.create(root, "bb", 32, 8)
    r1, h1, v1 = _rows(5, seed=1)
    r2, h2, v2 = _rows(3, seed=2)
    assert store.append(r1, h1, v1) == 0
    assert store.append(r2, h2, v2) == 1

    again = EmbeddingStore.open(root)
    assert (again.backbone, again.image_size, again.dim, len(again)) == ("bb", 32, 8, 8)
    rows, matrix = again.matrix()
    assert [r.ref for r in rows] == r1 + r2
    assert [r.sha for r in rows] == h1 + h2
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, np.concatenate([v1, v2]))
    shards = list(again.iter_shards())
    assert [len(rows) for rows, _ in shards] == [5, 3]
    assert isinstance(shards[0][1], np.memmap)
    np.testing.assert_array_equal(again.vector(h2[1]), v2[1])
    assert again.hash_of(r1[4]) == h1[4]
    assert again.vector("f" * 64) is None and again.hash_of("nope") is None
    assert h1[0] in again and "f" * 64 not in again
    assert again.references() == set(r1 + r2)


def test_create_refuses_another_backbone_size_or_folder(tmp_path: Path) -> None:
    EmbeddingStore.create(tmp_path / "s", "bb", 32, 8)
    with pytest.raises(StoreMismatch, match="bb at 32 px"):
        EmbeddingStore.create(tmp_path / "s", "bb", 64, 8)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not an embedding store"):
        EmbeddingStore.create(tmp_path / "other", "bb", 32, 8)
    with pytest.raises(ValueError, match="not an embedding store"):
        EmbeddingStore.open(tmp_path / "other")
    store = EmbeddingStore.open(tmp_path / "s")
    with pytest.raises(ValueError, match=r"\(n, 8\)"):
        store.append(["a"], ["h"], np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="finite"):
        store.append(["a"], ["h"], np.full((1, 8), np.nan, np.float32))


def test_a_crash_between_vectors_and_manifest_leaves_no_half_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    store = EmbeddingStore.create(root, "bb", 32, 8)
    r1, h1, v1 = _rows(4, seed=1)
    store.append(r1, h1, v1)
    real_write = store_module.atomic_write_bytes

    def crash_on_manifest(path: Path, data: bytes, fsync: bool = True) -> None:
        if path.suffix == ".jsonl":
            raise OSError("power cut")
        real_write(path, data, fsync)

    monkeypatch.setattr(store_module, "atomic_write_bytes", crash_on_manifest)
    r2, h2, v2 = _rows(3, seed=2)
    with pytest.raises(OSError, match="power cut"):
        store.append(r2, h2, v2)
    monkeypatch.undo()
    assert (root / "shards" / "shard-000001.npy").exists()  # the orphan vectors

    reopened = EmbeddingStore.open(root)
    assert len(reopened) == 4 and reopened.references() == set(r1)
    assert not [p for p in (root / "shards").iterdir() if p.name.endswith(".tmp")]
    # the next writer reuses the orphan's number and commits a whole shard
    r3, h3, v3 = _rows(2, seed=3)
    assert reopened.append(r3, h3, v3) == 1
    np.testing.assert_array_equal(EmbeddingStore.open(root).matrix()[1][4:], v3)
    # a damaged manifest counts as not written
    (root / "shards" / "shard-000001.jsonl").write_text('{"sha": "x", "ref"')
    assert EmbeddingStore.open(root).references() == set(r1)


def test_the_cache_reads_vectors_and_hashes_from_stores_under_its_root(tmp_path: Path) -> None:
    store = EmbeddingStore.create(tmp_path / "cache" / "stores" / "pool", "bb", 32, 8)
    EmbeddingStore.create(tmp_path / "cache" / "stores" / "other-size", "bb", 64, 8)
    refs, hashes, vectors = _rows(3, seed=5)
    store.append(refs, hashes, vectors)
    assert [s.root.name for s in find_stores(tmp_path / "cache" / "stores", "bb", 32)] == ["pool"]

    cache = EmbeddingCache(tmp_path / "cache", "bb", 32)
    np.testing.assert_array_equal(cache.get(hashes[2]), vectors[2])
    assert hashes[1] in cache and cache.hash_of(refs[1]) == hashes[1]
    assert cache.get("0" * 64) is None and cache.hash_of("/elsewhere.png") is None
    # rows committed later are found once the cache looks again
    more_refs, more_hashes, more = _rows(2, seed=6)
    EmbeddingStore.open(store.root).append(more_refs, more_hashes, more)
    cache.stores(rescan=True)
    np.testing.assert_array_equal(cache.get(more_hashes[0]), more[0])
    assert EmbeddingCache(None, "bb", 32).hash_of(refs[0]) is None


def test_a_stored_pool_is_neither_read_nor_embedded_again(
    photo_folder: Path, tmp_path: Path
) -> None:
    cache_root = tmp_path / "model_dir"
    result = run_embed(
        EmbedSource(str(photo_folder)),
        cache_root / "stores" / "photos",
        backbone=BACKBONE,
        image_size=SIZE,
        batch_size=8,
        shard_rows=10,
    )
    assert (result.listed, result.embedded, result.shards, result.failed) == (24, 24, 3, [])
    store = EmbeddingStore.open(cache_root / "stores" / "photos")
    rows, matrix = store.matrix()

    def no_reading(ref: str) -> bytes:
        raise AssertionError(f"{ref} was read again")

    def no_backbone() -> object:
        raise AssertionError("the backbone was loaded")

    backend_like = Embedder(BACKBONE, SIZE, 8, cache_root=cache_root, loader=no_backbone)  # type: ignore[arg-type]
    out = backend_like.embed_refs([r.ref for r in rows], no_reading)
    assert out.errors == [None] * len(rows)
    assert out.hashes == [r.sha for r in rows]
    np.testing.assert_array_equal(np.stack(out.vectors), matrix)  # type: ignore[arg-type]
    assert not backend_like.backbone_loaded and backend_like.images_embedded == 0


def test_in_process_embed_equals_the_embedder_and_resumes(
    photo_folder: Path, tmp_path: Path, photo_tiles: Callable[..., list[Path]]
) -> None:
    out = tmp_path / "store"
    source = EmbedSource(str(photo_folder))
    first = run_embed(source, out, backbone=BACKBONE, image_size=SIZE, batch_size=8, shard_rows=16)
    assert (first.listed, first.skipped, first.embedded) == (24, 0, 24)

    refs = source.references()
    assert all(Path(r).is_absolute() and Path(r).exists() for r in refs)
    direct = Embedder(BACKBONE, SIZE, 8).embed_refs(refs, lambda r: Path(r).read_bytes())
    store = EmbeddingStore.open(out)
    assert {r.ref: r.sha for r in store.rows()} == dict(zip(refs, direct.hashes, strict=True))
    by_ref = dict(zip([r.ref for r in store.rows()], store.matrix()[1], strict=True))
    for ref, vec in zip(refs, direct.vectors, strict=True):
        np.testing.assert_allclose(by_ref[ref], vec, rtol=1e-5, atol=1e-5)

    again = run_embed(source, out, backbone=BACKBONE, image_size=SIZE)
    assert (again.skipped, again.embedded, again.shards) == (24, 0, 0)
    photo_tiles(photo_folder, 3, start=100)
    (photo_folder / "broken.png").write_bytes(b"not a png")
    grown = run_embed(source, out, backbone=BACKBONE, image_size=SIZE)
    assert (grown.listed, grown.skipped, grown.embedded) == (28, 24, 3)
    assert [Path(ref).name for ref, _ in grown.failed] == ["broken.png"]
    assert len(EmbeddingStore.open(out)) == 27
    with pytest.raises(ValueError, match="efficientnet-lite0 at 64 px"):
        run_embed(source, out, backbone=BACKBONE, image_size=96)


def test_embed_command(photo_folder: Path, tmp_path: Path) -> None:
    from labelwheel.cli import cli

    runner = CliRunner()
    out = tmp_path / "store"
    args = ["embed", str(photo_folder), "--out", str(out), "--image-size", str(SIZE)]
    res = runner.invoke(cli, [*args, "--batch-size", "8", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert (summary["listed"], summary["embedded"], summary["failed"]) == (24, 24, 0)
    res = runner.invoke(cli, args)
    assert res.exit_code == 0 and "0 embedded, 24 already in the store" in res.output

    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    started = time.monotonic()
    res = runner.invoke(
        cli,
        ["embed", str(photo_folder), "--out", str(tmp_path / "r"), "--ray", f"127.0.0.1:{port}"],
    )
    assert res.exit_code == 1 and f"cannot reach Ray at 127.0.0.1:{port}" in res.output
    assert time.monotonic() - started < 10
    res = runner.invoke(cli, [*args, "--ray", "nowhere"])
    assert res.exit_code == 1 and "use local, auto, HOST:PORT" in res.output
    res = runner.invoke(cli, [*args, "--image-size", "96"])
    assert res.exit_code == 1 and "holds efficientnet-lite0 at 64 px" in res.output
    res = runner.invoke(cli, ["embed", str(tmp_path / "missing"), "--out", str(tmp_path / "s2")])
    assert res.exit_code == 1
    assert "Error:" in res.output and "not a folder" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(cli, ["embed", str(photo_folder), "--project", "3", "--out", str(out)])
    assert res.exit_code == 2 and "SOURCE or --project" in res.output
    res = runner.invoke(
        cli, ["embed", "--project", "3", "--out", str(out)], env={"LABEL_STUDIO_URL": ""}
    )
    assert res.exit_code == 2 and "needs --url and --api-key" in res.output


def test_only_folder_sources_read_locally(photo_folder: Path) -> None:
    """A folder's reads are decoding work (a chunk decoded on cores + 1 threads, then embedded);
    S3 and Label Studio reads wait on a network (fetch threads, read ahead)."""
    assert EmbedSource(str(photo_folder)).local
    assert not EmbedSource("s3://bucket/prefix/").local
    assert not EmbedSource("project", project=3, url="http://ls", api_key="k").local
