"""Is the index consistent? Counts of rows that disagree, the BM25 index against the chunks, the FAISS file against
the stored vectors; and the repair that deletes orphans and rebuilds what is derived. The same on both stores but
for SQLite's own checks (its quick check and FTS5's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from rag.errors import IndexWriteError
from rag.storage.meta import bump_generation
from rag.storage.schema import ChunkRow, DocumentRow, VectorRow
from rag.storage.vectors import VectorIndex

if TYPE_CHECKING:
    from rag.storage.store import Store


@dataclass(frozen=True)
class Problem:
    """One inconsistency found by :func:`check`."""

    kind: str  # stable label, e.g. faiss-stale, orphan-chunk
    detail: str
    count: int


def damaged(store: Store) -> Problem | None:
    """The problem when SQLite's quick check finds the database damaged (nothing else can then be trusted)."""
    damage = store.integrity()
    if damage is None:
        return None
    detail = (
        f"SQLite's quick check failed: {damage}. Rebuild the index from its folders (move "
        f"{store.directory} away, then `rag ingest FOLDER`); the stored vectors may still be read with "
        "`sqlite3 index.db .recover` if the folders are gone"
    )
    return Problem("database-damaged", detail, 1)


def check(store: Store, *, known_sound: bool = False) -> list[Problem]:
    """Everything that is inconsistent in the index; an empty list means healthy. ``known_sound``: the caller
    has just run the quick check (:func:`damaged`), so it is not run again."""
    if not known_sound and (problem := damaged(store)) is not None:
        return [problem]
    store.refresh()
    problems: list[Problem] = []
    with Session(store.engine) as s:
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
        dim = store.dim
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
    if not store.shared:
        problems.extend(_check_fts(store))
    if dim is not None and not store.writer_elsewhere():  # a writer saves its FAISS file when it is done
        problems.extend(_check_faiss(store))
    return problems


def _check_fts(store: Store) -> list[Problem]:
    """FTS5 compares its index with the chunks table itself (PostgreSQL's tsvector is a generated column: it
    cannot disagree)."""
    try:
        with store.engine.connect() as conn:
            conn.execute(text("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)"))
    except IndexWriteError:  # the check writes: on a read-only index (or a full disk) it cannot run
        pass
    except Exception as e:  # sqlalchemy DatabaseError: "database disk image is malformed"
        return [Problem("fts-out-of-sync", f"the BM25 index disagrees with the chunks ({getattr(e, 'orig', e)})", 1)]
    return []


def _check_faiss(store: Store) -> list[Problem]:
    path = store.vectors_path(store.meta["generation"])
    if not path.is_file():
        return [
            Problem(
                "faiss-stale",
                f"no FAISS file for generation {store.meta['generation']} (rebuilt in "
                "memory on every open until repaired)",
                1,
            )
        ]
    try:
        loaded = VectorIndex.load(path, int(store.dim or 0))
    except Exception as e:  # a damaged file: faiss raises RuntimeError, a wrong dimension ValueError
        return [Problem("faiss-unreadable", f"{path.name}: {e}".splitlines()[0][:200], 1)]
    faiss_ids = set(loaded.ids().tolist())
    chunk_ids = set(store.chunk_ids())
    problems = []
    if missing := len(chunk_ids - faiss_ids):
        problems.append(Problem("faiss-missing-ids", f"{missing} chunks are not in {path.name}", missing))
    if extra := len(faiss_ids - chunk_ids):
        problems.append(Problem("faiss-extra-ids", f"{extra} ids in {path.name} match no chunk", extra))
    if len(loaded) != len(faiss_ids):
        dup = len(loaded) - len(faiss_ids)
        problems.append(Problem("faiss-duplicate-ids", f"{dup} duplicate ids in {path.name}", dup))
    return problems


def repair(store: Store) -> None:
    """Delete orphan rows and chunks without vectors' documents, then rebuild the FAISS file from SQLite."""
    with store.writing():
        with Session(store.engine) as s, s.begin():
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
            if store.dim:
                s.execute(delete(VectorRow).where(func.length(VectorRow.data) != store.dim * 4))
            if not store.shared:
                s.execute(text("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')"))
            generation = bump_generation(s)
        store.meta["generation"] = generation
        store.forget_vectors()
        if store.dim is not None:
            store.save_vectors()
