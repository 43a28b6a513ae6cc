"""The meta record: format version, embedding model, chunker settings, and the generation number."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from rag.storage.schema import MetaRow


def read_meta(engine: Engine) -> dict[str, Any]:
    with Session(engine) as s:
        return {row.key: json.loads(row.value) for row in s.scalars(select(MetaRow))}


def stored_generation(session: Session) -> int:
    """The generation as the database holds it, in the session's transaction."""
    stored = session.scalar(select(MetaRow.value).where(MetaRow.key == "generation"))
    return int(json.loads(stored)) if stored is not None else 0


def bump_generation(session: Session) -> int:
    """Count one more write, reading the number from the database inside the writing transaction, so that a
    writer that opened the index before another process wrote never reuses a generation."""
    generation = stored_generation(session) + 1
    session.merge(MetaRow(key="generation", value=json.dumps(generation)))
    return generation
