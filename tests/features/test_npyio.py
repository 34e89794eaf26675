"""labelwheel.npyio: .npy/.npz reads that many threads can do at once."""

from __future__ import annotations

import gc
import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from labelwheel.features.cache import EmbeddingCache
from labelwheel.npyio import array_from_npy, load_npy, load_npz


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(1280, dtype=np.float32),
        np.arange(12, dtype=np.float64).reshape(3, 4),
        np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
        np.zeros((0, 5), dtype=np.float32),
        np.array(3.5, dtype=">f8"),
    ],
)
def test_array_from_npy_reads_what_numpy_writes(arr: np.ndarray) -> None:
    data = _npy_bytes(arr)
    got = array_from_npy(data)
    np.testing.assert_array_equal(got, np.load(io.BytesIO(data)))
    assert got.dtype == arr.dtype and got.shape == arr.shape
    # The same header again is matched, not parsed; the values are still this file's.
    again = array_from_npy(_npy_bytes(arr + 1))
    np.testing.assert_array_equal(again, arr + 1)


def test_array_from_npy_reads_version_2_headers() -> None:
    arr = np.arange(6, dtype=np.float32)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=(2, 0))
    np.testing.assert_array_equal(array_from_npy(buf.getvalue()), arr)


def test_array_from_npy_refuses_damaged_files() -> None:
    data = _npy_bytes(np.arange(10, dtype=np.float32))
    with pytest.raises(ValueError, match="bytes of data"):
        array_from_npy(data[:-1])  # cut short
    with pytest.raises(ValueError, match="bytes of data"):
        array_from_npy(data + b"\0")  # trailing bytes
    with pytest.raises(ValueError, match=r"not a \.npy"):
        array_from_npy(b"PK\x03\x04" + data)
    with pytest.raises(ValueError, match="header"):
        array_from_npy(data[:20])
    with pytest.raises(ValueError):
        array_from_npy(data[:6] + b"\x09\x00" + data[8:])  # unknown version
    with pytest.raises(ValueError, match="objects"):
        array_from_npy(_npy_bytes(np.array([{"a": 1}], dtype=object)))


def test_load_npz_reads_the_keys_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    np.savez(path, X=np.ones((2, 3)), y=np.arange(2), other=np.zeros(1))
    got = load_npz(path, keys=("X", "y", "missing"))
    assert sorted(got) == ["X", "y"]
    np.testing.assert_array_equal(got["X"], np.ones((2, 3)))
    assert sorted(load_npz(path)) == ["X", "other", "y"]
    np.save(tmp_path / "b.npy", np.arange(3))
    with pytest.raises(ValueError, match=r"not an \.npz"):
        load_npz(tmp_path / "b.npy")
    with pytest.raises(ValueError, match=r"not a \.npy"):
        load_npy(path)


@pytest.fixture
def switchy_gc() -> Iterator[None]:
    """Collections often, each one handing the GIL to another thread: the interleaving in
    which CPython 3.11's AST constructor (numpy's header reader) mixes up two threads'
    recursion depths (python/cpython#106905). Under it, 4 threads of plain ``numpy.load``
    fail tens of times in 12,000 loads on 3.11.7."""

    def yield_gil(phase: str, info: dict[str, int]) -> None:
        time.sleep(0)

    threshold = gc.get_threshold()
    gc.callbacks.append(yield_gil)
    gc.set_threshold(20)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(yield_gil)


def _hammer(load: Callable[[], object], threads: int = 4, each: int = 3000) -> list[BaseException]:
    errors: list[BaseException] = []

    def work() -> None:
        for _ in range(each):
            try:
                load()
            except Exception as exc:  # every failure is counted
                errors.append(exc)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return errors


@pytest.mark.usefixtures("switchy_gc")
def test_loads_from_many_threads_never_trip_the_ast_race(tmp_path: Path) -> None:
    vec = np.arange(1280, dtype=np.float32)
    np.save(tmp_path / "v.npy", vec)
    np.savez(tmp_path / "s.npz", mean=vec, scale=vec)
    data = _npy_bytes(vec)
    cache = EmbeddingCache(tmp_path / "cache", "b", 224, memory_items=0)
    cache.write("ab" * 32, vec)

    def mixed() -> None:
        load_npy(tmp_path / "v.npy")
        load_npy(tmp_path / "v.npy", mmap_mode="r")
        load_npz(tmp_path / "s.npz")
        array_from_npy(data)
        got = cache.get("ab" * 32)
        assert got is not None and got[-1] == 1279

    assert _hammer(mixed, each=400) == []
