"""A second vector set for a new embedding model: built in batches from the stored chunk text while the current set
keeps serving searches, then switched in by one transaction. An interrupted build resumes after its last batch.

A switch can keep the set it replaces (vectors_prev, with its model's record as ``embedder_prev``): restoring it
refills the new set from those vectors, so going back to the previous model re-embeds only the chunks added
since."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from rag.storage.meta import bump_generation
from rag.storage.schema import ChunkRow, MetaRow, NextVectorRow, PreviousVectorRow, VectorRow

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


def switch(store: Store, *, keep_previous: bool = False) -> None:
    """Make the new set current in one transaction: readers see the old model's vectors or the new one's.

    ``keep_previous`` keeps the replaced set for :func:`restore`; otherwise an older kept set is dropped too (it
    would no longer be the previous one).
    """
    with store.writing():
        embedder = store.meta["embedder_next"]
        previous = store.meta.get("embedder")
        with Session(store.engine) as s, s.begin():
            s.execute(delete(PreviousVectorRow))
            s.execute(delete(MetaRow).where(MetaRow.key == "embedder_prev"))
            if keep_previous and previous:
                s.execute(_copy(VectorRow, PreviousVectorRow))
                s.add(MetaRow(key="embedder_prev", value=json.dumps(previous)))
            s.execute(delete(VectorRow))
            s.execute(_copy(NextVectorRow, VectorRow))
            s.execute(delete(NextVectorRow))
            s.execute(delete(MetaRow).where(MetaRow.key == "embedder_next"))
            s.merge(MetaRow(key="embedder", value=json.dumps(embedder)))
            generation = bump_generation(s)
        store.meta.pop("embedder_next", None)
        store.meta.pop("embedder_prev", None)
        if keep_previous and previous:
            store.meta["embedder_prev"] = previous
        store.meta.update(embedder=embedder, generation=generation)
        store.forget_vectors()
        store.save_vectors()


def restore(store: Store) -> dict[str, Any]:
    """Start a new set from the kept previous one (see :func:`switch`); returns its model's record. The chunks
    added since are left :func:`pending` for that model; then :func:`switch` back (keeping the current set)."""
    previous = store.meta.get("embedder_prev")
    if not previous:
        raise LookupError("no previous vector set is kept")
    with store.writing(), Session(store.engine) as s, s.begin():
        s.execute(delete(NextVectorRow))
        s.execute(_copy(PreviousVectorRow, NextVectorRow))
        s.merge(MetaRow(key="embedder_next", value=json.dumps(previous)))
    store.meta["embedder_next"] = previous
    return previous


def drop_previous(store: Store) -> int:
    """Delete the kept previous set; returns how many vectors it held."""
    with store.writing(), Session(store.engine) as s, s.begin():
        dropped = s.execute(delete(PreviousVectorRow)).rowcount
        s.execute(delete(MetaRow).where(MetaRow.key == "embedder_prev"))
    store.meta.pop("embedder_prev", None)
    return dropped


def previous_arrays(store: Store) -> tuple[np.ndarray, np.ndarray]:
    """(chunk ids, vectors) of the kept previous set, for drawing it beside the current one."""
    import numpy as np

    dim = int(store.meta["embedder_prev"]["dim"])
    with Session(store.engine) as s:
        rows = s.execute(select(PreviousVectorRow.chunk_id, PreviousVectorRow.data)).all()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return ids, np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)


def _copy(source: type, target: type):  # -> sqlalchemy Insert
    return insert(target).from_select(["chunk_id", "data"], select(source.chunk_id, source.data))
