""".npy and .npz reads that are safe from many threads at once.

numpy reads every ``.npy`` header (the dict at the start of the file, in ``.npz`` members too)
with ``ast.literal_eval``. On CPython 3.11 the AST constructor keeps its recursion depth in
state shared by all threads (python/cpython#106905), so two threads parsing at once can fail
with ``SystemError: AST constructor recursion depth mismatch``. The backend reads embeddings in
fetch threads while its worker trains and Flask serves requests, so every ``numpy.load`` in
labelwheel goes through here:

- :func:`array_from_npy` reads the small per-image cache files with no AST at all: a header is
  parsed once (under the lock) and later files with the same header are matched byte for byte;
- :func:`load_npy` and :func:`load_npz` serialise numpy's own reader with one lock, which is
  held only while a header is parsed or a small file read (memory maps read the header only).
"""

from __future__ import annotations

import io
import os
import threading
from typing import Literal

import numpy as np

__all__ = ["array_from_npy", "load_npy", "load_npz"]

_LOCK = threading.Lock()
_MAGIC = b"\x93NUMPY"
_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], bool]] = {}
_MAX_HEADERS = 256


def load_npy(
    path: str | os.PathLike[str], mmap_mode: Literal["r", "r+", "c"] | None = None
) -> np.ndarray:
    """``numpy.load`` of one ``.npy`` file (no pickles), one thread at a time."""
    with _LOCK:
        arr = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{os.fspath(path)} is not a .npy file")
    return arr


def load_npz(
    path: str | os.PathLike[str], keys: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (all, or those of ``keys`` it has), read into memory one
    thread at a time. Raises ``ValueError`` for a file that is not an ``.npz`` archive."""
    with _LOCK:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError(f"{os.fspath(path)} is not an .npz file")
        with npz:
            return {k: np.asarray(npz[k]) for k in npz.files if keys is None or k in keys}


def _parse_header(head: bytes, major: int) -> tuple[np.dtype, tuple[int, ...], bool]:
    parsed = _HEADERS.get(head)
    if parsed is not None:
        return parsed
    with _LOCK:
        fp = io.BytesIO(head)
        np.lib.format.read_magic(fp)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        if dtype.hasobject:
            raise ValueError("the array holds Python objects (pickles are not read)")
        parsed = (dtype, tuple(int(n) for n in shape), bool(fortran))
        if len(_HEADERS) >= _MAX_HEADERS:
            _HEADERS.clear()
        _HEADERS[head] = parsed
    return parsed


def array_from_npy(data: bytes) -> np.ndarray:
    """The array in a whole ``.npy`` file's bytes, without copying them (read-only).

    Raises ``ValueError`` for anything that is not a complete ``.npy`` file of plain numbers.
    """
    if data[:6] != _MAGIC or len(data) < 10:
        raise ValueError("not a .npy file")
    major = data[6]
    if major == 1:
        start = 10 + int.from_bytes(data[8:10], "little")
    elif major == 2:
        start = 12 + int.from_bytes(data[8:12], "little")
    else:
        raise ValueError(f"unknown .npy format version {major}")
    if len(data) < start:
        raise ValueError("the .npy header is cut short")
    dtype, shape, fortran = _parse_header(bytes(data[:start]), major)
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - start != count * dtype.itemsize:
        raise ValueError(
            f"the .npy file holds {len(data) - start} bytes of data, not {count * dtype.itemsize}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=start)
    return arr.reshape(shape, order="F" if fortran else "C")
