"""A second vector set for a new embedding model: built in batches from the stored chunk text while the current set
keeps serving searches, then switched in by one transaction. An interrupted build resumes after its last batch."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from rag.storage.meta import bump_generation
from rag.storage.schema import ChunkRow, MetaRow, NextVectorRow, VectorRow

if TYPE_CHECKING:
    import numpy as np

    from rag.storage.store import Store


def begin(store: Store, embedder: dict[str, Any]) -> None:
    """Start (or resume) building vectors for ``embedder`` (its meta record) beside the current ones."""
    with store.writing():
        if store.meta.get("embedder_next", {}).get("identity") != embedder["identity"]:
            with Session(store.engine) as s, s.begin():
                s.execute(delete(NextVectorRow))  # a half-built set for some other model
            store.set_meta({"embedder_next": embedder})


def pending(store: Store, limit: int) -> list[tuple[int, str]]:
    """(chunk id, text) of up to ``limit`` chunks the new vector set still lacks."""
    with Session(store.engine) as s:
        rows = s.execute(
            select(ChunkRow.id, ChunkRow.text)
            .outerjoin(NextVectorRow, NextVectorRow.chunk_id == ChunkRow.id)
            .where(NextVectorRow.chunk_id.is_(None))
            .order_by(ChunkRow.id)
            .limit(limit)
        )
        return [(r[0], r[1]) for r in rows]


def put(store: Store, ids: list[int], vectors: np.ndarray) -> None:
    """Commit one batch of the new set; an interrupted rebuild resumes after the last committed batch."""
    import numpy as np

    vecs = np.ascontiguousarray(vectors, dtype="<f4")
    with store.writing(), Session(store.engine) as s, s.begin():
        s.add_all(NextVectorRow(chunk_id=i, data=v.tobytes()) for i, v in zip(ids, vecs, strict=True))


def switch(store: Store) -> None:
    """Make the new set current in one transaction: readers see the old model's vectors or the new one's."""
    with store.writing():
        embedder = store.meta["embedder_next"]
        with Session(store.engine) as s, s.begin():
            s.execute(delete(VectorRow))
            s.execute(
                insert(VectorRow).from_select(["chunk_id", "data"], select(NextVectorRow.chunk_id, NextVectorRow.data))
            )
            s.execute(delete(NextVectorRow))
            s.execute(delete(MetaRow).where(MetaRow.key == "embedder_next"))
            s.merge(MetaRow(key="embedder", value=json.dumps(embedder)))
            generation = bump_generation(s)
        store.meta.pop("embedder_next", None)
        store.meta.update(embedder=embedder, generation=generation)
        store.forget_vectors()
        store.save_vectors()
