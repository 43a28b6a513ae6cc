"""The index on disk: SQLite (through SQLAlchemy) is the source of truth, FAISS a cache derived from it.

``index.db`` holds documents, chunks, each chunk's vector and a meta record (format version, embedding model,
chunker settings, and a generation number bumped by every write). ``vectors-<generation>.faiss`` is the FAISS
index for that generation. A missing or stale FAISS file (say, after a crash between commit and save) is rebuilt
from the stored vectors on open, so the two can never disagree for long. The store knows nothing of models or
prompts: it keeps what it is given.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    ForeignKey,
    LargeBinary,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from rag.errors import IndexBusyError, IndexFormatError, IndexNotFoundError
from rag.types import Filters
from rag.vectors import VectorIndex

if TYPE_CHECKING:
    import numpy as np

    from ingest.chunking import Chunk

FORMAT_VERSION = 2
DB_NAME = "index.db"
LOCK_NAME = "write.lock"


class Base(DeclarativeBase):
    pass


class DocumentRow(Base):
    __tablename__ = "documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(unique=True)  # absolute, resolved
    content_hash: Mapped[str]  # sha256 of the file's bytes
    size: Mapped[int]
    mtime: Mapped[float]
    kind: Mapped[str]  # text | markdown | rst | html | pdf | code
    title: Mapped[str | None]
    encoding: Mapped[str | None]
    chunker: Mapped[str]  # ChunkerSettings.key() the chunks were cut with: a change re-chunks the file
    indexed_at: Mapped[float]


class ChunkRow(Base):
    __tablename__ = "chunks"
    # AUTOINCREMENT: ids are never reused, so a stale FAISS id can never point at a newer chunk.
    __table_args__: ClassVar[tuple[Any, ...]] = (
        UniqueConstraint("document_id", "ordinal"),  # a document can never hold a chunk twice
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(primary_key=True)  # == FAISS id
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int]
    text: Mapped[str]
    start: Mapped[int]  # character span in the document's extracted text
    end: Mapped[int]
    page: Mapped[int | None]
    heading: Mapped[str | None]
    token_count: Mapped[int]


class VectorRow(Base):
    __tablename__ = "vectors"
    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)  # (dim,) little-endian float32, L2-normalised


class NextVectorRow(Base):
    """Vectors of a new embedding model, filled in batches while the old set keeps serving; see switch_vectors."""

    __tablename__ = "vectors_next"
    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class MetaRow(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[str]  # JSON


@dataclass(frozen=True)
class DocumentInfo:
    """What the store records about a source file."""

    path: str
    content_hash: str
    size: int
    mtime: float
    kind: str
    title: str | None = None
    encoding: str | None = None
    chunker: str = ""


@dataclass(frozen=True)
class StoredChunk:
    """A chunk row joined with its document."""

    id: int
    ordinal: int
    text: str
    start: int
    end: int
    page: int | None
    heading: str | None
    token_count: int
    path: str
    title: str | None
    kind: str


# --- full-text search (BM25) ----------------------------------------------------------------------------------

# Porter stemming over unicode61 words (diacritics folded): scored best on SciFact train (see README, rag eval).
FTS_TOKENIZE = "porter unicode61 remove_diacritics 2"
# An external-content FTS5 table reads the text from `chunks`; triggers keep its index in step with every write
# to `chunks` (including deletes cascaded from `documents`), inside the writer's own transaction.
_FTS_DDL = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5("
    f"text, content='chunks', content_rowid='id', tokenize='{FTS_TOKENIZE}')",
    "CREATE TRIGGER IF NOT EXISTS chunks_fts_insert AFTER INSERT ON chunks BEGIN "
    "INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS chunks_fts_delete AFTER DELETE ON chunks BEGIN "
    "INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER IF NOT EXISTS chunks_fts_update AFTER UPDATE OF id, text ON chunks BEGIN "
    "INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text); END",
)
_FTS_OBJECTS = ("chunks_fts", "chunks_fts_insert", "chunks_fts_delete", "chunks_fts_update")
_WORD = re.compile(r"\w+")
MAX_QUERY_TERMS = 64


def ensure_fts(conn: Connection) -> None:
    """Create the FTS5 table and its triggers when missing, indexing the chunks already stored."""
    names = "SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger') AND name LIKE 'chunks_fts%'"
    present = set(conn.execute(text(names)).scalars().all())
    if present >= set(_FTS_OBJECTS):
        return
    for statement in _FTS_DDL:
        conn.execute(text(statement))
    if "chunks_fts" not in present:
        conn.execute(text("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')"))


def fts_query(query: str) -> str:
    """A MATCH expression for arbitrary user text: its words, each quoted, OR-ed (BM25 ranks partial matches).

    Quoting makes FTS5 operators and syntax in the text (AND, NEAR, *, ", :, ^) plain words; '' for no words.
    """
    terms = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:MAX_QUERY_TERMS]
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def path_matches(path: str | None, pattern: str | None) -> bool:
    """fnmatch ``pattern`` against the whole path or any tail of it after a '/' (so ``*.md``, ``docs/*``)."""
    if path is None or pattern is None:
        return False
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, "*/" + pattern.lstrip("/"))


def _filter_sql(filters: Filters | None) -> tuple[str, dict[str, Any]]:
    """SQL conditions on the `documents` row ``d`` for ``filters``, and their parameters."""
    if filters is None:
        return "", {}
    clauses, params = [], {}
    if filters.path is not None:
        clauses.append("rag_glob(d.path, :f_path)")
        params["f_path"] = filters.path
    if filters.kinds:
        names = [f"f_kind{i}" for i in range(len(filters.kinds))]
        clauses.append(f"d.kind IN ({', '.join(':' + n for n in names)})")
        params.update(zip(names, filters.kinds, strict=True))
    if filters.modified_since is not None:
        clauses.append("d.mtime >= :f_since")
        params["f_since"] = filters.modified_since
    return " AND ".join(clauses), params


def _engine(db: Path) -> Engine:
    engine = create_engine(f"sqlite:///{db}", connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(conn, _record) -> None:  # type: ignore[no-untyped-def]
        cur = conn.cursor()
        # WAL: readers keep reading the last committed state while a writer works.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()
        # Path filters use fnmatch semantics in SQL as in Python (SQLite's own GLOB differs on [!...]).
        conn.create_function("rag_glob", 2, path_matches, deterministic=True)

    return engine


class Store:
    """An open index directory. Use :meth:`open`; write through :meth:`transaction`."""

    def __init__(self, directory: Path, engine: Engine) -> None:
        self.directory = directory
        self._engine = engine
        self._vectors: VectorIndex | None = None
        self._lock_fd: int | None = None
        self._lock_depth = 0
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
            directory.mkdir(parents=True, exist_ok=True)
            engine = _engine(directory / DB_NAME)
            Base.metadata.create_all(engine)
            with engine.begin() as conn:
                ensure_fts(conn)
            store = cls(directory, engine)
            if "format_version" not in store.meta:
                store.set_meta({"format_version": FORMAT_VERSION, "generation": 0, "created_at": time.time()})
            return store
        store = cls(directory, _engine(directory / DB_NAME))
        version = store.meta.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexFormatError(
                f"index at {directory} has format version {version}, this tool reads {FORMAT_VERSION}; "
                "build a new index with --index NEWDIR"
            )
        with store._engine.begin() as conn:  # indexes built before BM25 existed get their FTS table here
            ensure_fts(conn)
        return store

    def close(self) -> None:
        self._engine.dispose()

    # --- meta -------------------------------------------------------------------------------------------------

    def _read_meta(self) -> dict[str, Any]:
        try:
            with Session(self._engine) as s:
                return {row.key: json.loads(row.value) for row in s.scalars(select(MetaRow))}
        except Exception as e:  # sqlalchemy.exc.DatabaseError: not a database, or damaged
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
        with self.writing(), Session(self._engine) as s, s.begin():
            for key, value in values.items():
                s.merge(MetaRow(key=key, value=json.dumps(value)))
        self.meta.update(values)

    @property
    def dim(self) -> int | None:
        embedder = self.meta.get("embedder")
        return int(embedder["dim"]) if embedder else None

    # --- reads ------------------------------------------------------------------------------------------------

    def document(self, path: str) -> DocumentInfo | None:
        with Session(self._engine) as s:
            row = s.scalar(select(DocumentRow).where(DocumentRow.path == path))
            return _info(row) if row else None

    def documents(self, under: str | None = None) -> list[DocumentInfo]:
        """All documents, or those whose path lies under the folder ``under``."""
        with Session(self._engine) as s:
            query = select(DocumentRow).order_by(DocumentRow.path)
            if under is not None:
                query = query.where(DocumentRow.path.startswith(under.rstrip("/") + "/", autoescape=True))
            return [_info(row) for row in s.scalars(query)]

    def counts(self) -> tuple[int, int]:
        """(documents, chunks)."""
        with Session(self._engine) as s:
            docs = s.scalar(select(func.count()).select_from(DocumentRow)) or 0
            chunks = s.scalar(select(func.count()).select_from(ChunkRow)) or 0
            return docs, chunks

    def chunk_ids(self) -> list[int]:
        with Session(self._engine) as s:
            return list(s.scalars(select(ChunkRow.id).order_by(ChunkRow.id)))

    def chunks(self, ids: list[int]) -> dict[int, StoredChunk]:
        """Chunk rows joined with their documents, by id (missing ids are left out)."""
        if not ids:
            return {}
        with Session(self._engine) as s:
            rows = s.execute(
                select(ChunkRow, DocumentRow)
                .join(DocumentRow, ChunkRow.document_id == DocumentRow.id)
                .where(ChunkRow.id.in_(ids))
            )
            return {
                c.id: StoredChunk(
                    c.id,
                    c.ordinal,
                    c.text,
                    c.start,
                    c.end,
                    c.page,
                    c.heading,
                    c.token_count,
                    d.path,
                    d.title,
                    d.kind,
                )
                for c, d in rows
            }

    def document_chunks(self, path: str) -> list[StoredChunk]:
        with Session(self._engine) as s:
            ids = list(
                s.scalars(
                    select(ChunkRow.id)
                    .join(DocumentRow, ChunkRow.document_id == DocumentRow.id)
                    .where(DocumentRow.path == path)
                )
            )
        return sorted(self.chunks(ids).values(), key=lambda c: c.ordinal)

    def bm25(self, query: str, k: int, filters: Filters | None = None) -> list[tuple[int, float]]:
        """Top ``k`` (chunk id, BM25 score) for the words of ``query``, best first; higher scores are better.

        ``filters`` restrict the documents inside the query, so ``k`` results come back whenever that many match.
        """
        match = fts_query(query)
        if not match or k < 1:
            return []
        where, params = _filter_sql(filters)
        if where:
            sql = (
                "SELECT chunks_fts.rowid, -bm25(chunks_fts) FROM chunks_fts "
                "JOIN chunks c ON c.id = chunks_fts.rowid JOIN documents d ON d.id = c.document_id "
                f"WHERE chunks_fts MATCH :match AND {where} ORDER BY bm25(chunks_fts) LIMIT :k"
            )
        else:
            sql = "SELECT rowid, -bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH :match ORDER BY rank LIMIT :k"
        with self._engine.connect() as conn:
            rows = conn.execute(text(sql), {"match": match, "k": k, **params})
            return [(int(i), float(s)) for i, s in rows]

    def filtered_chunk_ids(self, filters: Filters) -> list[int]:
        """Ids of the chunks whose documents pass ``filters``."""
        where, params = _filter_sql(filters)
        sql = "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id"
        with self._engine.connect() as conn:
            return list(conn.execute(text(sql + (f" WHERE {where}" if where else "")), params).scalars())

    # --- vectors ----------------------------------------------------------------------------------------------

    def _vectors_path(self, generation: int) -> Path:
        return self.directory / f"vectors-{generation}.faiss"

    @property
    def vectors(self) -> VectorIndex:
        """The FAISS index for the current generation, loaded (or rebuilt from SQLite) on first use."""
        if self._vectors is None:
            dim = self.dim
            if dim is None:
                raise IndexNotFoundError(f"index at {self.directory} is empty; run `rag ingest FOLDER` first")
            path = self._vectors_path(self.meta["generation"])
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
        except (IndexBusyError, OSError):  # busy, or a read-only index directory
            pass

    def rebuild_vectors(self) -> VectorIndex:
        """A fresh FAISS index from the vectors stored in SQLite (does not write it to disk)."""
        import numpy as np

        dim = self.dim
        if dim is None:
            raise IndexNotFoundError(f"index at {self.directory} is empty; run `rag ingest FOLDER` first")
        index = VectorIndex(dim)
        with Session(self._engine) as s:
            result = s.execute(select(VectorRow.chunk_id, VectorRow.data).execution_options(yield_per=10_000))
            for part in result.partitions():
                ids = np.fromiter((r[0] for r in part), dtype=np.int64, count=len(part))
                vecs = np.frombuffer(b"".join(r[1] for r in part), dtype="<f4").reshape(len(part), dim)
                index.add(ids, vecs)
        return index

    def save_vectors(self) -> None:
        """Persist the FAISS index for the current generation and drop older files."""
        generation = self.meta["generation"]
        with self.writing():
            self.vectors.save(self._vectors_path(generation))
            # Older generations, and temporary files of a writer that was killed while saving.
            for old in [*self.directory.glob("vectors-*.faiss"), *self.directory.glob("vectors-*.faiss.tmp-*")]:
                if old != self._vectors_path(generation):
                    old.unlink(missing_ok=True)

    def touch_document(self, path: str, mtime: float) -> None:
        """Record a new mtime for a file whose content did not change, so later syncs skip it without hashing."""
        with self.writing(), Session(self._engine) as s, s.begin():
            row = s.scalar(select(DocumentRow).where(DocumentRow.path == path))
            if row is not None:
                row.mtime = mtime

    def documents_with_hash(self, content_hash: str) -> list[DocumentInfo]:
        """Stored documents with these exact bytes: a renamed, moved or copied file reuses their chunks."""
        with Session(self._engine) as s:
            rows = s.scalars(select(DocumentRow).where(DocumentRow.content_hash == content_hash))
            return [_info(row) for row in rows]

    # --- writes -----------------------------------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the index's writer lock. One process writes at a time; a second one gets :class:`IndexBusyError`
        at once instead of waiting. Re-entrant within this object. The OS drops the lock when the holder exits,
        however it exits (kill -9 included), so a crash never leaves the index locked."""
        if self._lock_fd is not None:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise IndexBusyError(
                f"index {self.directory} is being written by another process{who}; wait for it to finish "
                "(searching and asking work meanwhile), or use another --index"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd
        try:
            yield
        finally:
            self._lock_fd = None
            os.close(fd)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One atomic write: all documents put or removed inside commit together, or not at all."""
        with self.writing():
            vectors = self.vectors if self.dim is not None else None
            with Session(self._engine) as session, session.begin():
                tx = Transaction(session, self.meta.get("embedder", {}).get("dim"))
                yield tx
                generation = int(self.meta["generation"]) + 1
                session.merge(MetaRow(key="generation", value=json.dumps(generation)))
            # Committed: mirror the change in memory. On disk the FAISS file is stale until save_vectors().
            self.meta["generation"] = generation
            if vectors is not None:
                vectors.remove(tx.removed_ids)
                for ids, vecs in tx.added:
                    vectors.add(ids, vecs)

    # --- a new embedding model: a second vector set, built from the stored chunk text, then switched in --------

    def begin_vector_set(self, embedder: dict[str, Any]) -> None:
        """Start (or resume) building vectors for ``embedder`` (its meta record) beside the current ones."""
        with self.writing():
            if self.meta.get("embedder_next", {}).get("identity") != embedder["identity"]:
                with Session(self._engine) as s, s.begin():
                    s.execute(delete(NextVectorRow))  # a half-built set for some other model
                self.set_meta({"embedder_next": embedder})

    def chunks_without_next_vector(self, limit: int) -> list[tuple[int, str]]:
        """(chunk id, text) of up to ``limit`` chunks the new vector set still lacks."""
        with Session(self._engine) as s:
            rows = s.execute(
                select(ChunkRow.id, ChunkRow.text)
                .outerjoin(NextVectorRow, NextVectorRow.chunk_id == ChunkRow.id)
                .where(NextVectorRow.chunk_id.is_(None))
                .order_by(ChunkRow.id)
                .limit(limit)
            )
            return [(r[0], r[1]) for r in rows]

    def put_next_vectors(self, ids: list[int], vectors: np.ndarray) -> None:
        """Commit one batch of the new set; an interrupted rebuild resumes after the last committed batch."""
        import numpy as np

        vecs = np.ascontiguousarray(vectors, dtype="<f4")
        with self.writing(), Session(self._engine) as s, s.begin():
            s.add_all(NextVectorRow(chunk_id=i, data=v.tobytes()) for i, v in zip(ids, vecs, strict=True))

    def switch_vector_set(self) -> None:
        """Make the new set current in one transaction: readers see the old model's vectors or the new one's."""
        with self.writing():
            embedder = self.meta["embedder_next"]
            generation = int(self.meta["generation"]) + 1
            with Session(self._engine) as s, s.begin():
                s.execute(delete(VectorRow))
                s.execute(
                    insert(VectorRow).from_select(
                        ["chunk_id", "data"], select(NextVectorRow.chunk_id, NextVectorRow.data)
                    )
                )
                s.execute(delete(NextVectorRow))
                s.execute(delete(MetaRow).where(MetaRow.key == "embedder_next"))
                s.merge(MetaRow(key="embedder", value=json.dumps(embedder)))
                s.merge(MetaRow(key="generation", value=json.dumps(generation)))
            self.meta.pop("embedder_next", None)
            self.meta.update(embedder=embedder, generation=generation)
            self._vectors = None
            self.save_vectors()

    # --- consistency ------------------------------------------------------------------------------------------

    def check(self) -> list[Problem]:
        """Everything that is inconsistent in the index; an empty list means healthy."""
        self.refresh()
        problems: list[Problem] = []
        with Session(self._engine) as s:
            no_vector = s.scalar(
                select(func.count())
                .select_from(ChunkRow)
                .outerjoin(VectorRow, VectorRow.chunk_id == ChunkRow.id)
                .where(VectorRow.chunk_id.is_(None))
            )
            orphan_vectors = s.scalar(
                select(func.count())
                .select_from(VectorRow)
                .outerjoin(ChunkRow, VectorRow.chunk_id == ChunkRow.id)
                .where(ChunkRow.id.is_(None))
            )
            orphan_chunks = s.scalar(
                select(func.count())
                .select_from(ChunkRow)
                .outerjoin(DocumentRow, ChunkRow.document_id == DocumentRow.id)
                .where(DocumentRow.id.is_(None))
            )
            empty_docs = s.scalar(
                select(func.count())
                .select_from(DocumentRow)
                .outerjoin(ChunkRow, ChunkRow.document_id == DocumentRow.id)
                .where(ChunkRow.id.is_(None))
            )
            dim = self.dim
            bad_dim = (
                s.scalar(select(func.count()).select_from(VectorRow).where(func.length(VectorRow.data) != dim * 4))
                if dim
                else 0
            )
        for count, kind, what in (
            (no_vector, "chunk-without-vector", "chunks have no stored vector"),
            (orphan_vectors, "orphan-vector", "stored vectors belong to no chunk"),
            (orphan_chunks, "orphan-chunk", "chunks belong to no document"),
            (empty_docs, "document-without-chunks", "documents have no chunks"),
            (bad_dim, "vector-dimension", f"stored vectors are not {dim}-dimensional"),
        ):
            if count:
                problems.append(Problem(kind, f"{count} {what}", int(count)))
        try:
            with self._engine.connect() as conn:  # FTS5 compares its index with the chunks table itself
                conn.execute(text("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)"))
        except Exception as e:  # sqlalchemy DatabaseError: "database disk image is malformed"
            problems.append(Problem("fts-out-of-sync", f"the BM25 index disagrees with the chunks ({e.orig})", 1))
        if dim is not None:
            problems.extend(self._check_faiss())
        return problems

    def _check_faiss(self) -> list[Problem]:
        path = self._vectors_path(self.meta["generation"])
        if not path.is_file():
            return [
                Problem(
                    "faiss-stale",
                    f"no FAISS file for generation {self.meta['generation']} (rebuilt in "
                    "memory on every open until repaired)",
                    1,
                )
            ]
        try:
            loaded = VectorIndex.load(path, int(self.dim or 0))
        except Exception as e:  # a damaged file: faiss raises RuntimeError, a wrong dimension ValueError
            return [Problem("faiss-unreadable", f"{path.name}: {e}".splitlines()[0][:200], 1)]
        faiss_ids = set(loaded.ids().tolist())
        chunk_ids = set(self.chunk_ids())
        problems = []
        if missing := len(chunk_ids - faiss_ids):
            problems.append(Problem("faiss-missing-ids", f"{missing} chunks are not in {path.name}", missing))
        if extra := len(faiss_ids - chunk_ids):
            problems.append(Problem("faiss-extra-ids", f"{extra} ids in {path.name} match no chunk", extra))
        if len(loaded) != len(faiss_ids):
            dup = len(loaded) - len(faiss_ids)
            problems.append(Problem("faiss-duplicate-ids", f"{dup} duplicate ids in {path.name}", dup))
        return problems

    def repair(self) -> None:
        """Delete orphan rows and chunks without vectors' documents, then rebuild the FAISS file from SQLite."""
        with self.writing():
            with Session(self._engine) as s, s.begin():
                s.execute(delete(VectorRow).where(VectorRow.chunk_id.not_in(select(ChunkRow.id))))
                s.execute(delete(ChunkRow).where(ChunkRow.document_id.not_in(select(DocumentRow.id))))
                # A document whose chunks lost their vectors is dropped whole: the next sync re-adds it.
                lost = (
                    select(ChunkRow.document_id)
                    .outerjoin(VectorRow, VectorRow.chunk_id == ChunkRow.id)
                    .where(VectorRow.chunk_id.is_(None))
                )
                s.execute(delete(DocumentRow).where(DocumentRow.id.in_(lost)))
                s.execute(delete(DocumentRow).where(DocumentRow.id.not_in(select(ChunkRow.document_id))))
                if self.dim:
                    s.execute(delete(VectorRow).where(func.length(VectorRow.data) != self.dim * 4))
                s.execute(text("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')"))
                generation = int(self.meta["generation"]) + 1
                s.merge(MetaRow(key="generation", value=json.dumps(generation)))
            self.meta["generation"] = generation
            self._vectors = None
            if self.dim is not None:
                self.save_vectors()


@dataclass(frozen=True)
class Problem:
    """One inconsistency found by :meth:`Store.check`."""

    kind: str  # stable label, e.g. faiss-stale, orphan-chunk
    detail: str
    count: int


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


def _info(row: DocumentRow) -> DocumentInfo:
    return DocumentInfo(row.path, row.content_hash, row.size, row.mtime, row.kind, row.title, row.encoding, row.chunker)
