"""Schema changes of the store, as Alembic migrations that run on SQLite and PostgreSQL alike.

Every open compares the database's revision with :data:`HEAD` in one query; only a database behind it imports
Alembic and upgrades. Indexes made before Alembic carry no revision: their meta ``format_version`` says which
revision they match (1: ``0001``, 2: ``0002``), they are stamped with it and upgraded from there. To change the
schema, add ``versions/NNNN_what.py`` with ``down_revision`` the current head, and set :data:`HEAD` to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

HEAD = "0005"
# The revision an index made before Alembic matches, by its meta format_version.
LEGACY_REVISIONS = {1: "0001", 2: "0002"}
VERSION_TABLE = "alembic_version"


def revision(conn: Connection) -> str | None:
    """The database's revision; None when it has none (empty, or made before Alembic)."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def known(rev: str) -> bool:
    """True when this version of the tool has revision ``rev`` (a newer tool may have written a later one)."""
    return any(p.name.startswith(f"{rev}_") for p in (Path(__file__).parent / "versions").glob("*.py"))


def alembic_config(conn: Connection) -> AlembicConfig:
    """Alembic's configuration for running these migrations on ``conn`` (``alembic.command`` takes it)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["connection"] = conn
    return config


def upgrade(conn: Connection, *, stamp: str | None = None) -> None:
    """Bring the database on ``conn`` to :data:`HEAD`; ``stamp`` first records the revision a database made
    before Alembic matches. The caller holds the writer lock and owns the transaction."""
    from alembic import command

    config = alembic_config(conn)
    if stamp is not None:
        command.stamp(config, stamp)
    command.upgrade(config, HEAD)
