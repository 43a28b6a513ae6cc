"""The corpus in two dimensions: every chunk's embedding projected by PCA (default) or t-SNE, for ``rag map``.

Large indexes are sampled down to ``max_points`` chunks (a seeded random sample, the query's top-k always kept),
and the map says so. PCA is a linear projection, so the query is projected onto the same axes; t-SNE has no
projection for new points, so the query is embedded together with the chunks.

With ``previous``, the same chunks are drawn twice: under the vectors the index keeps from its previous embedding
model (after `rag tune`) and under the current ones, the query embedded by each model, and the current model's
hits ringed on both, so one sees where the tuned model moved them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rag.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from rag.api import Index
    from rag.types import Hit

METHODS = ("pca", "tsne")
# Above these, points are sampled: PCA of 20k x 384 takes about a second; t-SNE is quadratic-ish and slow on a CPU.
DEFAULT_MAX_POINTS = {"pca": 20_000, "tsne": 5_000}


@dataclass
class EmbeddingMap:
    """2-D coordinates of (a sample of) the index's chunks, with the query and its hits when one was given."""

    method: str
    points: np.ndarray = field(repr=False)  # (n, 2)
    chunk_ids: list[int] = field(repr=False)
    paths: list[str] = field(repr=False)  # document of each point
    documents: list[str]  # distinct documents, in colour order
    total_chunks: int
    sampled: bool  # True when points are a sample of the chunks
    seed: int
    perplexity: float | None = None  # t-SNE only
    explained_variance: list[float] | None = None  # PCA only: share of variance on each axis
    query: str | None = None
    query_point: tuple[float, float] | None = None
    hits: list[dict[str, Any]] = field(default_factory=list)  # rank, chunk_id, score, path, x, y
    seconds: float = 0.0  # the projection alone (PCA or t-SNE), not loading models or reading the index
    embedder: str = ""  # the model whose vectors these are

    def as_dict(self, points: bool = True) -> dict[str, Any]:
        d = {
            "method": self.method,
            "total_chunks": self.total_chunks,
            "shown_chunks": len(self.chunk_ids),
            "sampled": self.sampled,
            "seed": self.seed,
            "perplexity": self.perplexity,
            "explained_variance": self.explained_variance,
            "documents": self.documents,
            "query": self.query,
            "query_point": self.query_point,
            "hits": self.hits,
            "seconds": round(self.seconds, 3),
            "embedder": self.embedder,
        }
        if points:
            d["points"] = [
                {"chunk_id": c, "path": p, "x": float(x), "y": float(y)}
                for c, p, (x, y) in zip(self.chunk_ids, self.paths, self.points, strict=True)
            ]
        return d


def embedding_map(
    index: Index,
    *,
    query: str | None = None,
    k: int | None = None,
    method: str = "pca",
    max_points: int | None = None,
    perplexity: float = 30.0,
    seed: int = 0,
) -> EmbeddingMap:
    """Project the chunk embeddings of ``index`` to 2-D; with ``query``, place it and mark its top ``k`` hits."""
    _check(index, method, max_points, perplexity, query)
    ids, vectors = index.store.vectors.arrays()
    hits = index.search(query, k or index.config.sources_k) if query else []
    keep = _sample(ids, hits, max_points or DEFAULT_MAX_POINTS[method], seed)
    view = _View(query, hits, method, perplexity, seed)
    qvec = index.embedder.embed_query(query) if query else None
    return _project(index, ids, vectors, keep, view, qvec, index.embedder.source.name)


def embedding_map_pair(
    index: Index,
    *,
    query: str | None = None,
    k: int | None = None,
    method: str = "pca",
    max_points: int | None = None,
    perplexity: float = 30.0,
    seed: int = 0,
) -> tuple[EmbeddingMap, EmbeddingMap]:
    """The same chunks (those both vector sets hold) under the previous embedding model and the current one."""
    import numpy as np

    _check(index, method, max_points, perplexity, query)
    found = index.previous_vectors()
    if found is None:
        raise ConfigError(
            f"index {index.store.directory} keeps no previous embedding model; `rag tune` keeps one when it switches"
        )
    old_model, (old_ids, old_vectors) = found
    ids, vectors = index.store.vectors.arrays()
    common = np.intersect1d(ids, old_ids)  # chunks added since the switch have no previous vector
    vectors, old_vectors = _take(ids, vectors, common), _take(old_ids, old_vectors, common)
    hits = index.search(query, k or index.config.sources_k) if query else []
    keep = _sample(common, hits, max_points or DEFAULT_MAX_POINTS[method], seed)
    view = _View(query, hits, method, perplexity, seed)
    maps = []
    for model, vecs in ((old_model, old_vectors), (index.embedder, vectors)):
        qvec = model.embed_query(query) if query else None
        maps.append(_project(index, common, vecs, keep, view, qvec, model.source.name))
    return maps[0], maps[1]


