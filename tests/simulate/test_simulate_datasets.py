"""Real data sets load offline with the documented shapes; embeddings are cached."""

from __future__ import annotations

import numpy as np
import pytest

from labelwheel import datasets


@pytest.mark.parametrize(
    ("name", "n", "shape", "n_classes"),
    [
        ("digits", 1797, (8, 8), 10),
        ("lfw", 200, (25, 25), 2),
        pytest.param("mnist5k", 5000, (28, 28), 10, marks=pytest.mark.slow),  # ~5-15 s to parse
    ],
)
def test_load_dataset_shapes(name: str, n: int, shape: tuple[int, int], n_classes: int) -> None:
    data = datasets.load_dataset(name)
    assert data.images.shape == (n, *shape)
    assert data.images.dtype == np.uint8
    assert data.labels.shape == (n,)
    assert data.labels.dtype == np.int64
    assert len(data.class_names) == data.n_classes == n_classes
    assert set(np.unique(data.labels)) == set(range(n_classes))
    # scaled to the full 0-255 range, not left at 0-16 or 0-1
    assert data.images.max() == 255
    assert data.images.min() == 0


def test_unknown_dataset_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="mnist5k, digits, lfw"):
        datasets.load_dataset("cifar")


def test_raw_features_are_standardised() -> None:
    feats = datasets.load_embeddings("digits", backbone="raw")
    assert feats.X.shape == (1797, 64)
    assert feats.X.dtype == np.float32
    varying = feats.X.std(axis=0) > 0
    np.testing.assert_allclose(feats.X.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(feats.X.std(axis=0)[varying], 1, atol=1e-3)
    # constant pixels (digit corners) stay at zero instead of dividing by zero
    assert np.isfinite(feats.X).all()
    assert (~varying).any()


def test_cache_path_is_keyed_by_dataset_backbone_and_size(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LABELWHEEL_CACHE", str(tmp_path / "env"))
    a = datasets.cache_path("lfw", "efficientnet-lite0", 32, None)
    assert a.parent == tmp_path / "env"
    assert a != datasets.cache_path("lfw", "efficientnet-lite0", 64, None)
    assert a != datasets.cache_path("digits", "efficientnet-lite0", 32, None)
    odd = datasets.cache_path("lfw", "torchvision:resnet18", 32, tmp_path)
    assert odd.parent == tmp_path and ":" not in odd.name


@pytest.mark.slow
def test_backbone_embeddings_are_cached(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    first = datasets.load_embeddings("lfw", image_size=32, cache_dir=tmp_path)
    assert first.X.shape == (200, 1280)
    assert first.X.dtype == np.float32
    assert np.isfinite(first.X).all()
    path = datasets.cache_path("lfw", "efficientnet-lite0", 32, tmp_path)
    assert path.exists()
    # a second call reads the file: prove it by planting a marker value in the cache
    with np.load(path) as npz:
        content = {k: npz[k] for k in npz.files}
    content["X"] = content["X"].copy()
    content["X"][0, 0] = 12345.0
    np.savez(path, **content)
    second = datasets.load_embeddings("lfw", image_size=32, cache_dir=tmp_path)
    assert second.X[0, 0] == 12345.0
    np.testing.assert_array_equal(second.X[1:], first.X[1:])
    # a stale fingerprint (different images) is recomputed, not trusted
    content["fingerprint"] = np.array("stale")
    np.savez(path, **content)
    third = datasets.load_embeddings("lfw", image_size=32, cache_dir=tmp_path)
    np.testing.assert_allclose(third.X, first.X, rtol=1e-4, atol=1e-4)


def test_bad_image_size_is_a_value_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="image_size"):
        datasets.load_embeddings("lfw", image_size=8, cache_dir=tmp_path)
