"""Crash-safe file writes shared by every floor (artifacts, caches, stores)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(directory: Path) -> None:
    """Flush a directory's entries to disk (so that a rename in it survives a power cut)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that refuse fsync on directories
        pass
    finally:
        os.close(fd)


def make_dirs(directory: Path, fsync: bool = True) -> None:
    """``mkdir -p`` that also makes each new directory's entry durable: the parent of every
    directory it creates is fsynced (a file renamed into a fresh directory is otherwise lost
    with that directory after a power cut)."""
    directory = Path(directory)
    missing: list[Path] = []
    here = directory
    while not here.exists():
        missing.append(here)
        if here.parent == here:
            break
        here = here.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:
            continue
        if fsync:
            fsync_dir(new.parent)
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, rename,
    fsync of the directory (and of the parents of any directory it had to create).

    ``fsync=False`` skips both flushes to disk (for caches, whose readers validate and recompute).
    """
    _atomic_write(path, lambda fh: fh.write(data), fsync)


def atomic_save_array(path: Path, array: Any, fsync: bool = False) -> None:
    """``numpy.save`` to ``path`` atomically, streamed to the temp file (no copy of a large
    array in memory). A reader that memory-maps the old file keeps reading it after the rename.
    Default ``fsync=False``: for derived data that can be computed again."""
    import numpy as np

    _atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False), fsync)


def _atomic_write(path: Path, write: Any, fsync: bool) -> None:
    make_dirs(path.parent, fsync=fsync)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if fsync:
        fsync_dir(path.parent)
