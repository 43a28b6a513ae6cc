"""Retrieval: dense (FAISS cosine), sparse (SQLite FTS5 BM25) or both fused by weighted reciprocal rank fusion,
then an optional cross-encoder rerank, the score threshold and MMR diversity.

Every chunk either retriever proposed comes back as a :class:`Candidate` that says how it scored and why it was
kept or dropped, so a caller can explain a result as well as use it. Filters are applied inside both retrievers
(a FAISS id selector, an SQL WHERE clause), never by cutting the top ``k`` afterwards.

``Hit.score`` by mode: ``dense`` the cosine similarity; ``bm25`` the BM25 score (unbounded, higher is better);
``hybrid`` the fused RRF score, ``sum(weight / (rrf_k + rank))``; with a reranker, the cross-encoder's score.
The threshold (``min_score``) is always on cosine similarity, whatever the mode: a BM25-only candidate's cosine is
computed from its stored vector, so one threshold means "the embedder finds this unrelated" everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rag.config import RETRIEVAL_MODES, check_mmr, one_of
from rag.errors import ConfigError
from rag.types import Filters, Hit

if TYPE_CHECKING:
    import numpy as np

    from rag.models.embedder import Embedder
    from rag.models.reranker import Reranker
    from rag.storage.store import Store


@dataclass
class Candidate:
    """One chunk proposed by a retriever, with its scores and fate.

    ``reason``: ``kept``; ``threshold`` (cosine below ``min_score``); ``mmr`` (left out for diversity);
    ``beyond-k`` (scored below the ``k`` kept ones); ``missing`` (its row was deleted by a concurrent writer).
    Chunks excluded by filters are never candidates: the filters restrict the search itself.
    """

    chunk_id: int
    dense_score: float | None  # cosine similarity to the query (also for BM25-only candidates when computed)
    dense_rank: int | None  # 1-based rank in the dense list; None when dense search did not return it
    bm25_score: float | None
    bm25_rank: int | None
    fused_score: float  # what the mode ranks by (see the module docstring)
    rank: int | None = None  # 1-based rank among the kept hits
    kept: bool = False
    reason: str = "beyond-k"
    rerank_score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Retrieval:
    """The result of :func:`retrieve`: the kept hits, best first, and every candidate considered."""

    mode: str  # dense | bm25 | hybrid, with "+rerank" when a reranker reordered the candidates
    hits: list[Hit]
    candidates: list[Candidate]  # in the order the mode ranked them (before rerank and MMR)
    settings: dict[str, Any] = field(default_factory=dict)  # k, fusion, candidates, min_score, mmr, filters

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "settings": self.settings,
            "hits": [h.as_dict() for h in self.hits],
            "candidates": [c.as_dict() for c in self.candidates],
        }


@dataclass(frozen=True)
class Fusion:
    """Weighted reciprocal rank fusion: ``score = dense_weight / (rrf_k + dense_rank) + bm25_weight / (...)``."""

    rrf_k: float = 60.0
    dense_weight: float = 1.0
    bm25_weight: float = 1.0


def fuse(dense: list[tuple[int, float]], sparse: list[tuple[int, float]], fusion: Fusion) -> list[tuple[int, float]]:
    """Fuse two ranked (id, score) lists, best first, into one ranked (id, fused score) list.

    Ties (equal fused scores) keep the better dense rank first, so the result is deterministic.
    """
    scores: dict[int, float] = {}
    for weight, ranked in ((fusion.dense_weight, dense), (fusion.bm25_weight, sparse)):
        for rank, (chunk_id, _) in enumerate(ranked, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (fusion.rrf_k + rank)
    dense_rank = {cid: r for r, (cid, _) in enumerate(dense)}
    return sorted(scores.items(), key=lambda item: (-item[1], dense_rank.get(item[0], len(dense_rank))))


def retrieve(
    store: Store,
    embedder: Embedder,
    query: str,
    k: int,
    *,
    retrieval: str = "hybrid",
    filters: Filters | None = None,
    mmr: float | None = None,
    min_score: float | None = None,
    fusion: Fusion | None = None,
    candidates: int = 100,
    reranker: Reranker | None = None,
    rerank_candidates: int = 30,
    query_vector: np.ndarray | None = None,
) -> Retrieval:
    """The ``k`` best chunks for ``query`` and every candidate considered (see the module docstring).

    ``candidates``: how deep each retriever looks (at least ``k``). ``mmr``: lambda in [0, 1] for maximal
    marginal relevance (1 = pure relevance, lower = more diverse). ``query_vector``: the query's embedding when
    the caller already has it. Raises :class:`ConfigError` for an unknown retrieval mode or out-of-range
    settings.
    """
    mode = one_of("retrieval", retrieval, RETRIEVAL_MODES)
    if k < 1:
        raise ConfigError(f"k={k} must be at least 1")
    check_mmr(mmr)
    fusion = fusion or Fusion()
    depth = max(candidates, k)
    settings = {
        "k": k,
        "fusion": asdict(fusion),
        "candidates": depth,
        "min_score": min_score,
        "mmr": mmr,
        "filters": filters.as_dict() if filters else None,
        "rerank_candidates": rerank_candidates if reranker else None,
    }
    if store.dim is None:
        return Retrieval(mode, [], [], settings)
    allowed = None
    if filters is not None and filters.active():
        allowed = store.filtered_chunk_ids(filters)
        if not allowed:
            return Retrieval(mode, [], [], settings)

    needs_vector = mode != "bm25" or min_score is not None or mmr is not None
    if needs_vector and query_vector is None:
        query_vector = embedder.embed_query(query)
    dense = store.vectors.search(query_vector, depth, allowed) if mode != "bm25" else []
    sparse = store.bm25(query, depth, filters) if mode != "dense" else []

    if mode == "dense":
        ranked = dense
    elif mode == "bm25":
        ranked = sparse
    else:
        ranked = fuse(dense, sparse, fusion)
    d_info = {cid: (rank, score) for rank, (cid, score) in enumerate(dense, start=1)}
    s_info = {cid: (rank, score) for rank, (cid, score) in enumerate(sparse, start=1)}
    pool = [
        Candidate(
            cid,
            d_info[cid][1] if cid in d_info else None,
            d_info[cid][0] if cid in d_info else None,
            s_info[cid][1] if cid in s_info else None,
            s_info[cid][0] if cid in s_info else None,
            score,
        )
        for cid, score in ranked
    ]

    vectors: dict[int, np.ndarray] = {}
    if query_vector is not None and (min_score is not None or mmr is not None):
        missing = {c.chunk_id for c in pool if c.dense_score is None}
        vectors = store.vectors.vectors([c.chunk_id for c in pool] if mmr is not None else sorted(missing))
        for c in pool:
            if c.chunk_id in missing and c.chunk_id in vectors:
                c.dense_score = float(vectors[c.chunk_id] @ query_vector)
    survivors = []
    for c in pool:
        if min_score is not None and (c.dense_score is None or c.dense_score < min_score):
            c.reason = "threshold"
        else:
            survivors.append(c)
    # One read of every surviving row, before choosing: a FAISS id whose row a concurrent writer has since
    # replaced must not take one of the k places (k stale ids would leave no hit at all); never show stale text.
    rows = store.chunks([c.chunk_id for c in survivors])
    for c in survivors:
        if c.chunk_id not in rows:
            c.reason = "missing"
    survivors = [c for c in survivors if c.chunk_id in rows]

    label = mode
    if reranker is not None and survivors:
        label = f"{mode}+rerank"
        head = survivors[:rerank_candidates]
        scores = reranker.score(query, [rows[c.chunk_id].text for c in head])
        for c, s in zip(head, scores, strict=True):
            c.rerank_score = s
        survivors = sorted(head, key=lambda c: -(c.rerank_score or 0.0)) + survivors[rerank_candidates:]

    if mmr is not None:
        chosen = _mmr(survivors, vectors, k, mmr)
        for c in survivors:
            if c not in chosen:
                c.reason = "mmr"
    else:
        chosen = survivors[:k]
    hits = []
    for c in chosen:
        c.kept, c.reason, c.rank = True, "kept", len(hits) + 1
        score = c.rerank_score if c.rerank_score is not None else c.fused_score
        hits.append(Hit.of(rows[c.chunk_id], c.rank, score))
    return Retrieval(label, hits, pool, settings)


def _relevance(pool: list[Candidate]) -> list[float]:
    """Each candidate's ranking score scaled to [0, 1] over the pool, so MMR's lambda means the same in every mode."""
    scores = [c.rerank_score if c.rerank_score is not None else c.fused_score for c in pool]
    low, high = min(scores), max(scores)
    return [(s - low) / (high - low) if high > low else 1.0 for s in scores]


def _mmr(pool: list[Candidate], vectors: dict[int, np.ndarray], k: int, lam: float) -> list[Candidate]:
    """Maximal marginal relevance: repeatedly take the candidate maximising
    ``lam * relevance - (1 - lam) * max cosine to the already chosen``."""
    import numpy as np

    pool = [c for c in pool if c.chunk_id in vectors]
    if not pool:
        return []
    relevance = np.array(_relevance(pool))
    mat = np.stack([vectors[c.chunk_id] for c in pool])
    sims = mat @ mat.T
    chosen: list[int] = []
    redundancy = np.zeros(len(pool))
    while len(chosen) < min(k, len(pool)):
        value = lam * relevance - (1 - lam) * redundancy
        value[chosen] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        redundancy = np.maximum(redundancy, sims[best])
    return [pool[i] for i in chosen]
