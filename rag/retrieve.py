"""Dense retrieval: embed the question, search FAISS, join the chunk rows."""

from __future__ import annotations

from rag.embed import Embedder
from rag.store import Store
from rag.types import Hit


def search(store: Store, embedder: Embedder, query: str, k: int, min_score: float | None = None) -> list[Hit]:
    """Top ``k`` chunks for ``query`` by cosine similarity, best first; below ``min_score`` are left out."""
    pairs = store.vectors.search(embedder.embed_query(query), k)
    rows = store.chunks([chunk_id for chunk_id, _ in pairs])
    hits = []
    for chunk_id, score in pairs:
        row = rows.get(chunk_id)
        if row is None or (min_score is not None and score < min_score):
            continue
        hits.append(
            Hit(
                rank=len(hits) + 1,
                score=score,
                chunk_id=chunk_id,
                path=row.path,
                title=row.title,
                kind=row.kind,
                ordinal=row.ordinal,
                start=row.start,
                end=row.end,
                page=row.page,
                heading=row.heading,
                token_count=row.token_count,
                text=row.text,
            )
        )
    return hits
