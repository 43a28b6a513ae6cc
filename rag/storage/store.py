"""The index on disk: SQLite (through SQLAlchemy) is the source of truth, FAISS a cache derived from it.

``index.db`` holds documents, chunks, each chunk's vector and a meta record (format version, embedding model,
chunker settings, and a generation number bumped by every write). ``vectors-<generation>.faiss`` is the FAISS
index for that generation. A missing or stale FAISS file (say, after a crash between commit and save) is rebuilt
from the stored vectors on open, so the two can never disagree for long. The store knows nothing of models or
prompts: it keeps what it is given.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ingest.records import DocumentInfo
from rag.errors import IndexBusyError, IndexFormatError, IndexNotFoundError, IndexWriteError, RagError
from rag.storage import failures, fts, migrate, vector_table
from rag.storage.engine import connect, create_database
from rag.storage.lock import WriterLock
from rag.storage.meta import bump_generation, read_meta
from rag.storage.schema import (
    DB_NAME,
    FORMAT_VERSION,
    ChunkRow,
    DocumentRow,
    MetaRow,
    document_info,
)
from rag.storage.transaction import Transaction
from rag.storage.vectors import ANN_MIN_VECTORS, VectorIndex
from rag.types import Filters, StoredChunk


class Store:
    """An open index directory. Use :meth:`open`; write through :meth:`transaction`."""

    def __init__(self, directory: Path, engine: Engine) -> None:
        self.directory = directory
        self.engine = engine
        self._vectors: VectorIndex | None = None
        self._lock = WriterLock(directory)
        # From this many chunks on, a rebuild makes an approximate index (rag/storage/vectors.py explains the choice).
        self.ann_min_vectors = ANN_MIN_VECTORS
        self.meta: dict[str, Any] = self._read_meta()

    @classmethod
    def exists(cls, directory: Path) -> bool:
        return (directory / DB_NAME).is_file()

    @classmethod
    def open(cls, directory: Path, *, create: bool = False) -> Store:
        """Open the index in ``directory``; with ``create``, make an empty one if there is none."""
        directory = Path(directory)
        if not cls.exists(directory):
            if not create:
                raise IndexNotFoundError(
                    f"no index at {directory}; run `rag ingest FOLDER` to build one, or pass --index DIR"
                )
            create_database(directory)
        store = cls(directory, connect(directory / DB_NAME))
        version = store.meta.get("format_version")
        if version == 1:
            with store.writing():
                migrate.upgrade_from_1(store.engine, store.meta)
            version = FORMAT_VERSION
        if version != FORMAT_VERSION:
            raise IndexFormatError(
                f"index at {directory} has format version {version}, this tool reads {FORMAT_VERSION}; "
                "build a new index with --index NEWDIR"
            )
        with store.engine.begin() as conn:  # indexes built before BM25 existed get their FTS table here
            fts.ensure_fts(conn)
        return store

    def close(self) -> None:
        self.engine.dispose()

    # --- meta -------------------------------------------------------------------------------------------------

    def _read_meta(self) -> dict[str, Any]:
        try:
            return read_meta(self.engine)
        except RagError:  # damaged, or unreadable: already said in one line
            raise
        except Exception as e:  # sqlalchemy.exc.DatabaseError: not a database
            raise IndexFormatError(
                f"{self.directory / DB_NAME} is not a readable index ({e.__class__.__name__}); "
                "point --index at another directory or move this one away"
            ) from None

    def refresh(self) -> None:
        """Catch up with writes made by other processes since this store was opened (or last refreshed)."""
        meta = self._read_meta()
        if meta.get("generation") != self.meta.get("generation") or meta.get("embedder") != self.meta.get("embedder"):
            self._vectors = None
        self.meta = meta

    def set_meta(self, values: dict[str, Any]) -> None:
        with self.writing(), Session(self.engine) as s, s.begin():
            for key, value in values.items():
                s.merge(MetaRow(key=key, value=json.dumps(value)))
        self.meta.update(values)

    @property
    def dim(self) -> int | None:
        embedder = self.meta.get("embedder")
        return int(embedder["dim"]) if embedder else None

    # --- reads ------------------------------------------------------------------------------------------------

    def document(self, path: str) -> DocumentInfo | None:
        with Session(self.engine) as s:
            row = s.scalar(select(DocumentRow).where(DocumentRow.path == path))
            return document_info(row) if row else None

    def documents(self, under: str | None = None) -> list[DocumentInfo]:
        """All documents, or those whose path lies under the folder ``under``."""
        with Session(self.engine) as s:
            query = select(DocumentRow).order_by(DocumentRow.path)
            if under is not None:
                query = query.where(DocumentRow.path.startswith(under.rstrip("/") + "/", autoescape=True))
            return [document_info(row) for row in s.scalars(query)]

    def counts(self) -> tuple[int, int]:
        """(documents, chunks)."""
        with Session(self.engine) as s:
            docs = s.scalar(select(func.count()).select_from(DocumentRow)) or 0
            chunks = s.scalar(select(func.count()).select_from(ChunkRow)) or 0
            return docs, chunks

    def chunk_ids(self) -> list[int]:
        with Session(self.engine) as s:
            return list(s.scalars(select(ChunkRow.id).order_by(ChunkRow.id)))

    def chunks(self, ids: list[int]) -> dict[int, StoredChunk]:
        """Chunk rows joined with their documents, by id (missing ids are left out)."""
        if not ids:
            return {}
        with Session(self.engine) as s:
            rows = s.execute(
                select(ChunkRow, DocumentRow)
                .join(DocumentRow, ChunkRow.document_id == DocumentRow.id)
                .where(ChunkRow.id.in_(ids))
            )
            return {c.id: _stored_chunk(c, d) for c, d in rows}

    def document_chunks(self, path: str) -> list[StoredChunk]:
        with Session(self.engine) as s:
            ids = list(
                s.scalars(
                    select(ChunkRow.id)
                    .join(DocumentRow, ChunkRow.document_id == DocumentRow.id)
                    .where(DocumentRow.path == path)
                )
            )
        return sorted(self.chunks(ids).values(), key=lambda c: c.ordinal)

    def bm25(self, query: str, k: int, filters: Filters | None = None) -> list[tuple[int, float]]:
        """Top ``k`` (chunk id, BM25 score) for the words of ``query``, best first (see :func:`fts.bm25`)."""
        with self.engine.connect() as conn:
            return fts.bm25(conn, query, k, filters)

    def filtered_chunk_ids(self, filters: Filters) -> list[int]:
        """Ids of the chunks whose documents pass ``filters``."""
        with self.engine.connect() as conn:
            return fts.filtered_chunk_ids(conn, filters)

    # --- vectors ----------------------------------------------------------------------------------------------

    def vectors_path(self, generation: int) -> Path:
        return self.directory / f"vectors-{generation}.faiss"

    @property
    def vectors(self) -> VectorIndex:
        """The FAISS index for the current generation, loaded (or rebuilt from SQLite) on first use."""
        if self._vectors is None:
            dim = self.dim
            if dim is None:
                raise IndexNotFoundError(f"index at {self.directory} is empty; run `rag ingest FOLDER` first")
            path = self.vectors_path(self.meta["generation"])
            try:
                loaded = VectorIndex.load(path, dim) if path.is_file() else None
            except (RuntimeError, ValueError):  # damaged or foreign file: it is only a cache
                loaded = None
            if loaded is not None and len(loaded) == self.counts()[1]:
                self._vectors = loaded
            else:
                self._vectors = self.rebuild_vectors()
                self._save_if_idle()
        return self._vectors

    def _save_if_idle(self) -> None:
        """After a crash left the FAISS file stale, the first process to notice writes it, unless a writer is busy
        (it will save its own); readers never wait for the lock."""
        try:
            with self.writing():
                if self._read_meta().get("generation") == self.meta["generation"]:
                    self.save_vectors()
        except (IndexBusyError, IndexWriteError, OSError, RuntimeError):  # busy, read-only, or a full disk
            pass

    def rebuild_vectors(self) -> VectorIndex:
        """A fresh FAISS index from the vectors stored in SQLite (not written to disk)."""
        if self.dim is None:
            raise IndexNotFoundError(f"index at {self.directory} is empty; run `rag ingest FOLDER` first")
        return vector_table.read_index(self.engine, self.dim, self.ann_min_vectors)

    def save_vectors(self) -> None:
        """Persist the FAISS index for the current generation and drop older files."""
        generation = self.meta["generation"]
        with self.writing():
            vectors = self.vectors
            # Switch kinds when the size crossed the threshold (with a margin, so an index at the boundary does
            # not retrain on every run).
            if (vectors.kind == "flat" and len(vectors) >= self.ann_min_vectors) or (
                vectors.kind == "ivf" and len(vectors) < self.ann_min_vectors // 2
            ):
                vectors = self._vectors = self.rebuild_vectors()
            try:
                vectors.save(self.vectors_path(generation))
            except (OSError, RuntimeError) as e:  # faiss reports a failed write as RuntimeError
                raise failures.translate(self.directory, e) or e from None
            if self.meta.get("vectors") != vectors.describe():
                self.set_meta({"vectors": vectors.describe()})
            # Older generations, and temporary files of a writer that was killed while saving.
            for old in [*self.directory.glob("vectors-*.faiss"), *self.directory.glob("vectors-*.faiss.tmp-*")]:
                if old != self.vectors_path(generation):
                    old.unlink(missing_ok=True)

    def touch_document(self, path: str, mtime: float) -> None:
        """Record a new mtime for a file whose content did not change, so later syncs skip it without hashing."""
        with self.writing(), Session(self.engine) as s, s.begin():
            row = s.scalar(select(DocumentRow).where(DocumentRow.path == path))
            if row is not None:
                row.mtime = mtime

    def documents_with_hash(self, content_hash: str) -> list[DocumentInfo]:
        """Stored documents with these exact bytes: a renamed, moved or copied file reuses their chunks."""
        with Session(self.engine) as s:
            rows = s.scalars(select(DocumentRow).where(DocumentRow.content_hash == content_hash))
            return [document_info(row) for row in rows]

    # --- writes -----------------------------------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the index's writer lock (:class:`WriterLock`): one writer at a time, a second one gets
        :class:`IndexBusyError` at once; re-entrant within this object. Taking it catches up with every
        commit another writer made, so this one never works from a stale generation or FAISS index."""
        with self._lock.held() as taken:
            if taken:
                self.refresh()
            yield

    def writer_elsewhere(self) -> bool:
        """True while another process (or another object) holds the writer lock."""
        return self._lock.taken_elsewhere()

    def integrity(self) -> str | None:
        """None when SQLite's quick check finds the database sound, else what it found."""
        try:
            with self.engine.connect() as conn:
                rows = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
        except RagError as e:
            return str(e)
        return None if rows == ["ok"] else "; ".join(rows[:3])

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One atomic write: all documents put or removed inside commit together, or not at all."""
        with self.writing():
            vectors = self.vectors if self.dim is not None else None
            with Session(self.engine) as session, session.begin():
                tx = Transaction(session, self.meta.get("embedder", {}).get("dim"))
                yield tx
                generation = bump_generation(session)
            # Committed: mirror the change in memory. On disk the FAISS file is stale until save_vectors().
            self.meta["generation"] = generation
            if vectors is not None:
                vectors.remove(tx.removed_ids)
                for ids, vecs in tx.added:
                    vectors.add(ids, vecs)

    def forget_vectors(self) -> None:
        """Drop the in-memory FAISS index: the next use loads or rebuilds the current generation's."""
        self._vectors = None


def _stored_chunk(c: ChunkRow, d: DocumentRow) -> StoredChunk:
    return StoredChunk(
        ordinal=c.ordinal,
        text=c.text,
        start=c.start,
        end=c.end,
        token_count=c.token_count,
        page=c.page,
        heading=c.heading,
        chunk_id=c.id,
        path=d.path,
        title=d.title,
        kind=d.kind,
    )
