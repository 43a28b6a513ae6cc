"""The SQLite engine under the store: its pragmas, typed failures, read-only opening, and creating a database."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from rag.errors import IndexWriteError
from rag.storage import failures, fts
from rag.storage.schema import DB_NAME, FORMAT_VERSION, Base, MetaRow


def connect(db: Path) -> Engine:
    """An engine on ``db``; read-only when the disk is too full for SQLite to create its WAL files, so that
    searching still works (and any write says the disk is full)."""
    engine = _engine(db)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master")
    except IndexWriteError:
        if not failures.no_space(db.parent):
            raise
        engine.dispose()
        engine = _engine(db, writable=False)
    return engine


def _engine(db: Path, writable: bool | None = None) -> Engine:
    # A directory this process cannot write to (a shared, read-only index) is opened read-only and immutable:
    # WAL readers otherwise need to create the -shm file next to the database.
    writable = os.access(db.parent, os.W_OK) if writable is None else writable
    url = f"sqlite:///{db}"
    if not writable:  # immutable only when no write-ahead log is left over (it would then be ignored)
        wal = Path(f"{db}-wal")
        url = f"sqlite:///file:{db}?mode=ro&uri=true" + ("" if wal.is_file() and wal.stat().st_size else "&immutable=1")
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "handle_error")
    def _typed(context) -> None:  # type: ignore[no-untyped-def]
        typed = failures.translate(db.parent, context.original_exception)
        if typed is not None:
            raise typed from None

    @event.listens_for(engine, "connect")
    def _pragmas(conn, _record) -> None:  # type: ignore[no-untyped-def]
        cur = conn.cursor()
        # WAL: readers keep reading the last committed state while a writer works.
        if writable:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()
        # Path filters use fnmatch semantics in SQL as in Python (SQLite's own GLOB differs on [!...]).
        conn.create_function("rag_glob", 2, fts.path_matches, deterministic=True)

    return engine


def create_database(directory: Path) -> None:
    """A new, empty index in ``directory``, made beside it and linked into place, so that two processes creating
    one at the same moment both end up opening the same complete database."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f"{DB_NAME}.new-{os.getpid()}-{threading.get_ident()}"
        engine = _engine(tmp)
        try:
            Base.metadata.create_all(engine)
            with engine.begin() as conn:
                fts.ensure_fts(conn)
            with Session(engine) as s, s.begin():
                for key, value in {
                    "format_version": FORMAT_VERSION,
                    "generation": 0,
                    "created_at": time.time(),
                }.items():
                    s.add(MetaRow(key=key, value=json.dumps(value)))
        finally:
            engine.dispose()
        try:
            os.link(tmp, directory / DB_NAME)  # atomic, and fails if another process linked its own first
        except FileExistsError:
            pass
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)
    except OSError as e:
        what = "is not a directory" if isinstance(e, (FileExistsError, NotADirectoryError)) else f"({e.strerror})"
        raise IndexWriteError(
            f"cannot create an index at {directory}: {what}; pass --index a writable directory"
        ) from None
