"""The index: a database (through SQLAlchemy) is the source of truth, FAISS a cache derived from it.

The database is ``index.db`` (SQLite) in the index directory, or a PostgreSQL database shared by many machines
(``--store URL``). It holds documents, chunks, each chunk's vector and a meta record (format version, embedding
model, chunker settings, and a generation number bumped by every write). ``vectors-<generation>.faiss`` in the
index directory is the FAISS index for that generation: each machine keeps its own. A missing or stale FAISS file
(after a crash between commit and save, or a commit made on another machine) is rebuilt from the stored vectors,
so the two can never disagree for long. The store knows nothing of models or prompts: it keeps what it is given.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ingest.records import DocumentInfo
from rag.config import redact_url
from rag.errors import IndexBusyError, IndexFormatError, IndexNotFoundError, IndexWriteError, RagError
from rag.storage import engine as engines
from rag.storage import failures, fts, fts_postgres, migrations, vector_table
from rag.storage.lock import AdvisoryLock, FileLock, WriterLock
from rag.storage.meta import bump_generation, read_meta
from rag.storage.schema import DB_NAME, ChunkRow, DocumentRow, MetaRow, document_info
from rag.storage.transaction import Transaction
from rag.storage.vectors import ANN_MIN_VECTORS, VectorIndex
from rag.types import Filters, StoredChunk

# In an index directory whose database is a PostgreSQL store: its URL (without the password), so that opening the
# directory without --store says which store to name.
STORE_MARKER = "store.json"
# A reader that catches up with other processes' commits saves its FAISS file at most this often (as the writer
# saves its own during a sync), so that a large index is not rewritten on every commit.
CACHE_SAVE_EVERY_S = 30.0


class Store:
    """An open index. Use :meth:`open`; write through :meth:`transaction`."""

    def __init__(self, directory: Path, engine: Engine, where: str | None = None) -> None:
        self.directory = directory
        self.engine = engine
        # How messages name the index: its directory, or the store's URL.
        self.where = where or str(directory)
        self._vectors: VectorIndex | None = None
        self._lock: WriterLock = FileLock(directory) if where is None else AdvisoryLock(engine, self.where)
        # A PostgreSQL store's readers save their FAISS cache under this lock of the directory alone.
        self._cache_lock = FileLock(directory)
        self._vectors_at: int | None = None  # the generation the in-memory FAISS index is known to hold
        self._saved_at = 0.0  # time.monotonic() of this object's last FAISS save
        self._corpus_stats = fts_postgres.CorpusStats()  # BM25's statistics on PostgreSQL
        # From this many chunks on, a rebuild makes an approximate index (rag/storage/vectors.py explains the choice).
        self.ann_min_vectors = ANN_MIN_VECTORS
        self.meta: dict[str, Any] = self._read_meta()

    @classmethod
    def open(cls, directory: Path, *, create: bool = False, url: str | None = None) -> Store:
        """Open the index in ``directory``; with ``create``, make an empty one if there is none. With ``url`` (a
        PostgreSQL store) the database holds the index and ``directory`` only this machine's caches."""
        directory = Path(directory)
        store = cls._open_sqlite(directory, create) if url is None else cls._open_postgres(directory, url, create)
        try:
            store._upgrade()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def _open_sqlite(cls, directory: Path, create: bool) -> Store:
        if not (directory / DB_NAME).is_file():
            marker = directory / STORE_MARKER
            if marker.is_file():
                url = json.loads(marker.read_text()).get("store")
                raise IndexNotFoundError(
                    f"the index at {directory} keeps its records in the store {url}; pass --store URL (or set "
                    "RAG_STORE) with that store's password"
                )
            if not create:
                raise IndexNotFoundError(
                    f"no index at {directory}; run `rag ingest FOLDER` to build one, or pass --index DIR"
                )
            engines.create_database(directory)
        return cls(directory, engines.connect(directory / DB_NAME))

    @classmethod
    def _open_postgres(cls, directory: Path, url: str, create: bool) -> Store:
        where = redact_url(url)
        engine = engines.connect_store(url)
        try:
            if not engines.store_exists(engine):
                if not create:
                    raise IndexNotFoundError(
                        f"no index in the store {where}; run `rag ingest FOLDER --store URL` to build one"
                    )
                engines.create_store(engine)
            _cache_directory(directory, where)
        except BaseException:
            engine.dispose()
            raise
        return cls(directory, engine, where)

    def _upgrade(self) -> None:
        """Run the migrations the database lacks: indexes made by an earlier version open as they are."""
        with self.engine.connect() as conn:
            revision = migrations.revision(conn)
        if revision == migrations.HEAD:
            return
        stamp = None
        if revision is None:  # made before Alembic: its format version says which revision it matches
            stamp = migrations.LEGACY_REVISIONS.get(self.meta.get("format_version"))
            known = stamp is not None
        else:
            known = migrations.known(revision)
        if not known:
            version = revision or self.meta.get("format_version")
            raise IndexFormatError(
                f"index at {self.where} has schema {version}, newer than this tool reads ({migrations.HEAD}); "
                "upgrade rag, or build a new index with --index NEWDIR"
            )
        try:
            with self.writing():
                engines.upgrade(self.engine, stamp)
        except IndexWriteError:
            if stamp != migrations.LEGACY_REVISIONS[2]:
                raise
            return  # a read-only index of format 2 reads as it is; it is upgraded when opened writable
        self.meta = self._read_meta()

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
                f"{self.directory / DB_NAME if self.where == str(self.directory) else self.where} is not a readable "
                f"index ({e.__class__.__name__}); point --index at another directory or move this one away"
            ) from None

    def refresh(self) -> None:
        """Catch up with writes made by other processes since this store was opened (or last refreshed)."""
        meta = self._read_meta()
        behind = meta.get("generation") != self.meta.get("generation")
        if meta.get("embedder") != self.meta.get("embedder"):
            self._vectors = None
        self.meta = meta
        if behind and self._vectors is not None and self.dim is not None:
            self._catch_up(self._vectors, self.dim)
            if time.monotonic() - self._saved_at >= CACHE_SAVE_EVERY_S:
                self._save_if_idle()

    def _catch_up(self, vectors: VectorIndex, dim: int) -> None:
        """Bring an in-memory FAISS index up to the database by the difference alone: chunk ids only grow and
        one writer commits at a time, so the chunks it lacks are those above its highest id, and the ones it has
        too many are those gone from the table. Far cheaper than a rebuild when another process commits a
        batch to a large index."""
        import numpy as np

        have = vectors.ids()
        generation, current, ids, vecs = vector_table.read_changes(
            self.engine, dim, int(have.max()) if len(have) else 0
        )
        vectors.remove(np.setdiff1d(have, current, assume_unique=True).tolist())
        vectors.add(ids, vecs)
        # PostgreSQL read one snapshot, so the index is that generation's; SQLite's reads were not one snapshot
        # (_save_if_idle checks under the writer lock instead).
        self._vectors_at = generation if self.shared else None

    def save_cache(self) -> None:
        """Save this machine's FAISS file for the current generation when it has none (a reader that caught up
        in memory), unless a writer is busy (it saves its own)."""
        if self.dim is not None:
            _ = self.vectors
            if not self.vectors_path(self.meta["generation"]).is_file():
                self._save_if_idle()

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
        """Top ``k`` (chunk id, BM25 score) for the words of ``query``, best first (see :func:`fts.bm25` and
        :func:`fts_postgres.bm25`)."""
        with self.engine.connect() as conn:
            if self.shared:
                return fts_postgres.bm25(conn, query, k, filters, self._corpus_stats, self.meta["generation"])
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
        (it will save its own); readers never wait for the lock. A reader of a PostgreSQL store saves its own
        cache under a lock of its directory only, never the store's writer lock (a writer on another machine
        would find the index busy): its rebuild read one snapshot, so the file is right for its generation."""
        if self.shared:
            if self._vectors_at != self.meta["generation"]:
                return
            try:
                with self._cache_lock.held():
                    self._vectors_save(self.meta["generation"])
            except (IndexBusyError, IndexWriteError, OSError, RuntimeError):
                pass
            return
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
        index, self._vectors_at = vector_table.read_index(self.engine, self.dim, self.ann_min_vectors)
        return index

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
            self._vectors_save(generation)
            if self.meta.get("vectors") != vectors.describe():
                self.set_meta({"vectors": vectors.describe()})

    def _vectors_save(self, generation: int) -> None:
        try:
            self.vectors.save(self.vectors_path(generation))
            self._saved_at = time.monotonic()
        except (OSError, RuntimeError) as e:  # faiss reports a failed write as RuntimeError
            raise failures.translate(self.directory, e) or e from None
        # Older generations, and temporary files of a writer that was killed while saving them. Newer ones stay:
        # on a shared store another process of this machine may have saved a later generation meanwhile.
        for old in [*self.directory.glob("vectors-*.faiss"), *self.directory.glob("vectors-*.faiss.tmp-*")]:
            number = old.name.removeprefix("vectors-").split(".", 1)[0]
            if number.isdigit() and int(number) < generation:
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

    @property
    def shared(self) -> bool:
        """True when the records live in a PostgreSQL store, not in this directory."""
        return self.engine.dialect.name == "postgresql"

    def database_bytes(self) -> int:
        """The size of the database: ``index.db`` and its log, or the PostgreSQL database."""
        if self.shared:
            with self.engine.connect() as conn:
                return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar() or 0)
        files = [self.directory / DB_NAME, self.directory / f"{DB_NAME}-wal"]
        return sum(p.stat().st_size for p in files if p.is_file())

    def integrity(self) -> str | None:
        """None when SQLite's quick check finds the database sound, else what it found. PostgreSQL checks its
        own pages as it reads them, and a server that cannot be reached raises instead."""
        if self.shared:
            return None
        try:
            with self.engine.connect() as conn:
                rows = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
        except RagError as e:
            return str(e)
        if rows == ["ok"]:
            return None
        # One row may hold several problems, a line each, under a "*** in database main ***" header.
        problems = [line for row in rows for line in row.splitlines() if line.strip() and not line.startswith("***")]
        return "; ".join(problems[:3])

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


def _cache_directory(directory: Path, where: str) -> None:
    """The index directory of a PostgreSQL store holds this machine's FAISS file and caches, and the marker."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        marker = directory / STORE_MARKER
        if not marker.is_file() and os.access(directory, os.W_OK):
            marker.write_text(json.dumps({"store": where}) + "\n")
    except OSError as e:
        raise IndexWriteError(
            f"cannot use {directory} as the cache of the store {where} ({e.strerror}); pass --index a writable "
            "directory"
        ) from None


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
