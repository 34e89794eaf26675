"""Local image files (a folder a data lead points the tools at)."""

from __future__ import annotations

from pathlib import Path

from labelwheel.media.errors import ImageError

DEFAULT_MAX_BYTES = 20 * 2**20


def read_file(path: Path | str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a local file, refusing files over ``max_bytes``; raises ImageError."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError("too large", f"{size} bytes")
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise ImageError("not found", path.name) from None
    except OSError:
        raise ImageError("not readable", path.name) from None
    if len(data) > max_bytes:
        raise ImageError("too large", f"over {max_bytes} bytes")
    if not data:
        raise ImageError("empty image")
    return data
