"""The database is the truth, FAISS a cache that always agrees with it (tests taking `location` run on each store)."""

import socket
from pathlib import Path

import numpy as np
import pytest

from ingest.records import Chunk, DocumentInfo
from rag import Index, IndexNotFoundError, StoreUnavailableError
from rag.storage import migrations
from rag.storage.store import Store
from tests.stores import Location
from tests.test_cli import run


def _open(location: Location, create: bool = False) -> Store:
    return Store.open(location.directory, create=create, url=location.url)


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


def test_stale_faiss_file_is_rebuilt_from_the_database(location: Location) -> None:
    # A crash after the SQLite commit but before the FAISS save leaves an old file behind.
    store = _open(location, create=True)
    store.set_meta({"embedder": {"dim": 8}})
    with store.transaction() as tx:
        tx.put_document(DocumentInfo("/a.txt", "h1", 1, 1.0, "text"), [_chunk("a")], _unit(8, 1))
    store.save_vectors()
    with store.transaction() as tx:
        tx.put_document(DocumentInfo("/b.txt", "h2", 1, 1.0, "text"), [_chunk("b")], _unit(8, 2))
    store.close()  # no save_vectors(): on disk, FAISS is one generation behind

    reopened = _open(location)
    assert sorted(reopened.vectors.ids().tolist()) == reopened.chunk_ids()
    assert len(reopened.chunk_ids()) == 2
    reopened.close()


def test_replacing_a_document_keeps_no_old_chunks(location: Location) -> None:
    store = _open(location, create=True)
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


def test_failed_transaction_changes_nothing(location: Location) -> None:
    store = _open(location, create=True)
    store.set_meta({"embedder": {"dim": 8}})
    with pytest.raises(ValueError), store.transaction() as tx:
        tx.put_document(DocumentInfo("/a.txt", "h", 1, 1.0, "text"), [_chunk("a")], _unit(8, 1))
        tx.put_document(DocumentInfo("/b.txt", "h", 1, 1.0, "text"), [_chunk("b")], _unit(4, 1))  # wrong dim
    assert store.counts() == (0, 0)
    assert len(store.vectors) == 0
    store.close()


def test_missing_index_is_a_typed_error(location: Location) -> None:
    with pytest.raises(IndexNotFoundError, match="rag ingest"):
        _open(location)


def test_migrations_bring_an_older_schema_to_head_keeping_its_rows(location: Location) -> None:
    from alembic import command
    from sqlalchemy import create_engine, text

    location.directory.mkdir()
    engine = create_engine(location.url or f"sqlite:///{location.directory / 'index.db'}")
    with engine.begin() as conn:  # an index as revision 0003 left it: no full-text search yet
        command.upgrade(migrations.alembic_config(conn), "0003")
        for key, value in {"format_version": "2", "generation": "1", "embedder": '{"dim": 8}'}.items():
            conn.execute(text("INSERT INTO meta (key, value) VALUES (:k, :v)"), {"k": key, "v": value})
        conn.execute(
            text(
                "INSERT INTO documents (id, path, content_hash, size, mtime, kind, indexed_at, chunker) "
                "VALUES (1, '/a.txt', 'h', 1, 1.0, 'text', 1.0, 'x')"
            )
        )
        conn.execute(
            text(
                'INSERT INTO chunks (id, document_id, ordinal, text, start, "end", token_count) '
                "VALUES (1, 1, 0, 'the lighthouse keeper', 0, 21, 4)"
            )
        )
        conn.execute(text("INSERT INTO vectors (chunk_id, data) VALUES (1, :d)"), {"d": _unit(8, 1).tobytes()})
    engine.dispose()

    store = _open(location)
    with store.engine.connect() as conn:
        assert migrations.revision(conn) == migrations.HEAD
    assert [i for i, _ in store.bm25("lighthouse", 5)] == [1]  # rows written before the migration are searchable
    assert store.vectors.search(_unit(8, 1)[0], 1)[0][0] == 1
    with store.engine.begin() as conn:  # and every migration goes down and up again on this engine
        command.downgrade(migrations.alembic_config(conn), "0002")
        command.upgrade(migrations.alembic_config(conn), "head")
    assert [c.text for c in store.document_chunks("/a.txt")] == ["the lighthouse keeper"]
    assert [i for i, _ in store.bm25("keeper", 5)] == [1]
    store.close()


