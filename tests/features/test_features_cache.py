"""The embedding cache's files: plain ``.npy`` files written atomically, and a folder that cannot
be written never fails the embedding it caches."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

from labelwheel.features import EmbeddingCache


def _sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_entries_are_npy_files_any_reader_loads(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "net", 224)
    vecs = {_sha(i): np.random.default_rng(i).standard_normal(1280) for i in range(40)}
    for sha, vec in vecs.items():
        cache.put(sha, vec)  # float64 in: kept as float32
    files = sorted(p for p in (tmp_path / "embeddings").rglob("*") if p.is_file())
    assert [p.name for p in files] == sorted(f"{sha}.npy" for sha in vecs)  # no temp files left
    for path in files:
        got = np.load(path, allow_pickle=False)
        assert got.dtype == np.float32 and got.shape == (1280,)
        np.testing.assert_array_equal(got, vecs[path.stem].astype(np.float32))
    fresh = EmbeddingCache(tmp_path, "net", 224)  # another process: reads the files
    for sha, vec in vecs.items():
        np.testing.assert_array_equal(fresh.get(sha), vec.astype(np.float32))
    other = np.arange(7, dtype=np.float32)  # another length: its own header
    cache.put(_sha(99), other)
    np.testing.assert_array_equal(EmbeddingCache(tmp_path, "net", 224).get(_sha(99)), other)


def test_a_rewrite_replaces_the_file_whole(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "net", 224)
    cache.put(_sha(1), np.zeros(16))
    cache.put(_sha(1), np.ones(16))
    np.testing.assert_array_equal(EmbeddingCache(tmp_path, "net", 224).get(_sha(1)), np.ones(16))


def test_a_folder_that_cannot_be_written_keeps_vectors_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EmbeddingCache(tmp_path, "net", 224)
    assert cache.dir is not None
    blocker = cache.dir / _sha(5)[:2]
    blocker.write_bytes(b"")  # a file where the entry's folder should be: every write fails
    with caplog.at_level(logging.WARNING, "labelwheel.features"):
        for _ in range(3):
            cache.put(_sha(5), np.ones(8, dtype=np.float32))  # no exception
    np.testing.assert_array_equal(cache.get(_sha(5)), np.ones(8))
    assert len([r for r in caplog.records if "not written" in r.getMessage()]) == 1
    assert EmbeddingCache(tmp_path, "net", 224).get(_sha(5)) is None


def _png(seed: int) -> bytes:
    import io

    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("pipelined", [True, False])
def test_an_embedders_files_are_written_when_its_call_returns(
    tmp_path: Path, pipelined: bool
) -> None:
    """The files are written on the embedder's writer thread while the passes run; the call
    returns once every one exists, so another process finds them all."""
    from labelwheel.features import Embedder

    emb = Embedder("efficientnet-lite0", 64, 8, cache_root=tmp_path, pipelined=pipelined)
    refs = [str(i) for i in range(11)]
    out = emb.embed_refs(refs, lambda ref: _png(int(ref)))
    assert out.ok == list(range(11))
    fresh = EmbeddingCache(tmp_path, "efficientnet-lite0", 64)
    for sha, vec in zip(out.hashes, out.vectors, strict=True):
        assert sha is not None
        np.testing.assert_array_equal(fresh.get(sha), vec)
    again = Embedder("efficientnet-lite0", 64, 8, cache_root=tmp_path)
    assert again.embed_refs(refs, lambda ref: _png(int(ref))).ok == list(range(11))
    assert again.images_embedded == 0  # every vector came from the files


def test_an_embedding_call_survives_a_cache_it_cannot_write(tmp_path: Path) -> None:
    from labelwheel.features import Embedder

    emb = Embedder("efficientnet-lite0", 64, 8, cache_root=tmp_path)
    assert emb.cache.dir is not None
    for i in range(256):  # a file where each entry's folder should be
        (emb.cache.dir / f"{i:02x}").write_bytes(b"")
    out = emb.embed_refs([str(i) for i in range(5)], lambda ref: _png(int(ref)))
    assert out.ok == list(range(5)) and not any(out.errors)
