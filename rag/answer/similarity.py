"""How similar source sentences are to a question, by the embedder, with a memo of sentence vectors.

Focusing the prompt, choosing the quote's sentence and checking support all embed the same source sentences, and
embedding is the slow part of each: one memo per index serves them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from rag.models.embedder import Embedder

# Bounded: a long-running app asks many questions.
MAX_MEMO = 20_000


class SentenceSimilarity:
    """``similarity(question, sentences)`` -> one cosine per sentence; :meth:`embed` for the vectors alone."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._memo: dict[str, Any] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, dim) L2-normalised vectors of ``texts``, embedding only those not seen before."""
        import numpy as np

        if len(self._memo) + len(texts) > MAX_MEMO:
            self._memo.clear()
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            self._memo.update(zip(missing, self.embedder.embed_sentences(missing), strict=True))
        return np.stack([self._memo[t] for t in texts]) if texts else self.embedder.embed_sentences([])

    def __call__(self, question: str, texts: list[str]) -> list[float]:
        return (self.embed(texts) @ self.embedder.embed_query(question)).tolist()
