"""The two stores the contract tests run over: SQLite in the index directory, and a real PostgreSQL database
(a new one per index, on the session's server)."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from rag import Config
from tests.postgres import Server

_names = itertools.count()


def copy_index(source: Path, dest: Path) -> None:
    """Copies an index directory that this process may hold open. The database goes through SQLite's backup:
    opening and closing its file any other way would drop this process's POSIX locks on it, and the next writer
    would then delete a write-ahead log still in use here (a "malformed" database later)."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("index.db", "index.db-*"))
    if (source / "index.db").is_file():
        with sqlite3.connect(source / "index.db") as src, sqlite3.connect(dest / "index.db") as dst:
            src.backup(dst)
        src.close()
        dst.close()


@dataclass(frozen=True)
class Location:
    """Where one index lives: its directory, and its PostgreSQL URL when it has one."""

    directory: Path
    url: str | None = None

    def config(self, cache_dir: Path, **settings: object) -> Config:
        return Config.load(index=self.directory, store=self.url, cache_dir=cache_dir, **settings)

    def args(self) -> list[str]:
        """The CLI's global options for this index."""
        return ["--index", str(self.directory), *(["--store", self.url] if self.url else [])]

    @property
    def database(self) -> str:
        """The PostgreSQL database's name."""
        assert self.url is not None, "an SQLite index has no database name"
        return self.url.rsplit("/", 1)[1]

    def elsewhere(self, directory: Path) -> Location:
        """The same index seen from another machine: its own cache directory, the same database."""
        assert self.url is not None, "an SQLite index has one directory"
        return Location(directory, self.url)


@dataclass(frozen=True)
class Backend:
    name: str  # sqlite | postgresql
    server: Server | None = None

    def new(self, directory: Path) -> Location:
        """A location for a new, empty index (the caller creates it by opening with ``create``)."""
        if self.server is None:
            return Location(directory)
        name = f"idx_{next(_names)}"
        self.server.sql(f"CREATE DATABASE {name}")
        return Location(directory, self.server.url(name))

    def copy(self, source: Location, directory: Path) -> Location:
        """An independent copy of the index at ``source`` (which nothing may hold open)."""
        if self.server is None:
            copy_index(source.directory, directory)
            return Location(directory)
        name = f"idx_{next(_names)}"
        self.server.sql(f"CREATE DATABASE {name} TEMPLATE {source.database}")
        copy_index(source.directory, directory)
        return Location(directory, self.server.url(name))
