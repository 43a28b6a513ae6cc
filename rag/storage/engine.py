"""The engines under the store: SQLite (its pragmas, typed failures, read-only opening) or PostgreSQL, and creating
a database on either, through the migrations."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError

from rag.config import redact_url
from rag.errors import ConfigError, IndexWriteError, StoreUnavailableError
from rag.storage import failures, fts, migrations
from rag.storage.lock import ADVISORY_KEY, application_name
from rag.storage.schema import DB_NAME, FORMAT_VERSION

# Held for the transaction that creates or upgrades a PostgreSQL schema (the writer lock has ADVISORY_KEY).
SCHEMA_KEY = ADVISORY_KEY + 1


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
            with engine.begin() as conn:
                _create_schema(conn)
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


def _create_schema(conn: Connection) -> None:
    migrations.upgrade(conn)
    initial = {"format_version": FORMAT_VERSION, "generation": 0, "created_at": time.time()}
    for key, value in initial.items():
        conn.execute(text("INSERT INTO meta (key, value) VALUES (:k, :v)"), {"k": key, "v": json.dumps(value)})


# --- PostgreSQL ---------------------------------------------------------------------------------------------------


def store_url(url: str) -> str:
    """``url`` with psycopg as the driver (``postgresql://`` names no driver; SQLAlchemy's default is psycopg2)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"--store {redact_url(url)!r} is not a database URL; use postgresql://USER@HOST:PORT/DATABASE"
        ) from None
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(f"--store {parsed.get_backend_name()!r}: only postgresql:// URLs (the default is SQLite)")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def connect_store(url: str) -> Engine:
    """An engine on the PostgreSQL database at ``url``; a server that cannot be reached, or that refuses the
    connection, raises :class:`StoreUnavailableError` naming the URL (without its password)."""
    where = redact_url(url)
    engine = create_engine(
        store_url(url),
        pool_pre_ping=True,  # a reader outlives server restarts
        connect_args={"application_name": application_name(), "connect_timeout": 10},
    )

    @event.listens_for(engine, "handle_error")
    def _typed(context) -> None:  # type: ignore[no-untyped-def]
        error = context.original_exception
        state = getattr(error, "sqlstate", None)
        if state == "53100":
            raise IndexWriteError(
                f"the PostgreSQL server of {where} is out of disk space; free some there and run the command again "
                "(the index is as it was before this write)"
            ) from None
        # No SQLSTATE: the connection itself failed. 08: connection, 28: authorisation, 3D: no such database,
        # 57P: the server is shutting down.
        if context.is_disconnect or (
            type(error).__name__ == "OperationalError" and (state is None or state[:2] in ("08", "28", "3D", "57"))
        ):
            detail = " ".join(str(error).split())[:160]
            raise StoreUnavailableError(
                f"cannot use the store {where} ({detail}); check that the server runs and the URL in --store or "
                "RAG_STORE"
            ) from None

    return engine


def store_exists(engine: Engine) -> bool:
    with engine.connect() as conn:
        return inspect(conn).has_table("meta") and conn.execute(text("SELECT count(*) FROM meta")).scalar() > 0


def create_store(engine: Engine) -> None:
    """A new, empty index in the PostgreSQL database; two processes creating it at once both end up with one."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_KEY})
        if not inspect(conn).has_table("meta"):
            _create_schema(conn)


def upgrade(engine: Engine, stamp: str | None) -> None:
    """Run the migrations the database lacks, in one transaction (PostgreSQL's DDL is transactional)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_KEY})
            if migrations.revision(conn) == migrations.HEAD:  # another process upgraded it while we waited
                return
        migrations.upgrade(conn, stamp=stamp)
