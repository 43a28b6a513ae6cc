"""The index's writer lock: one writer at a time, readers never blocked.

On SQLite it is an ``flock`` on a file in the index directory; on PostgreSQL, where writers may run on other
machines, a session-level advisory lock in the database. Either way the holder's exit (kill -9 included) drops it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from rag.errors import IndexBusyError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

LOCK_NAME = "write.lock"
# One index per database, so one key: "rag" in ASCII.
ADVISORY_KEY = 0x726167
# pg_locks rows of that lock, granted, in this database (advisory locks of other databases share the view).
_HELD = (
    "l.locktype = 'advisory' AND l.granted AND l.objid = :k "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


class WriterLock:
    """Re-entrant within this object; a second holder (another process, another object in this process, or
    another thread using this object) gets :class:`IndexBusyError` at once instead of waiting."""

    def __init__(self, where: str) -> None:
        self.where = where  # the index, as messages name it
        self._handle: Any = None
        self._owner: int | None = None  # the thread holding it
        self._guard = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[bool]:
        """Hold the lock; yields True for the outermost hold (the lock was just taken)."""
        with self._guard:
            if self._handle is not None and self._owner != threading.get_ident():
                raise IndexBusyError(
                    f"index {self.where} is being written by another thread of this process; one writer "
                    "at a time: wait for it to finish"
                )
            outermost = self._handle is None
            if outermost:
                self._handle, self._owner = self._take(), threading.get_ident()
        try:
            yield outermost
        finally:
            with self._guard:
                if outermost:
                    self._release(self._handle)
                    self._handle = self._owner = None

    def busy(self, holder: str) -> IndexBusyError:
        return IndexBusyError(
            f"index {self.where} is being written by {holder}; wait for it to finish "
            "(searching and asking work meanwhile), or use another --index"
        )

    def taken_elsewhere(self) -> bool:
        """True while some other holder writes (this object does not hold the lock)."""
        return self._handle is None and self._taken()

    def _take(self) -> Any:
        raise NotImplementedError

    def _release(self, handle: Any) -> None:
        raise NotImplementedError

    def _taken(self) -> bool:
        raise NotImplementedError


class FileLock(WriterLock):
    """An exclusive ``flock`` on ``DIR/write.lock``, which holds the holder's pid for the busy message."""

    def __init__(self, directory: Path) -> None:
        super().__init__(str(directory))
        self.path = directory / LOCK_NAME

    def _take(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if holder == str(os.getpid()):
                raise self.busy("another Index object in this process") from None
            raise self.busy("another process" + (f" (pid {holder})" if holder.isdigit() else "")) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def _release(self, handle: int) -> None:
        os.close(handle)  # closing the descriptor releases the lock

    def _taken(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a lock we took
        return False


class AdvisoryLock(WriterLock):
    """``pg_try_advisory_lock`` on a connection of its own, held while writing. The server drops the lock when
    that connection ends, so a writer killed on any machine leaves the index unlocked."""

    def __init__(self, engine: Engine, where: str) -> None:
        super().__init__(where)
        self.engine = engine

    def _take(self) -> Connection:
        conn = self.engine.connect()
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar()
        conn.commit()
        if got:
            return conn
        holder = conn.execute(
            text(f"SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE {_HELD}"),
            {"k": ADVISORY_KEY},
        ).scalar()
        conn.close()
        raise self.busy(holder or "another process")

    def _release(self, handle: Connection) -> None:
        try:
            handle.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
            handle.commit()
        finally:
            handle.close()

    def _taken(self) -> bool:
        with self.engine.connect() as conn:
            n = conn.execute(text(f"SELECT count(*) FROM pg_locks l WHERE {_HELD}"), {"k": ADVISORY_KEY}).scalar()
        return bool(n)


def application_name() -> str:
    """How a connection names its process in PostgreSQL (and so in the busy message of another writer)."""
    return f"rag pid {os.getpid()} on {socket.gethostname()}"[:63]
