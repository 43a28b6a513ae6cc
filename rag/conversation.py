"""Conversations: questions asked one after another, each retrieved with the ones before it in mind.

    from rag import Conversation, Index
    index = Index.open(".rag")
    chat = Conversation.start(index)
    chat.ask("Who introduced nucleus (top-p) sampling?")
    chat.ask("What did they call it?")            # retrieved together with the question before
    again = Conversation.resume(index, chat.id)   # the turns are stored in the index

Every turn is answered and checked as :meth:`rag.api.Index.ask` answers; only its retrieval query changes
(:func:`rag.retrieval.followup.conversation_query`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rag.api import Index
from rag.errors import SourceNotFoundError
from rag.retrieval.followup import conversation_query
from rag.storage import conversations
from rag.types import Answer


@dataclass(frozen=True)
class Turn:
    """One question of a conversation, the query retrieval was given for it, and its answer
    (:meth:`rag.types.Answer.as_dict`)."""

    question: str
    query: str
    answer: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"question": self.question, "query": self.query, "answer": self.answer}


@dataclass
class Conversation:
    """The turns so far of one conversation over ``index``; :meth:`ask` adds one and stores it in the index."""

    index: Index
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    turns: list[Turn] = field(default_factory=list)

    @classmethod
    def start(cls, index: Index) -> Conversation:
        """A new, empty conversation (stored once it has a turn)."""
        return cls(index)

    @classmethod
    def resume(cls, index: Index, conversation_id: str | None = None) -> Conversation:
        """The stored conversation ``conversation_id``, or the most recent one. Raises
        :class:`~rag.errors.SourceNotFoundError` when there is none."""
        wanted = conversation_id or conversations.latest(index.store.engine)
        records = conversations.turns(index.store.engine, wanted) if wanted else None
        if wanted is None or records is None:
            which = f"no conversation {conversation_id!r}" if conversation_id else "no conversation yet"
            raise SourceNotFoundError(f"{which} in {index.store.directory}; start one with rag chat")
        turns = [Turn(r["question"], r["query"], r["answer"]) for r in records]
        return cls(index, wanted, turns)

    def query_for(self, question: str) -> str:
        """What retrieval is given for ``question`` asked next in this conversation."""
        return conversation_query(question, [t.question for t in self.turns])

    def ask(self, question: str, *, on_token: Callable[[str], None] | None = None, **options: Any) -> Answer:
        """Answer ``question`` as the next turn (``options`` as for :meth:`rag.api.Index.ask`) and store the turn.
        An answer interrupted (Ctrl-C in ``on_token``) leaves no turn behind."""
        query = self.query_for(question)
        answer = self.index.ask(question, query=query, on_token=on_token, **options)
        turn = Turn(question, query, answer.as_dict())
        conversations.add_turn(self.index.store.engine, self.id, turn.as_dict())
        self.turns.append(turn)
        return answer

    def as_dict(self) -> dict[str, Any]:
        """The transcript: the conversation's id and every turn."""
        return {"conversation": self.id, "turns": [t.as_dict() for t in self.turns]}
