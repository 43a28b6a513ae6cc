"""The retrieval query of a question asked in a conversation.

"And who wrote it?" retrieves nothing useful alone: its subject is in the turn before. A question that refers
back (a pronoun or a demonstrative, or one of a few words) is searched together with the questions it follows,
so both BM25 and the embedding see the subject; a question that stands on its own is searched as it is, so a
change of topic is not dragged back. Measured in docs/conversations.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_REFERS = re.compile(
    r"\b(it|its|they|them|their|he|him|his|she|her|hers|this|that|these|those|there|then|one|ones|"
    r"same|other|former|latter|else)\b",
    re.IGNORECASE,
)
# A question this short ("and the year?", "why?") leans on the one before.
SHORT_WORDS = 4
# Questions searched together at most: the current one and the ones it follows.
CONTEXT_TURNS = 3
# The earlier questions add at most this many characters: a long message before ("here is my draft: ...") must
# not make a short follow-up too long to search.
CONTEXT_CHARS = 1000


def refers_back(question: str) -> bool:
    """True when ``question`` looks like a follow-up: it refers back, or is too short to stand alone."""
    return bool(_REFERS.search(question)) or len(question.split()) <= SHORT_WORDS


def conversation_query(question: str, earlier: Sequence[str]) -> str:
    """What to search for ``question`` after the conversation's ``earlier`` questions (oldest first): the
    question alone when it stands alone; else followed by the question before it, and by the one before that
    while each refers back in turn, at most :data:`CONTEXT_TURNS` questions and :data:`CONTEXT_CHARS` characters
    of them (a long one is cut at a word)."""
    if not earlier or not refers_back(question):
        return question
    context: list[str] = []
    room = CONTEXT_CHARS
    for before in reversed(earlier):
        if len(before) > room:
            before = before[:room].rsplit(None, 1)[0] if " " in before[:room] else before[:room]
        room -= len(before) + 1
        context.append(before)
        if len(context) >= CONTEXT_TURNS - 1 or not refers_back(before) or room <= 0:
            break
    return " ".join([question, *context])
