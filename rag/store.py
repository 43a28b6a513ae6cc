"""The index on disk: SQLite (through SQLAlchemy) is the source of truth, FAISS a cache derived from it.

``index.db`` holds documents, chunks, each chunk's vector and a meta record (format version, embedding model,
chunker settings, and a generation number bumped by every write). ``vectors-<generation>.faiss`` is the FAISS
index for that generation. A missing or stale FAISS file (say, after a crash between commit and save) is rebuilt
from the stored vectors on open, so the two can never disagree for long. The store knows nothing of models or
prompts: it keeps what it is given.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import ForeignKey, LargeBinary, create_engine, delete, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from rag.errors import IndexFormatError, IndexNotFoundError
from rag.vectors import ANN_MIN_VECTORS, VectorIndex

if TYPE_CHECKING:
    import numpy as np

    from ingest.chunking import Chunk

FORMAT_VERSION = 1
DB_NAME = "index.db"


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
    indexed_at: Mapped[float]


class ChunkRow(Base):
    __tablename__ = "chunks"
    # AUTOINCREMENT: ids are never reused, so a stale FAISS id can never point at a newer chunk.
    __table_args__: ClassVar[dict[str, bool]] = {"sqlite_autoincrement": True}
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

    return engine


class Store:
    """An open index directory. Use :meth:`open`; write through :meth:`transaction`."""

    def __init__(self, directory: Path, engine: Engine) -> None:
        self.directory = directory
        self._engine = engine
        self._vectors: VectorIndex | None = None
        # From this many chunks on, a rebuild makes an approximate index (rag/vectors.py explains the choice).
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
            directory.mkdir(parents=True, exist_ok=True)
            engine = _engine(directory / DB_NAME)
            Base.metadata.create_all(engine)
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

    def set_meta(self, values: dict[str, Any]) -> None:
        with Session(self._engine) as s, s.begin():
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
            loaded = VectorIndex.load(path, dim) if path.is_file() else None
            if loaded is not None and len(loaded) == self.counts()[1]:
                self._vectors = loaded
            else:
                self._vectors = self.rebuild_vectors()
        return self._vectors

    def rebuild_vectors(self) -> VectorIndex:
        """A fresh FAISS index from the vectors stored in SQLite (does not write it to disk): exact below
        ``ann_min_vectors`` chunks, approximate (IVF) from there on."""
        import numpy as np

        from rag.vectors import ivf_nlist

        dim = self.dim
        if dim is None:
            raise IndexNotFoundError(f"index at {self.directory} is empty; run `rag ingest FOLDER` first")
        index = VectorIndex(dim)
        with Session(self._engine) as s:
            n = s.scalar(select(func.count()).select_from(VectorRow)) or 0
            if n >= self.ann_min_vectors:
                # Centroids are trained on a random sample (bounded memory: 40 per centroid).
                nlist = ivf_nlist(n)
                sample = s.scalars(select(VectorRow.data).order_by(func.random()).limit(40 * nlist)).all()
                index = VectorIndex.ivf(
                    dim, np.frombuffer(b"".join(sample), dtype="<f4").reshape(len(sample), dim), nlist
                )
            result = s.execute(select(VectorRow.chunk_id, VectorRow.data).execution_options(yield_per=10_000))
            for part in result.partitions():
                ids = np.fromiter((r[0] for r in part), dtype=np.int64, count=len(part))
                vecs = np.frombuffer(b"".join(r[1] for r in part), dtype="<f4").reshape(len(part), dim)
                index.add(ids, vecs)
        return index

    def save_vectors(self) -> None:
        """Persist the FAISS index for the current generation and drop older files."""
        generation = self.meta["generation"]
        vectors = self.vectors
        # Switch kinds when the size crossed the threshold (with a margin, so an index at the boundary does not
        # retrain on every run).
        if (vectors.kind == "flat" and len(vectors) >= self.ann_min_vectors) or (
            vectors.kind == "ivf" and len(vectors) < self.ann_min_vectors // 2
        ):
            vectors = self._vectors = self.rebuild_vectors()
        vectors.save(self._vectors_path(generation))
        if self.meta.get("vectors") != vectors.describe():
            self.set_meta({"vectors": vectors.describe()})
        for old in self.directory.glob("vectors-*.faiss"):
            if old != self._vectors_path(generation):
                old.unlink(missing_ok=True)

    def touch_document(self, path: str, mtime: float) -> None:
        """Record a new mtime for a file whose content did not change, so later syncs skip it without hashing."""
        with Session(self._engine) as s, s.begin():
            row = s.scalar(select(DocumentRow).where(DocumentRow.path == path))
            if row is not None:
                row.mtime = mtime

    # --- writes -----------------------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One atomic write: all documents put or removed inside commit together, or not at all."""
        vectors = self.vectors if self.dim is not None else None
        with Session(self._engine) as session, session.begin():
            tx = Transaction(session, self.meta.get("embedder", {}).get("dim"))
            yield tx
            generation = int(self.meta["generation"]) + 1
            session.merge(MetaRow(key="generation", value=json.dumps(generation)))
        # Committed: mirror the change in memory. On disk the FAISS file is now stale until save_vectors().
        self.meta["generation"] = generation
        if vectors is not None:
            vectors.remove(tx.removed_ids)
            for ids, vecs in tx.added:
                vectors.add(ids, vecs)


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
    return DocumentInfo(row.path, row.content_hash, row.size, row.mtime, row.kind, row.title, row.encoding)
