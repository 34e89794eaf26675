"""Safe image decoding: decompression-bomb guard, full decode, EXIF orientation, RGB.

Decoding checks the pixel count from the header before decoding (decompression bombs), verifies
the file, decodes it fully (truncated files fail), applies the EXIF orientation and converts to RGB.
Every failure is an :class:`~labelwheel.media.errors.ImageError`.

Memory: a decoded image takes about 4 bytes per pixel (100 MB for 25 megapixels) however small
its file. So full-size decodes are bounded for the whole process by a :class:`PixelBudget`
(:data:`DECODE_BUDGET`, 40 megapixels by default): a decode waits until its pixels fit, and an
image larger than the budget decodes alone. A caller that needs only ``min_size`` pixels on the
shorter side gets the image shrunk right after decoding (JPEG: decoded at 1/2, 1/4 or 1/8 scale by
Pillow's ``draft``; other formats: ``Image.reduce``), and the full-size pixels are freed before
the budget is released. So the memory decoding needs depends neither on how many images a caller
decodes at once nor on their resolution.

Both reductions keep the shorter side at least ``2 * min_size``, so the final resize to the
backbone's input still has a step of 2x or more and gives the embedding of the full-size path:
a JPEG drafted only down to ``min_size`` (an 8x DCT scale for a 2000 px photo at 224 px) moved
the embedding of real photos to cosine 0.98 of the full decode's, drafted to ``2 * min_size``
it stays at 0.999 (``tests/features/test_features_pipeline.py``), at a third of the full
decode's time. Pixels stay uint8 until the backbone's float32 input; nothing here makes float64.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import threading
from collections.abc import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from labelwheel.media.errors import ImageError

__all__ = [
    "DECODE_BUDGET",
    "DEFAULT_DECODE_BUDGET_PIXELS",
    "PixelBudget",
    "decode_image",
    "exif_transpose",
    "shrink_for",
]

DEFAULT_DECODE_BUDGET_PIXELS = 40_000_000
"""Full-size pixels decoded at once in one process (about 4 bytes each, plus a copy at most)."""


class PixelBudget:
    """A counting semaphore of pixels: full-size decodes in flight never hold more than
    ``total`` pixels together (one image larger than ``total`` runs alone)."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"a pixel budget must be positive, got {total}")
        self.total = int(total)
        self._free = self.total
        self._cond = threading.Condition()
        self.peak_in_use = 0

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Hold ``min(pixels, total)`` of the budget for the ``with`` block (waits until free)."""
        need = max(1, min(int(pixels), self.total))
        with self._cond:
            self._cond.wait_for(lambda: self._free >= need)
            self._free -= need
            self.peak_in_use = max(self.peak_in_use, self.total - self._free)
        try:
            yield
        finally:
            with self._cond:
                self._free += need
                self._cond.notify_all()

    @property
    def in_use(self) -> int:
        """Pixels held right now."""
        with self._cond:
            return self.total - self._free


DECODE_BUDGET = PixelBudget(DEFAULT_DECODE_BUDGET_PIXELS)
"""The process's budget of full-size pixels being decoded (see the module doc)."""

_MALLOC_TUNED = False
_MALLOC_LOCK = threading.Lock()
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
_MMAP_THRESHOLD_BYTES = 4 * 2**20


def _return_big_buffers_to_the_system() -> None:
    """With glibc, serve every allocation of 4 MiB or more (Pillow allocates image memory in
    blocks of up to 16 MiB) by its own mapping, given back to the system when freed. glibc's
    default raises this threshold as large blocks are freed, after which a full-size image's
    blocks come from per-thread heaps that keep their memory: each decoding thread would then
    hold on to the memory of its largest image. Called once, on the first decode."""
    global _MALLOC_TUNED
    with _MALLOC_LOCK:
        if _MALLOC_TUNED:
            return
        _MALLOC_TUNED = True
        name = ctypes.util.find_library("c")
        if not name:
            return
        try:
            libc = ctypes.CDLL(name)
            if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version"):
                libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
        except OSError:
            pass


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


_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 when absent or unreadable)."""
    try:
        value = image.getexif().get(0x0112, 1)
        return int(value) if isinstance(value, int) else 1
    except Exception:
        return 1


def exif_transpose(image: Image.Image) -> Image.Image:
    """``image`` rotated/flipped as its EXIF orientation says; ``image`` itself, not a copy, when
    there is nothing to turn or the EXIF is bad (Pillow's ``ImageOps.exif_transpose`` copies the
    whole image then: 0.1 ms of a 500 px photo's 2 ms decode, for nothing)."""
    turn = _ORIENTATION.get(_orientation(image))
    if turn is None:
        return image
    try:
        return image.transpose(turn)
    except Exception:
        return image


_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F")


def shrink_for(image: Image.Image, min_size: int) -> Image.Image:
    """``image`` box-reduced by the largest integer factor that keeps its shorter side at least
    twice ``min_size`` (the final resize then has at most a 2x step: same quality as resizing the
    full image, a fraction of the memory). Unchanged if already small enough."""
    factor = min(image.size) // (2 * max(1, int(min_size)))
    if factor < 2:
        return image
    if image.mode not in _REDUCIBLE:  # palette, 1-bit, 16-bit: convert first (averaging
        image = _to_rgb(image)  # palette indices would be meaningless)
    return image.reduce(factor)


def decode_image(
    data: bytes,
    max_pixels: int,
    min_size: int | None = None,
    budget: PixelBudget | None = None,
) -> Image.Image:
    """Decode image bytes safely into an RGB ``PIL.Image`` (EXIF orientation applied).

    ``min_size``: the caller needs only this many pixels on the shorter side, so a JPEG is
    decoded at the smallest of its 1/2, 1/4, 1/8 scales that keeps both sides at least twice
    that (Pillow's ``draft``: faster and a fraction of the memory for big photos), and any image
    is then reduced (:func:`shrink_for`) before the full-size pixels are freed.

    ``budget`` (default :data:`DECODE_BUDGET`): the decode holds the image's pixel count of it
    from before the full-size decode until only the result is left.

    Raises :class:`ImageError`: ``empty image``, ``not an image``, ``too many pixels`` (checked
    from the header, before decoding), ``corrupt or truncated``.
    """
    if not data:
        raise ImageError("empty image")
    if max_pixels <= 0:
        raise ValueError("max_pixels must be positive")
    _return_big_buffers_to_the_system()
    probe = _open(data, max_pixels)
    try:
        probe.verify()
    except Image.DecompressionBombError:
        raise ImageError("too many pixels") from None
    except Exception as exc:
        raise ImageError("corrupt or truncated", exc.__class__.__name__) from None
    del probe
    image = _open(data, max_pixels)
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        if min_size and image.format == "JPEG":
            # twice the size wanted, like shrink_for: see the module doc
            keep = 2 * int(min_size)
            image.draft("RGB", (keep, keep))
        width, height = image.size  # after draft: the size that will be decoded
        with (budget or DECODE_BUDGET).hold(width * height):
            image.load()
            full = image
            if min_size:
                image = shrink_for(image, int(min_size))
            if image is full:
                image = exif_transpose(image)
            else:  # the orientation is read from the full image's metadata
                turn = _ORIENTATION.get(_orientation(full))
                del full  # free the full-size pixels before anything else
                if turn is not None:
                    image = image.transpose(turn)
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
