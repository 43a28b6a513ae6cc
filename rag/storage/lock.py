"""The index's writer lock: one writer at a time, readers never blocked."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rag.errors import IndexBusyError

LOCK_NAME = "write.lock"


class WriterLock:
    """An exclusive ``flock`` on ``DIR/write.lock``, re-entrant within this object.

    A second holder (another process, another object in this process, or another thread using this object) gets
    :class:`IndexBusyError` at once instead of waiting. The OS drops the lock when the holder exits, however it
    exits (kill -9 included), so a crash never leaves the index locked.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock_fd: int | None = None
        self._owner: int | None = None  # the thread holding it
        self._guard = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[bool]:
        """Hold the lock; yields True for the outermost hold (the lock was just taken)."""
        with self._guard:
            if self._lock_fd is not None and self._owner != threading.get_ident():
                raise IndexBusyError(
                    f"index {self.directory} is being written by another thread of this process; one writer "
                    "at a time: wait for it to finish"
                )
            outermost = self._lock_fd is None
            if outermost:
                self._lock_fd, self._owner = self._take(), threading.get_ident()
        try:
            yield outermost
        finally:
            with self._guard:
                if outermost:
                    os.close(self._lock_fd)  # closing the descriptor releases the lock
                    self._lock_fd = self._owner = None

    def _take(self) -> int:
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if holder == str(os.getpid()):
                who = "another Index object in this process"
            else:
                who = "another process" + (f" (pid {holder})" if holder.isdigit() else "")
            raise IndexBusyError(
                f"index {self.directory} is being written by {who}; wait for it to finish "
                "(searching and asking work meanwhile), or use another --index"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def taken_elsewhere(self) -> bool:
        """True while some other holder writes (this object does not hold the lock)."""
        if self._lock_fd is not None:
            return False
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a lock we took
        return False
