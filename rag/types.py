"""Result types of the public API."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ingest.records import KINDS, Chunk
from rag.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class StoredChunk(Chunk):
    """A chunk as the index holds it: with its id (the FAISS id) and its document's path, title and kind."""

    chunk_id: int
    path: str
    title: str | None
    kind: str

    def location(self) -> str:
        """``page 3`` / the heading path / ``chunk 4``: where in the document this is."""
        parts = []
        if self.page is not None:
            parts.append(f"page {self.page}")
        if self.heading:
            parts.append(self.heading)
        return ", ".join(parts) or f"chunk {self.ordinal + 1}"


# Hit's JSON keys, in the order they have always been printed.
_HIT_KEYS = ("rank", "score", "chunk_id", "path", "title", "kind", "ordinal", "start", "end", "page", "heading")


@dataclass(frozen=True, kw_only=True)
class Hit(StoredChunk):
    """A retrieved chunk. ``document_text[start:end] == text`` for the document at ``path``."""

    rank: int  # 1-based
    score: float  # cosine (dense), BM25 (bm25), fused RRF (hybrid) or cross-encoder score (reranked)

    @classmethod
    def of(cls, chunk: StoredChunk, rank: int, score: float) -> Hit:
        return cls(**vars(chunk), rank=rank, score=score)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: d[k] for k in (*_HIT_KEYS, "token_count", "text")}


@dataclass(frozen=True)
class Answer:
    """A generated answer. Source ``[n]`` in ``text`` is ``sources[n - 1]``.

    ``support`` holds one :class:`rag.answer.support.Support` per claim of ``text``: the best source span for it, cited
    by file and character offsets, and whether it backs the claim. ``supported`` is True when every claim is.
    """

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
    answer_mode: str = "generate"  # the answer mode that produced ``text`` (see rag/answer/modes.py)
    support: list[Any] = field(default_factory=list)  # list[rag.answer.support.Support]
    supported: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sources": [h.as_dict() for h in self.sources]}


@dataclass(frozen=True)
class Filters:
    """Which documents retrieval may return; applied inside the search, so ``k`` results still come back.

    ``path``: a glob (fnmatch: ``*`` also crosses ``/``) matched against the absolute path or any tail of it,
    so ``*.md`` and ``decoding/*`` work. ``kinds``: document kinds (``ingest.records.KINDS``: text, markdown,
    pdf, docx, spreadsheet, ...). ``modified_since``: Unix time; only files modified at or after it.
    """

    path: str | None = None
    kinds: tuple[str, ...] = ()
    modified_since: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.kinds, str) or not all(isinstance(k, str) for k in self.kinds):
            raise ConfigError(f"Filters(kinds={self.kinds!r}): give a tuple of kinds, e.g. kinds=('pdf',)")
        if unknown := [k for k in self.kinds if k not in KINDS]:
            raise ConfigError(f"kind {unknown[0]!r} is not one of {', '.join(KINDS)}")
        if self.modified_since is not None and not math.isfinite(self.modified_since):
            raise ConfigError(f"modified_since={self.modified_since}: give a finite time (Unix seconds)")

    def active(self) -> bool:
        return self.path is not None or bool(self.kinds) or self.modified_since is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
