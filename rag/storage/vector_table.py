"""FAISS indexes built from the vectors table: exact below ``ann_min_vectors`` chunks, approximate (IVF) from there."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from rag.storage.schema import ChunkRow, MetaRow, VectorRow
from rag.storage.vectors import VectorIndex, ivf_nlist

if TYPE_CHECKING:
    import numpy as np


def read_index(engine: Engine, dim: int, ann_min_vectors: int) -> tuple[VectorIndex, int]:
    """Every stored vector in a new :class:`VectorIndex`, read in partitions (bounded memory), and the generation
    they are. On PostgreSQL the read is one repeatable-read snapshot, so the two always agree even while another
    machine commits; on SQLite the caller holds off writers instead (Store._save_if_idle)."""
    import numpy as np

    index = VectorIndex(dim)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with Session(bind=conn) as s, s.begin():
            generation = int(json.loads(s.scalar(select(MetaRow.value).where(MetaRow.key == "generation")) or "0"))
            n = s.scalar(select(func.count()).select_from(VectorRow)) or 0
            if n >= ann_min_vectors:
                # Centroids are trained on a random sample (bounded memory: 40 per centroid).
                nlist = ivf_nlist(n)
                sample = s.scalars(select(VectorRow.data).order_by(func.random()).limit(40 * nlist)).all()
                training = np.frombuffer(b"".join(sample), dtype="<f4").reshape(len(sample), dim)
                index = VectorIndex.ivf(dim, training, nlist)
            result = s.execute(select(VectorRow.chunk_id, VectorRow.data).execution_options(yield_per=10_000))
            for part in result.partitions():
                ids = np.fromiter((r[0] for r in part), dtype=np.int64, count=len(part))
                vecs = np.frombuffer(b"".join(r[1] for r in part), dtype="<f4").reshape(len(part), dim)
                index.add(ids, vecs)
    return index, generation


def read_changes(engine: Engine, dim: int, after_id: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(generation, every chunk id, ids above ``after_id`` that have vectors, their vectors): what an in-memory
    index holding chunks up to ``after_id`` lacks. One repeatable-read snapshot on PostgreSQL, as read_index."""
    import numpy as np

    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with Session(bind=conn) as s, s.begin():
            generation = int(json.loads(s.scalar(select(MetaRow.value).where(MetaRow.key == "generation")) or "0"))
            current = np.fromiter(s.scalars(select(ChunkRow.id)), dtype=np.int64)
            rows = s.execute(select(VectorRow.chunk_id, VectorRow.data).where(VectorRow.chunk_id > after_id)).all()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)
    return generation, current, ids, vectors
