"""The vectors of the embedding model an index used before its last switch (vectors_prev), kept so that
`rag tune --rollback` returns to it without re-embedding, until `rag tune --drop-previous` drops them.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "vectors_prev",
        sa.Column("chunk_id", sa.Integer, sa.ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("vectors_prev")
    op.execute("DELETE FROM meta WHERE key = 'embedder_prev'")
