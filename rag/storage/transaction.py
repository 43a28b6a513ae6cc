"""Writes inside :meth:`rag.storage.store.Store.transaction`: documents put, copied, moved or removed."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ingest.records import Chunk, DocumentInfo
from rag.storage.schema import ChunkRow, DocumentRow, VectorRow

if TYPE_CHECKING:
    import numpy as np


class Transaction:
    """Writes inside :meth:`Store.transaction`."""

    def __init__(self, session: Session, dim: int | None) -> None:
        self._s = session
        self._dim = dim
        self.removed_ids: list[int] = []
        self.added: list[tuple[np.ndarray, np.ndarray]] = []

    def remove_document(self, path: str) -> int:
        """Delete a document and its chunks; returns how many chunks went."""
        doc_id = self._s.scalar(select(DocumentRow.id).where(DocumentRow.path == path))
        if doc_id is None:
            return 0
        ids = list(self._s.scalars(select(ChunkRow.id).where(ChunkRow.document_id == doc_id)))
        self._s.execute(delete(DocumentRow).where(DocumentRow.id == doc_id))  # cascades to chunks and vectors
        self.removed_ids.extend(ids)
        return len(ids)

    def move_document(self, old_path: str, info: DocumentInfo) -> int:
        """A renamed or moved file: the stored document takes the new path, keeping its chunks and vectors.
        Returns how many chunks of a document already at the new path were replaced."""
        removed = self.remove_document(info.path)
        row = self._s.scalar(select(DocumentRow).where(DocumentRow.path == old_path))
        if row is None:
            raise ValueError(f"no document at {old_path}")
        row.path, row.size, row.mtime = info.path, info.size, info.mtime
        return removed

    def copy_document(self, source_path: str, info: DocumentInfo) -> tuple[int, int]:
        """A file with the same bytes as the stored ``source_path``: index it with copies of that document's chunks
        and vectors instead of embedding again. Returns (chunks replaced at ``info.path``, chunks copied)."""
        import numpy as np

        removed = self.remove_document(info.path)
        src = self._s.scalar(select(DocumentRow.id).where(DocumentRow.path == source_path))
        if src is None:
            raise ValueError(f"no document at {source_path}")
        doc = DocumentRow(**vars(info), indexed_at=time.time())
        self._s.add(doc)
        self._s.flush()
        pairs = self._s.execute(
            select(ChunkRow, VectorRow.data)
            .join(VectorRow, VectorRow.chunk_id == ChunkRow.id)
            .where(ChunkRow.document_id == src)
            .order_by(ChunkRow.ordinal)
        ).all()
        rows = [
            ChunkRow(
                document_id=doc.id,
                ordinal=c.ordinal,
                text=c.text,
                start=c.start,
                end=c.end,
                page=c.page,
                heading=c.heading,
                token_count=c.token_count,
            )
            for c, _ in pairs
        ]
        self._s.add_all(rows)
        self._s.flush()
        self._s.add_all(VectorRow(chunk_id=r.id, data=data) for r, (_, data) in zip(rows, pairs, strict=True))
        if rows:
            vecs = np.frombuffer(b"".join(data for _, data in pairs), dtype="<f4").reshape(len(rows), -1)
            self.added.append((np.array([r.id for r in rows], dtype=np.int64), vecs))
        return removed, len(rows)

    def put_document(self, info: DocumentInfo, chunks: list[Chunk], vectors: np.ndarray) -> int:
        """Insert (or replace) a document with its chunks and their (n, dim) vectors; returns chunks removed."""
        import numpy as np

        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        if self._dim is not None and vectors.shape[1] != self._dim:
            raise ValueError(f"vectors have dimension {vectors.shape[1]}, the index {self._dim}")
        removed = self.remove_document(info.path)
        doc = DocumentRow(**vars(info), indexed_at=time.time())
        self._s.add(doc)
        self._s.flush()
        rows = [ChunkRow(document_id=doc.id, **vars(c)) for c in chunks]
        self._s.add_all(rows)
        self._s.flush()
        vecs = np.ascontiguousarray(vectors, dtype="<f4")
        self._s.add_all(VectorRow(chunk_id=r.id, data=v.tobytes()) for r, v in zip(rows, vecs, strict=True))
        self.added.append((np.array([r.id for r in rows], dtype=np.int64), vecs))
        return removed
