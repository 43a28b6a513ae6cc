"""Conversations of `rag chat`: turns stored as JSON records, in their own tables of the index database.

The tables come with the schema (migration 0003); a read-only index made before them may lack them. Turns are
small, single-row writes: they take the database's own locks, not the index's writer lock, so a conversation goes
on while an ingest runs.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from rag.storage.schema import ConversationRow, TurnRow


def _exists(engine: Engine) -> bool:
    return inspect(engine).has_table(TurnRow.__tablename__)


def add_turn(engine: Engine, conversation_id: str, record: dict[str, Any]) -> int:
    """Append ``record`` to the conversation (made if new); returns its 1-based turn number."""
    now = time.time()
    with Session(engine) as s, s.begin():
        conversation = s.get(ConversationRow, conversation_id)
        if conversation is None:
            s.add(ConversationRow(id=conversation_id, created_at=now, updated_at=now))
        else:
            conversation.updated_at = now
        n = (s.scalar(select(func.max(TurnRow.n)).where(TurnRow.conversation_id == conversation_id)) or 0) + 1
        s.add(TurnRow(conversation_id=conversation_id, n=n, record=json.dumps(record), created_at=now))
    return n


def turns(engine: Engine, conversation_id: str) -> list[dict[str, Any]] | None:
    """The conversation's records, oldest first; None when there is no such conversation."""
    if not _exists(engine):
        return None
    with Session(engine) as s:
        if s.get(ConversationRow, conversation_id) is None:
            return None
        rows = s.scalars(select(TurnRow).where(TurnRow.conversation_id == conversation_id).order_by(TurnRow.n))
        return [json.loads(r.record) for r in rows]


def latest(engine: Engine) -> str | None:
    """The id of the conversation with the most recent turn, if any."""
    if not _exists(engine):
        return None
    with Session(engine) as s:
        return s.scalar(select(ConversationRow.id).order_by(ConversationRow.updated_at.desc()).limit(1))