def _take(ids: np.ndarray, vectors: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The rows of ``vectors`` (keyed by ``ids``) for ``wanted``, in its order."""
    import numpy as np

    order = np.argsort(ids)
    return vectors[order[np.searchsorted(ids, wanted, sorter=order)]]


def _check(index: Index, method: str, max_points: int | None, perplexity: float, query: str | None) -> None:
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    if max_points is not None and max_points < 3:
        raise ConfigError("--max-points: must be at least 3")
    if perplexity <= 0:
        raise ConfigError("--perplexity: must be > 0 (5-50 is usual)")
    if query is not None and not query.strip():
        raise ConfigError("--query is empty; give a question or leave it out")
    if index.store.dim is None:
        raise ConfigError(f"index {index.store.directory} is empty; run `rag ingest FOLDER` first")
    if (total := index.counts()[1]) < 3:
        raise ConfigError(f"index {index.store.directory} holds {total} chunks; a map needs at least 3")


def _sample(ids: np.ndarray, hits: list[Hit], limit: int, seed: int) -> np.ndarray:
    """Positions of the chunks to draw: all, or a seeded sample of ``limit`` that keeps every hit."""
    import numpy as np

    keep = np.arange(len(ids))
    if len(ids) <= limit:
        return keep
    rng = np.random.default_rng(seed)
    must = np.flatnonzero(np.isin(ids, [h.chunk_id for h in hits]))
    rest = np.setdiff1d(keep, must)
    return np.sort(np.concatenate([must, rng.choice(rest, limit - len(must), replace=False)]))


@dataclass(frozen=True)
class _View:
    """What a map is asked to show, the same for every vector set drawn."""

    query: str | None
    hits: list[Hit]
    method: str
    perplexity: float
    seed: int


def _project(
    index: Index,
    all_ids: np.ndarray,
    all_vectors: np.ndarray,
    keep: np.ndarray,
    view: _View,
    qvec: np.ndarray | None,
    embedder: str,
) -> EmbeddingMap:
    """Project the ``keep`` rows of ``all_vectors`` (and the query vector) to 2-D, as ``view`` asks."""
    import numpy as np

    query, hits, method, seed = view.query, view.hits, view.method, view.seed
    ids, vectors = all_ids[keep], all_vectors[keep]
    result = EmbeddingMap(
        method=method,
        points=np.zeros((0, 2)),
        chunk_ids=[int(i) for i in ids],
        paths=_paths(index, ids),
        documents=[],
        total_chunks=len(all_ids),
        sampled=len(ids) < len(all_ids),
        seed=seed,
        query=query,
        embedder=embedder,
    )
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    # One BLAS/OpenMP thread unless RAG_THREADS says otherwise: on a busy machine, spin-waiting threads make a
    # small projection take a hundred times longer (docs/explain-and-map.md).
    with threadpool_limits(index.config.threads or 1):
        if method == "pca":
            points, qpoint, result.explained_variance = _pca(vectors, qvec)
        else:
            points, qpoint, result.perplexity = _tsne(vectors, qvec, view.perplexity, seed)
    result.points = points
    result.documents = sorted(set(result.paths))
    if qpoint is not None:
        result.query_point = (float(qpoint[0]), float(qpoint[1]))
    where = {c: n for n, c in enumerate(result.chunk_ids)}
    result.hits = [
        {
            "rank": h.rank,
            "chunk_id": h.chunk_id,
            "score": h.score,
            "path": h.path,
            "x": float(points[where[h.chunk_id], 0]),
            "y": float(points[where[h.chunk_id], 1]),
        }
        for h in hits
        if h.chunk_id in where
    ]
    result.seconds = time.perf_counter() - started
    return result


def _paths(index: Index, ids: np.ndarray) -> list[str]:
    found: dict[int, str] = {}
    batch = 5000  # well under SQLite's bound-parameter limit
    for i in range(0, len(ids), batch):
        part = [int(x) for x in ids[i : i + batch]]
        found.update({c: row.path for c, row in index.store.chunks(part).items()})
    return [found.get(int(i), "?") for i in ids]


def _pca(vectors: np.ndarray, query: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, list[float]]:
    import numpy as np

    mean = vectors.mean(axis=0)
    _, s, vt = np.linalg.svd(vectors - mean, full_matrices=False)
    axes = vt[:2]
    variance = (s**2) / float((s**2).sum())
    q = (query - mean) @ axes.T if query is not None else None
    return (vectors - mean) @ axes.T, q, [float(v) for v in variance[:2]]


def _tsne(
    vectors: np.ndarray, query: np.ndarray | None, perplexity: float, seed: int
) -> tuple[np.ndarray, np.ndarray | None, float]:
    import numpy as np
    from sklearn.manifold import TSNE

    data = vectors if query is None else np.vstack([vectors, query[None, :]])
    # t-SNE needs perplexity below the number of points; tiny corpora get a smaller one (and the map records it).
    used = float(min(perplexity, max(1.0, (len(data) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=used, init="pca", learning_rate="auto", random_state=seed)
    out = tsne.fit_transform(data.astype(np.float64))
    if query is None:
        return out, None, used
    return out[:-1], out[-1], used
