"""The index's tables (SQLAlchemy) as the code reads and writes them: documents, chunks, each chunk's vector, a meta
record, and the conversations of `rag chat`. The migrations (rag/storage/migrations/) create and change them on
disk; a change here needs a migration there."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import ForeignKey, LargeBinary, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ingest.records import DocumentInfo

FORMAT_VERSION = 2
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


class PreviousVectorRow(Base):
    """Vectors of the model used before the last switch, kept for a rollback (see vector_sets.restore)."""

    __tablename__ = "vectors_prev"
    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class MetaRow(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[str]  # JSON


class ConversationRow(Base):
    __tablename__ = "conversations"
    id: Mapped[str] = mapped_column(primary_key=True)
    created_at: Mapped[float]
    updated_at: Mapped[float] = mapped_column(index=True)


class TurnRow(Base):
    __tablename__ = "turns"
    __table_args__: ClassVar[tuple[Any, ...]] = (UniqueConstraint("conversation_id", "n"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    n: Mapped[int]  # 1-based turn number
    record: Mapped[str]  # JSON: the question, the retrieval query and the answer as Answer.as_dict()
    created_at: Mapped[float]


def document_info(row: DocumentRow) -> DocumentInfo:
    return DocumentInfo(row.path, row.content_hash, row.size, row.mtime, row.kind, row.title, row.encoding, row.chunker)
