"""The index's writer lock: one writer at a time, readers never blocked."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rag.errors import IndexBusyError

LOCK_NAME = "write.lock"


class WriterLock:
    """An exclusive ``flock`` on ``DIR/write.lock``, re-entrant within this object.

    A second holder gets :class:`IndexBusyError` at once instead of waiting. The OS drops the lock when the
    holder exits, however it exits (kill -9 included), so a crash never leaves the index locked.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock_fd: int | None = None
        self._lock_depth = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        if self._lock_fd is not None:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise IndexBusyError(
                f"index {self.directory} is being written by another process{who}; wait for it to finish "
                "(searching and asking work meanwhile), or use another --index"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd
        try:
            yield
        finally:
            self._lock_fd = None
            os.close(fd)
