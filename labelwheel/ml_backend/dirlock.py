"""One process per ``MODEL_DIR``: an exclusive OS file lock, released when the process dies.

The backend keeps its state (SQLite, artifacts, version numbers, the durable training queue) in
``MODEL_DIR`` and assumes it is the only writer: two processes would both number the next
version ``v3``, both replay the training queue and both overwrite ``v3.pkl``. So a backend
process takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``MODEL_DIR/labelwheel.lock`` before it
touches anything, and a second process fails at start-up with :class:`ModelDirInUse` (a
:class:`~labelwheel.ml_backend.config.ConfigError`: ``labelwheel serve`` exits 2 with the
message; a gunicorn worker fails to boot with it). The kernel drops the lock when the holder
exits, ``kill -9`` included, so a stale lock file never blocks a restart.

Read-only tools (``labelwheel lead ...``) open the database without this lock: SQLite's WAL
lets them read while the backend writes.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from labelwheel.ml_backend.config import ConfigError

__all__ = ["LOCK_NAME", "ModelDirInUse", "ModelDirLock"]

LOCK_NAME = "labelwheel.lock"


class ModelDirInUse(ConfigError):
    """Another live process holds the ``MODEL_DIR`` lock."""


class ModelDirLock:
    """The exclusive lock of one ``MODEL_DIR``, held until :meth:`release` or process exit."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        self.path = self.model_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`ModelDirInUse` naming the directory and the holder."""
        if self._fd is not None:
            return
        self.model_dir.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC (Python's default): the training process and other children never hold it
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ModelDirInUse(
                f"MODEL_DIR {str(self.model_dir)!r} is in use by another labelwheel backend "
                f"process{holder}. One MODEL_DIR belongs to one process: run gunicorn with "
                "-w 1 (use --threads for concurrency), or give each backend its own MODEL_DIR."
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {time.time():.0f}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (also dropped by the kernel when the process exits)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


HOLDER_WAIT_S = 1.0
"""How long a process that lost the lock waits for the holder to write its pid: the holder
writes it right after taking the lock, and on a loaded machine the loser can read in between."""


def _read_holder(fd: int) -> str:
    deadline = time.monotonic() + HOLDER_WAIT_S
    while True:
        try:
            text = os.pread(fd, 64, 0).decode("ascii", "replace").split()
        except OSError:
            return ""
        if text and text[0].isdigit():
            break
        if time.monotonic() >= deadline:
            return ""
        time.sleep(0.01)
    since = ""
    if len(text) > 1 and text[1].isdigit():
        since = ", since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(text[1])))
    return f" (pid {text[0]}{since})"