def test_unreachable_store_is_one_line_without_the_password(pg_url: str, tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://rag:hunter2@127.0.0.1:{port}/rag"
    with pytest.raises(StoreUnavailableError) as caught:
        Store.open(tmp_path / "cache", create=True, url=url)
    message = str(caught.value)
    assert "hunter2" not in message and f"rag:***@127.0.0.1:{port}/rag" in message and "\n" not in message
    result = run("--index", str(tmp_path / "cache"), "--store", url, "search", "anything")
    assert result.returncode == 1 and "hunter2" not in result.stderr
    assert result.stderr.startswith("rag search: cannot use the store") and result.stderr.count("\n") == 1
    # The directory of a PostgreSQL index, opened without --store, names the store to pass.
    Store.open(tmp_path / "shared", create=True, url=pg_url).close()
    with pytest.raises(IndexNotFoundError, match="keeps its records in the store postgresql"):
        Store.open(tmp_path / "shared")


def test_format_1_index_is_upgraded_in_place(tmp_path) -> None:
    import sqlite3

    store = Store.open(tmp_path, create=True)
    store.set_meta(
        {"embedder": {"dim": 8}, "chunker": {"chunk_tokens": 9, "chunk_overlap": 2, "max_tokens": 254, "version": 1}}
    )
    with store.transaction() as tx:
        tx.put_document(DocumentInfo("/a.txt", "h", 1, 1.0, "text", chunker="x"), [_chunk("a")], _unit(8, 1))
    store.close()
    db = sqlite3.connect(tmp_path / "index.db")  # what format 1 looked like, made before the migrations
    db.execute("ALTER TABLE documents DROP COLUMN chunker")
    db.execute("DROP INDEX uq_chunks_doc_ordinal")
    db.execute("DROP TABLE vectors_next")
    db.execute("DROP TABLE vectors_prev")
    db.execute("DROP TABLE alembic_version")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    db.commit()
    db.close()

    upgraded = Store.open(tmp_path)
    assert upgraded.meta["format_version"] == 2 and Store.open(tmp_path).meta["format_version"] == 2
    with upgraded.engine.connect() as conn:
        assert migrations.revision(conn) == migrations.HEAD
    assert [d.chunker for d in upgraded.documents()] == ["t9-o2-m254-v1"]
    assert [c.text for c in upgraded.document_chunks("/a.txt")] == ["a"]
    upgraded.close()


def test_a_reader_on_another_machine_caches_faiss_without_the_writer_lock(pg_url: str, tmp_path: Path) -> None:
    writer = Store.open(tmp_path / "a", create=True, url=pg_url)
    writer.set_meta({"embedder": {"dim": 8}})
    with writer.transaction() as tx:
        tx.put_document(DocumentInfo("/a.txt", "h", 1, 1.0, "text"), [_chunk("a")], _unit(8, 1))
    with writer.writing():  # a writer busy on machine A
        reader = Store.open(tmp_path / "b", url=pg_url)
        assert reader.vectors.ids().tolist() == reader.chunk_ids()
        generation = reader.meta["generation"]
        assert (tmp_path / "b" / f"vectors-{generation}.faiss").is_file()  # saved, the writer lock untouched
        with writer.transaction() as tx:
            tx.put_document(DocumentInfo("/b.txt", "h2", 1, 1.0, "text"), [_chunk("b")], _unit(8, 2))
    reader.refresh()  # A committed: B's index in memory catches up by the new rows alone
    assert sorted(reader.vectors.ids().tolist()) == reader.chunk_ids() and reader.meta["generation"] == generation + 1
    reader.close()
    again = Store.open(tmp_path / "b", url=pg_url)  # B's next process finds its file behind, rebuilds, saves
    assert len(again.vectors) == 2
    assert sorted(p.name for p in (tmp_path / "b").glob("vectors-*")) == [f"vectors-{generation + 1}.faiss"]
    again.close()
    writer.close()


def test_head_is_the_newest_migration() -> None:
    # Opening compares the database with HEAD without importing Alembic: a new migration must move HEAD too.
    from alembic.script import ScriptDirectory

    assert ScriptDirectory(str(Path(migrations.__file__).parent)).get_current_head() == migrations.HEAD
