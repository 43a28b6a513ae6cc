"""Format 2: each document's chunker label, one chunk per (document, ordinal), and the vectors of a new
embedding model built beside the current ones (vectors_next).

Documents of a format-1 index were all cut with the settings in its meta, so they keep their chunks and vectors
under that label.

Revision ID: 0002
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    conn = op.get_bind()
    stored = conn.execute(sa.text("SELECT value FROM meta WHERE key = 'chunker'")).scalar()
    c = json.loads(stored) if stored else {}
    label = f"t{c.get('chunk_tokens')}-o{c.get('chunk_overlap')}-m{c.get('max_tokens')}-v{c.get('version')}"
    op.add_column("documents", sa.Column("chunker", sa.String, nullable=False, server_default=""))
    conn.execute(sa.text("UPDATE documents SET chunker = :label"), {"label": label})
    op.create_index("uq_chunks_doc_ordinal", "chunks", ["document_id", "ordinal"], unique=True)
    op.create_table(
        "vectors_next",
        sa.Column("chunk_id", sa.Integer, sa.ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    conn.execute(sa.text("UPDATE meta SET value = '2' WHERE key = 'format_version'"))


def downgrade() -> None:
    op.drop_table("vectors_next")
    op.drop_index("uq_chunks_doc_ordinal", "chunks")
    op.drop_column("documents", "chunker")
