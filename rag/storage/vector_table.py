"""FAISS indexes built from the vectors table: exact below ``ann_min_vectors`` chunks, approximate (IVF) from there.

Both reads here are one repeatable-read snapshot on PostgreSQL, so the vectors and the generation they belong to
always agree even while another machine commits; on SQLite the caller holds off writers instead
(Store._save_if_idle).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from rag.storage.meta import stored_generation
from rag.storage.schema import ChunkRow, VectorRow
from rag.storage.vectors import VectorIndex, ivf_nlist

if TYPE_CHECKING:
    import numpy as np


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Session]:
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with Session(bind=conn) as s, s.begin():
            yield s


def _matrix(blobs: list[bytes], dim: int) -> np.ndarray:
    import numpy as np

    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim)


def read_index(engine: Engine, dim: int, ann_min_vectors: int) -> tuple[VectorIndex, int]:
    """Every stored vector in a new :class:`VectorIndex`, read in partitions (bounded memory), and the generation
    they are."""
    import numpy as np

    index = VectorIndex(dim)
    with _snapshot(engine) as s:
        generation = stored_generation(s)
        n = s.scalar(select(func.count()).select_from(VectorRow)) or 0
        if n >= ann_min_vectors:
            # Centroids are trained on a random sample (bounded memory: 40 per centroid).
            nlist = ivf_nlist(n)
            sample = s.scalars(select(VectorRow.data).order_by(func.random()).limit(40 * nlist)).all()
            index = VectorIndex.ivf(dim, _matrix(list(sample), dim), nlist)
        result = s.execute(select(VectorRow.chunk_id, VectorRow.data).execution_options(yield_per=10_000))
        for part in result.partitions():
            ids = np.fromiter((r[0] for r in part), dtype=np.int64, count=len(part))
            index.add(ids, _matrix([r[1] for r in part], dim))
    return index, generation


def read_changes(engine: Engine, dim: int, after_id: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(generation, every chunk id, ids above ``after_id`` that have vectors, their vectors): what an in-memory
    index holding chunks up to ``after_id`` lacks."""
    import numpy as np

    with _snapshot(engine) as s:
        generation = stored_generation(s)
        current = np.fromiter(s.scalars(select(ChunkRow.id)), dtype=np.int64)
        rows = s.execute(select(VectorRow.chunk_id, VectorRow.data).where(VectorRow.chunk_id > after_id)).all()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return generation, current, ids, _matrix([r[1] for r in rows], dim)
