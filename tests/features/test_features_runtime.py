"""The backbone on ONNX Runtime: torch's embeddings on real images, one export per weights kept
in the model cache, sessions sized to the machine, and a fallback to torch that says why."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labelwheel.features import load_backbone
from labelwheel.features.runtime import (
    INFERENCE_ENV,
    MIN_COSINE,
    inference_mode,
    inference_threads,
    make_runtime,
    model_cache_dirs,
    onnx_model_name,
    onnx_session,
    physical_cores,
    weights_digest,
)

IMAGE_SIZES = (112, 224)  # the demo / e2e size and the default


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


@pytest.fixture(scope="module")
def real_images() -> dict[str, Image.Image]:
    """Natural photos (scikit-image, scikit-learn) and MNIST digits, grey and colour."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    from labelwheel.demo_data import digit_to_rgb, load_mnist_sample

    images: dict[str, Image.Image] = {}
    for name in (
        "astronaut",
        "camera",
        "chelsea",
        "coffee",
        "coins",
        "rocket",
        "immunohistochemistry",
    ):
        images[name] = Image.fromarray(np.asarray(getattr(skimage.data, name)(), dtype=np.uint8))
    for name, arr in zip(("china", "flower"), load_sample_images().images, strict=True):
        images[name] = Image.fromarray(arr)
    digits, labels = load_mnist_sample(10, seed=3)
    for digit, label in zip(digits, labels, strict=True):
        images[f"digit-{label}"] = digit_to_rgb(digit, 112)
    return images


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty model cache of this test's own (``$LABELWHEEL_CACHE_DIR``), no ``MODEL_DIR``."""
    monkeypatch.setenv("LABELWHEEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MODEL_DIR", raising=False)
    monkeypatch.delenv(INFERENCE_ENV, raising=False)
    return tmp_path / "cache" / "models"


class SmallNet(torch.nn.Module):
    """A small convolutional extractor (exports in seconds) with seeded weights."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.a = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.b = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.relu6(self.b(torch.nn.functional.relu6(self.a(x)))).mean((2, 3))


@torch.library.custom_op("labelwheel_test::twice", mutates_args=())
def twice(x: torch.Tensor) -> torch.Tensor:
    """An operator of our own, computed in numpy: ONNX has no translation for it."""
    return torch.from_numpy(np.ascontiguousarray(x.numpy()) * 2.0)


@twice.register_fake
def _twice_shape(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class CustomOpNet(SmallNet):
    """Uses an operator the ONNX exporter cannot translate."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(twice(x))


