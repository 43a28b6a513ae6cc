"""FAISS indexes built from the vectors table: exact below ``ann_min_vectors`` chunks, approximate (IVF) from there."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from rag.storage.schema import VectorRow
from rag.storage.vectors import VectorIndex, ivf_nlist


def read_index(engine: Engine, dim: int, ann_min_vectors: int) -> VectorIndex:
    """Every stored vector in a new :class:`VectorIndex`, read in partitions (bounded memory)."""
    import numpy as np

    index = VectorIndex(dim)
    with Session(engine) as s:
        n = s.scalar(select(func.count()).select_from(VectorRow)) or 0
        if n >= ann_min_vectors:
            # Centroids are trained on a random sample (bounded memory: 40 per centroid).
            nlist = ivf_nlist(n)
            sample = s.scalars(select(VectorRow.data).order_by(func.random()).limit(40 * nlist)).all()
            index = VectorIndex.ivf(dim, np.frombuffer(b"".join(sample), dtype="<f4").reshape(len(sample), dim), nlist)
        result = s.execute(select(VectorRow.chunk_id, VectorRow.data).execution_options(yield_per=10_000))
        for part in result.partitions():
            ids = np.fromiter((r[0] for r in part), dtype=np.int64, count=len(part))
            vecs = np.frombuffer(b"".join(r[1] for r in part), dtype="<f4").reshape(len(part), dim)
            index.add(ids, vecs)
    return index
