"""Full-text search over the chunks, each engine's own (rag/storage/fts.py and fts_postgres.py query it).

SQLite: an external-content FTS5 table kept in step by triggers (format-2 indexes made it on open, so it may
exist). PostgreSQL: a generated tsvector column with a GIN index (rag/storage/fts_postgres.py).

Revision ID: 0004
"""

from alembic import op

from rag.storage import fts, fts_postgres

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        fts.ensure_fts(conn)
    else:
        for statement in fts_postgres.DDL:
            op.execute(statement)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        for name in ("chunks_fts_insert", "chunks_fts_delete", "chunks_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS chunks_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_chunks_fts")
        op.execute("ALTER TABLE chunks DROP COLUMN IF EXISTS fts")