class RandomNet(SmallNet):
    """Exports fine, but its ONNX model cannot reproduce torch's output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rand_like(super().forward(x))


def _inputs(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, size, size)).astype(np.float32)


# -- the real backbone on real images -----------------------------------------------------------


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_onnx_embeddings_equal_torch_on_real_images(
    size: int, real_images: dict[str, Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(INFERENCE_ENV, raising=False)
    fast = load_backbone("efficientnet-lite0", size, 8)  # auto: ONNX Runtime on this CPU machine
    slow = load_backbone("efficientnet-lite0", size, 8, inference="torch")
    assert fast.runtime == "onnxruntime-cpu" and slow.runtime == "torch-cpu"
    names = list(real_images)
    got = fast.embed([real_images[n] for n in names])
    want = slow.embed([real_images[n] for n in names])
    assert got.shape == want.shape == (len(names), 1280) and got.dtype == np.float32
    cos = _cosines(got, want)
    worst = names[int(cos.argmin())]
    assert cos.min() >= MIN_COSINE, f"{worst}: cosine {cos.min():.6f}"
    # The batch axis is dynamic: one image per pass gives the same vectors as 8 per pass.
    single = load_backbone("efficientnet-lite0", size, 1, inference="onnx")
    one_by_one = single.embed([real_images[n] for n in names[:5]])
    np.testing.assert_allclose(one_by_one, got[:5], rtol=1e-4, atol=1e-4)


def test_prepare_is_float32_throughout(real_images: dict[str, Image.Image]) -> None:
    net = load_backbone("efficientnet-lite0", 112, 4)
    image = real_images["chelsea"]
    arr = net.prepare(image)
    assert arr.dtype == np.float32 and arr.flags.c_contiguous and arr.shape == (3, 112, 112)
    from labelwheel.features.backbone import to_rgb_square

    pixels = np.asarray(to_rgb_square(image, 112), dtype=np.float64).transpose(2, 0, 1)
    np.testing.assert_allclose(arr, (pixels - 127.0) / 128.0, atol=1e-6)


# -- export, cache, sessions ----------------------------------------------------------------------


def test_export_is_kept_by_weights_and_size_and_reused(
    tmp_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="labelwheel.features")
    net = SmallNet(seed=1)
    first = make_runtime("small", net, 32)
    assert first.name == "onnxruntime-cpu"
    path = tmp_cache / onnx_model_name("small", 32, weights_digest(net))
    assert path.is_file() and [p.name for p in tmp_cache.iterdir()] == [path.name]
    assert any("exported to ONNX" in r.getMessage() for r in caplog.records)
    x = _inputs(5, 32)
    with torch.inference_mode():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(first.forward(x), want, rtol=1e-4, atol=1e-5)

    caplog.clear()
    stamp = path.stat().st_mtime_ns
    again = make_runtime("small", SmallNet(seed=1), 32)  # same weights, new object
    assert not any("exported to ONNX" in r.getMessage() for r in caplog.records)
    assert path.stat().st_mtime_ns == stamp and str(path) in again.detail
    np.testing.assert_allclose(again.forward(x), want, rtol=1e-4, atol=1e-5)

    other = SmallNet(seed=2)  # new weights: a new file, never the old model
    assert weights_digest(other) != weights_digest(net)
    make_runtime("small", other, 32)
    make_runtime("small", SmallNet(seed=1), 48)  # another input size: another file
    assert len(list(tmp_cache.glob("small-*.onnx"))) == 3
    assert len({onnx_model_name("small", s, weights_digest(net)) for s in (32, 48)}) == 2


def test_damaged_export_is_replaced(tmp_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    net = SmallNet(seed=3)
    make_runtime("small", net, 32)
    path = tmp_cache / onnx_model_name("small", 32, weights_digest(net))
    path.write_bytes(b"not a model")
    caplog.set_level(logging.INFO, logger="labelwheel.features")
    runtime = make_runtime("small", net, 32)
    assert runtime.name == "onnxruntime-cpu"
    assert any("unusable" in r.getMessage() for r in caplog.records)
    assert path.stat().st_size > 1000
    onnx_session(path)  # loads again


def test_model_dir_holds_the_export_when_the_user_cache_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("LABELWHEEL_CACHE_DIR", str(blocker))
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "model_dir"))
    assert model_cache_dirs() == [blocker / "models", tmp_path / "model_dir" / "models"]
    net = SmallNet(seed=4)
    runtime = make_runtime("small", net, 32, inference="onnx")
    kept = tmp_path / "model_dir" / "models" / onnx_model_name("small", 32, weights_digest(net))
    assert kept.is_file() and str(kept) in runtime.detail


def test_session_uses_the_physical_cores_and_every_optimisation(
    tmp_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    cores = physical_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert inference_threads() == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert inference_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    assert inference_threads() == cores
    monkeypatch.delenv("OMP_NUM_THREADS")
    net = SmallNet(seed=5)
    make_runtime("small", net, 32)
    session = onnx_session(tmp_cache / onnx_model_name("small", 32, weights_digest(net)))
    options = session.get_session_options()
    assert options.intra_op_num_threads == cores
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_inputs()[0].shape[0] not in (1, 2)  # a named, dynamic batch axis


# -- choosing the runtime --------------------------------------------------------------------------


def test_unexportable_model_falls_back_to_torch_and_says_why(
    tmp_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="labelwheel.features")
    net = CustomOpNet(seed=6)
    runtime = make_runtime("custom-op-net", net, 32)
    assert runtime.name == "torch-cpu" and "fallback" in runtime.detail
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "cannot run on ONNX Runtime" in w and "labelwheel_test.twice" in w and "using torch" in w
        for w in warnings
    ), warnings
    assert not tmp_cache.exists() or not any(tmp_cache.iterdir())
    x = _inputs(3, 32)
    with torch.inference_mode():
        np.testing.assert_allclose(runtime.forward(x), net(torch.from_numpy(x)).numpy())
    with pytest.raises(ValueError, match=f"{INFERENCE_ENV}=onnx"):
        make_runtime("custom-op-net", net, 32, inference="onnx")


def test_export_that_does_not_match_torch_is_never_served(
    tmp_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="labelwheel.features")
    runtime = make_runtime("random-net", RandomNet(seed=8), 32)
    assert runtime.name == "torch-cpu"
    assert any("differs from torch" in r.getMessage() for r in caplog.records)
    assert not tmp_cache.exists() or not any(tmp_cache.iterdir())  # nothing kept


def test_inference_mode_from_argument_or_environment(
    tmp_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert inference_mode() == "auto"
    monkeypatch.setenv(INFERENCE_ENV, " Torch ")
    assert inference_mode() == "torch"
    assert make_runtime("small", SmallNet(seed=7), 32).name == "torch-cpu"
    assert not tmp_cache.exists()  # torch asked for: nothing exported
    assert inference_mode("onnx") == "onnx"
    monkeypatch.setenv(INFERENCE_ENV, "gpu")
    with pytest.raises(ValueError, match=f"{INFERENCE_ENV} must be one of auto, torch, onnx"):
        load_backbone("efficientnet-lite0", 112)


def test_backend_setting_is_validated() -> None:
    from labelwheel.ml_backend.config import ConfigError, Settings

    assert Settings.from_env({}).inference == "auto"
    assert Settings.from_env({INFERENCE_ENV: "onnx"}).inference == "onnx"
    with pytest.raises(ConfigError, match=INFERENCE_ENV):
        Settings.from_env({INFERENCE_ENV: "tensorrt"})
