"""Loading a pool from a folder of real images: labels, embedding cache, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labelwheel.features import EmbeddingCache
from labelwheel.pool import Pool, load_folder_pool

torch.set_num_threads(1)
SIZE = 32  # small backbone input: fast on two cores


def test_labels_from_subfolders_and_cache(tmp_path, mnist_images, write_pngs) -> None:
    imgs, y = mnist_images
    labels = [str(v) if i < 8 else None for i, v in enumerate(y[:12])]
    write_pngs(tmp_path / "imgs", imgs[:12], labels)
    cache = tmp_path / "cache"
    pool = load_folder_pool(tmp_path / "imgs", image_size=SIZE, cache_dir=cache)
    assert len(pool) == 12 and pool.embeddings.shape[0] == 12
    assert pool.n_labeled == 8
    assert sorted(pool.classes) == sorted({str(v) for v in y[:8]})
    by_ref = dict(zip(pool.refs, pool.labels, strict=True))
    assert by_ref["img0009.png"] is None  # top-level files are unlabelled
    first = next(r for r in pool.refs if r.endswith("img0000.png"))
    assert by_ref[first] == str(y[0]) and first == f"{y[0]}/img0000.png"
    files = list((cache / "embeddings").rglob("*.npy"))
    assert len(files) == 12
    # Second load reads the cache: the same vectors, no new files.
    again = load_folder_pool(tmp_path / "imgs", image_size=SIZE, cache_dir=cache)
    assert np.allclose(again.embeddings, pool.embeddings)
    assert len(list((cache / "embeddings").rglob("*.npy"))) == 12


def test_labels_csv_and_unreadable_image(tmp_path, mnist_images, write_pngs) -> None:
    imgs, _ = mnist_images
    root = tmp_path / "flat"
    write_pngs(root, imgs[:6], [None] * 6, layout="flat")
    (root / "broken.png").write_bytes(b"not a png at all")
    (root / "labels.csv").write_text("filename,label\nimg0000.png,seven\nimg0001.png,two\n")
    pool = load_folder_pool(root, image_size=SIZE, cache_dir=None)
    assert len(pool) == 6
    assert pool.skipped and pool.skipped[0][0] == "broken.png"
    assert dict(zip(pool.refs, pool.labels, strict=True))["img0000.png"] == "seven"
    assert pool.n_labeled == 2
    assert pool.classes == ("seven", "two")


def test_no_images_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="no images"):
        load_folder_pool(tmp_path, image_size=SIZE)
    with pytest.raises(ValueError, match="not a directory"):
        load_folder_pool(tmp_path / "missing", image_size=SIZE)


def test_only_unreadable_images(tmp_path) -> None:
    (tmp_path / "a.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no readable images"):
        load_folder_pool(tmp_path, image_size=SIZE)


def test_pool_from_arrays_validates_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        Pool.from_arrays(np.zeros((2, 2)), ["a", None], ids=[1, 2, 3])
    pool = Pool.from_arrays(np.zeros((3, 2)), ["b", None, "a"])
    assert pool.classes == ("a", "b")
    assert pool.codes().tolist() == [1, -1, 0]


def test_cache_shares_the_backend_layout(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path, "torchvision:resnet18", 112)
    cache.put("ab" * 32, np.ones(4, dtype=np.float32))
    assert (
        tmp_path / "embeddings" / "torchvision_resnet18-112" / "ab" / f"{'ab' * 32}.npy"
    ).is_file()
    got = cache.get("ab" * 32)
    assert got is not None and got.tolist() == [1, 1, 1, 1]
    assert cache.get("cd" * 32) is None
