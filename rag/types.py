"""Result types of the public API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk. ``document_text[start:end] == text`` for the document at ``path``."""

    rank: int  # 1-based
    score: float  # cosine similarity to the query
    chunk_id: int
    path: str
    title: str | None
    kind: str
    ordinal: int
    start: int
    end: int
    page: int | None
    heading: str | None
    token_count: int
    text: str

    def location(self) -> str:
        """``page 3`` / the heading path / ``chunk 4``: where in the document this is."""
        parts = []
        if self.page is not None:
            parts.append(f"page {self.page}")
        if self.heading:
            parts.append(self.heading)
        return ", ".join(parts) or f"chunk {self.ordinal + 1}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    """A generated answer. Source ``[n]`` in ``text`` is ``sources[n - 1]``."""

    question: str
    text: str
    sources: list[Hit]
    # False when retrieval found nothing relevant and no text was generated.
    answered: bool = True
    cited: list[int] = field(default_factory=list)  # source numbers the text cites, in order of first mention
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int = 0
    answer_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Filters:
    """Which documents retrieval may return; applied inside the search, so ``k`` results still come back.

    ``path``: a glob (fnmatch: ``*`` also crosses ``/``) matched against the absolute path or any tail of it,
    so ``*.md`` and ``decoding/*`` work. ``kinds``: document kinds (text, markdown, rst, html, pdf, code).
    ``modified_since``: Unix time; only files modified at or after it.
    """

    path: str | None = None
    kinds: tuple[str, ...] = ()
    modified_since: float | None = None

    def active(self) -> bool:
        return self.path is not None or bool(self.kinds) or self.modified_since is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
