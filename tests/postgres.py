"""A real PostgreSQL server for the tests: initdb and pg_ctl into a temporary directory, listening on a loopback
port only, stopped when the session ends. As root (CI), the server runs as the `postgres` user: PostgreSQL
refuses to run as root."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement through psql (a client apart from the code under test)."""
        out = subprocess.run(
            [
                _binary("psql"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database,
                "-tAc",
                statement,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise FileNotFoundError(name)
    return found


def missing() -> str | None:
    """Why no server can be started here, or None."""
    for name in ("initdb", "pg_ctl", "psql"):
        try:
            _binary(name)
        except FileNotFoundError:
            return f"no PostgreSQL {name} on this machine (Debian: apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running() -> Iterator[Server]:
    """A fresh server for as long as the block runs."""
    root = Path(tempfile.mkdtemp(prefix="rag-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    subprocess.run(
        [*as_user, _binary("initdb"), "-D", str(data), "-A", "trust", "-U", "rag", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
    )
    # fsync off: the tests kill writers, not the machine, so durability across power loss is not under test.
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200"
    start = [*as_user, _binary("pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o", options, "start"]
    subprocess.run(start, check=True, capture_output=True)
    try:
        yield Server("127.0.0.1", port, "rag")
    finally:
        subprocess.run([*as_user, _binary("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def maybe_running(wanted: bool) -> Iterator[Server | None]:
    """A server when ``wanted`` (and one can run here), else None."""
    if not wanted or missing():
        yield None
        return
    with running() as server:
        yield server
