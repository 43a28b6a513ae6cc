"""SQLite is the truth, FAISS a cache that always agrees with it."""

import numpy as np
import pytest

from ingest.records import Chunk, DocumentInfo
from rag import Index, IndexNotFoundError
from rag.storage.store import Store


def test_faiss_ids_match_chunk_rows_one_to_one(sample_index: Index) -> None:
    store = sample_index.store
    faiss_ids = sorted(store.vectors.ids().tolist())
    assert faiss_ids == store.chunk_ids()
    assert len(faiss_ids) == store.counts()[1]


def test_saved_vectors_reload_and_rebuild_identically(sample_index: Index) -> None:
    directory = sample_index.store.directory
    generation = sample_index.store.meta["generation"]
    assert (directory / f"vectors-{generation}.faiss").is_file()
    query = sample_index.embedder.embed_query("how is attention scaled?")
    reopened = Store.open(directory)
    rebuilt = reopened.rebuild_vectors()
    try:
        assert reopened.vectors.search(query, 5) == sample_index.store.vectors.search(query, 5)
        assert [i for i, _ in rebuilt.search(query, 5)] == [i for i, _ in reopened.vectors.search(query, 5)]
    finally:
        reopened.close()


def _chunk(text: str, ordinal: int = 0) -> Chunk:
    return Chunk(ordinal, text, 0, len(text), 3)


def _unit(dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(1, dim)).astype(np.float32)
    return v / np.linalg.norm(v)


def test_stale_faiss_file_is_rebuilt_from_sqlite(tmp_path) -> None:
    # A crash after the SQLite commit but before the FAISS save leaves an old file behind.
    store = Store.open(tmp_path, create=True)
    store.set_meta({"embedder": {"dim": 8}})
    with store.transaction() as tx:
        tx.put_document(DocumentInfo("/a.txt", "h1", 1, 1.0, "text"), [_chunk("a")], _unit(8, 1))
    store.save_vectors()
    with store.transaction() as tx:
        tx.put_document(DocumentInfo("/b.txt", "h2", 1, 1.0, "text"), [_chunk("b")], _unit(8, 2))
    store.close()  # no save_vectors(): on disk, FAISS is one generation behind

    reopened = Store.open(tmp_path)
    assert sorted(reopened.vectors.ids().tolist()) == reopened.chunk_ids()
    assert len(reopened.chunk_ids()) == 2
    reopened.close()


def test_replacing_a_document_keeps_no_old_chunks(tmp_path) -> None:
    store = Store.open(tmp_path, create=True)
    store.set_meta({"embedder": {"dim": 8}})
    info = DocumentInfo("/a.txt", "h1", 1, 1.0, "text")
    with store.transaction() as tx:
        tx.put_document(info, [_chunk("old one"), _chunk("old two", 1)], np.vstack([_unit(8, 1), _unit(8, 2)]))
    with store.transaction() as tx:
        removed = tx.put_document(info, [_chunk("new")], _unit(8, 3))
    assert removed == 2
    assert [c.text for c in store.document_chunks("/a.txt")] == ["new"]
    assert sorted(store.vectors.ids().tolist()) == store.chunk_ids()
    store.close()


def test_failed_transaction_changes_nothing(tmp_path) -> None:
    store = Store.open(tmp_path, create=True)
    store.set_meta({"embedder": {"dim": 8}})
    with pytest.raises(ValueError), store.transaction() as tx:
        tx.put_document(DocumentInfo("/a.txt", "h", 1, 1.0, "text"), [_chunk("a")], _unit(8, 1))
        tx.put_document(DocumentInfo("/b.txt", "h", 1, 1.0, "text"), [_chunk("b")], _unit(4, 1))  # wrong dim
    assert store.counts() == (0, 0)
    assert len(store.vectors) == 0
    store.close()


def test_missing_index_is_a_typed_error(tmp_path) -> None:
    with pytest.raises(IndexNotFoundError, match="rag ingest"):
        Store.open(tmp_path / "nothing")


def test_format_1_index_is_upgraded_in_place(tmp_path) -> None:
    import sqlite3

    store = Store.open(tmp_path, create=True)
    store.set_meta(
        {"embedder": {"dim": 8}, "chunker": {"chunk_tokens": 9, "chunk_overlap": 2, "max_tokens": 254, "version": 1}}
    )
    with store.transaction() as tx:
        tx.put_document(DocumentInfo("/a.txt", "h", 1, 1.0, "text", chunker="x"), [_chunk("a")], _unit(8, 1))
    store.close()
    db = sqlite3.connect(tmp_path / "index.db")  # what format 1 looked like
    db.execute("ALTER TABLE documents DROP COLUMN chunker")
    db.execute("DROP TABLE vectors_next")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    db.commit()
    db.close()

    upgraded = Store.open(tmp_path)
    assert upgraded.meta["format_version"] == 2 and Store.open(tmp_path).meta["format_version"] == 2
    assert [d.chunker for d in upgraded.documents()] == ["t9-o2-m254-v1"]
    assert [c.text for c in upgraded.document_chunks("/a.txt")] == ["a"]
    upgraded.close()
