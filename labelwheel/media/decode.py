"""Safe image decoding: decompression-bomb guard, full decode, EXIF orientation, RGB.

Decoding checks the pixel count from the header before decoding (decompression bombs), verifies
the file, decodes it fully (truncated files fail), applies the EXIF orientation and converts to RGB.
Every failure is an :class:`~labelwheel.media.errors.ImageError`.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from labelwheel.media.errors import ImageError

__all__ = ["decode_image", "exif_transpose"]


def exif_transpose(image: Image.Image) -> Image.Image:
    """``image`` rotated/flipped as its EXIF orientation says; unchanged if the EXIF is bad."""
    try:
        out = ImageOps.exif_transpose(image)
    except Exception:
        return image
    return out if out is not None else image


def _check_pixels(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError("not an image", "zero size")
    if width * height > max_pixels:
        raise ImageError("too many pixels", f"{width}x{height} > {max_pixels}")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageError("too many pixels") from None
    except UnidentifiedImageError:
        raise ImageError("not an image") from None
    except Exception as exc:
        raise ImageError("not an image", exc.__class__.__name__) from None
    _check_pixels(image, max_pixels)
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(image, dtype=np.float32)
        lo, hi = float(np.min(arr)), float(np.max(arr))
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes, max_pixels: int, min_size: int | None = None) -> Image.Image:
    """Decode image bytes safely into an RGB ``PIL.Image`` (EXIF orientation applied).

    ``min_size``: the caller needs only this many pixels on the shorter side, so a JPEG is
    decoded at the smallest of its 1/2, 1/4, 1/8 scales that keeps both sides at least that
    large (Pillow's ``draft``: faster and a fraction of the memory for big photos).

    Raises :class:`ImageError`: ``empty image``, ``not an image``, ``too many pixels`` (checked
    from the header, before decoding), ``corrupt or truncated``.
    """
    if not data:
        raise ImageError("empty image")
    if max_pixels <= 0:
        raise ValueError("max_pixels must be positive")
    probe = _open(data, max_pixels)
    try:
        probe.verify()
    except Image.DecompressionBombError:
        raise ImageError("too many pixels") from None
    except Exception as exc:
        raise ImageError("corrupt or truncated", exc.__class__.__name__) from None
    image = _open(data, max_pixels)
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        if min_size and image.format == "JPEG":
            image.draft("RGB", (int(min_size), int(min_size)))
        image.load()
        image = exif_transpose(image)
        _check_pixels(image, max_pixels)
        return _to_rgb(image)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError("too many pixels") from None
    except MemoryError:
        raise ImageError("too many pixels", "out of memory") from None
    except Exception as exc:
        raise ImageError("corrupt or truncated", exc.__class__.__name__) from None
