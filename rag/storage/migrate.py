"""Format upgrades of an existing index, in place."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from rag.storage.schema import FORMAT_VERSION, Base


def upgrade_from_1(engine: Engine, meta: dict[str, Any]) -> None:
    """Format 1 lacked the per-document chunker label, the (document, ordinal) uniqueness and vectors_next.
    Its documents were all cut with the settings in its meta, so they keep their chunks and vectors. The caller
    holds the writer lock; ``meta`` is updated in place."""
    c = meta.get("chunker") or {}
    label = f"t{c.get('chunk_tokens')}-o{c.get('chunk_overlap')}-m{c.get('max_tokens')}-v{c.get('version')}"
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE documents ADD COLUMN chunker VARCHAR NOT NULL DEFAULT ''"))
        conn.execute(text("UPDATE documents SET chunker = :label"), {"label": label})
        conn.execute(text("CREATE UNIQUE INDEX IF NOT EXISTS uq_chunks_doc_ordinal ON chunks (document_id, ordinal)"))
        Base.metadata.create_all(conn)
        conn.execute(text("UPDATE meta SET value = :v WHERE key = 'format_version'"), {"v": json.dumps(FORMAT_VERSION)})
    meta["format_version"] = FORMAT_VERSION
