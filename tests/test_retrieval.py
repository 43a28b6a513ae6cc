"""Hybrid retrieval: FTS5 BM25 in step with the chunks, fusion, filters, threshold, MMR, reranker errors."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from ingest.records import Chunk, DocumentInfo
from rag import Config, ConfigError, Index, ModelNotFoundError
from rag.retrieval.retrieve import Fusion, fuse, retrieve
from rag.storage.fts import fts_query
from rag.storage.store import Store
from rag.types import Filters
from tests.stores import Location

from .conftest import SAMPLE_DOCS, load_questions


def _chunk(text: str, ordinal: int = 0) -> Chunk:
    return Chunk(ordinal, text, 0, len(text), 3)


def _units(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _fts_rows(store: Store) -> int:
    if store.engine.dialect.name == "postgresql":  # a generated column: every chunk has its tsvector
        with store.engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM chunks WHERE fts IS NOT NULL")).scalar()
    db = sqlite3.connect(store.directory / "index.db")
    try:
        # 'integrity-check' with rank 1 compares the FTS index with the content table and raises on any drift.
        db.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)")
        return db.execute("SELECT count(*) FROM chunks_fts").fetchone()[0]
    finally:
        db.close()


def test_fts_follows_inserts_replacements_and_deletes(location: Location) -> None:
    store = Store.open(location.directory, create=True, url=location.url)
    store.set_meta({"embedder": {"dim": 8}})
    a, b = DocumentInfo("/a.txt", "h1", 1, 1.0, "text"), DocumentInfo("/b.txt", "h2", 1, 1.0, "text")
    with store.transaction() as tx:
        tx.put_document(a, [_chunk("the walrus sleeps", 0), _chunk("penguins swim", 1)], _units(2, 1))
        tx.put_document(b, [_chunk("a walrus and a carpenter")], _units(1, 2))
    assert _fts_rows(store) == 3
    assert len(store.bm25("walrus", 10)) == 2

    with store.transaction() as tx:  # replace a.txt: its old words must vanish from BM25
        tx.put_document(a, [_chunk("an octopus hides")], _units(1, 3))
    assert [store.chunks([i])[i].path for i, _ in store.bm25("walrus", 10)] == ["/b.txt"]
    assert store.bm25("penguins", 10) == []
    assert len(store.bm25("octopus", 10)) == 1

    with store.transaction() as tx:
        tx.remove_document("/b.txt")
    assert store.bm25("walrus carpenter", 10) == []
    assert _fts_rows(store) == 1
    store.close()


def test_fts_follows_an_update_of_chunk_text(tmp_path: Path) -> None:
    # Code paths that edit chunks in place (not through put_document) are covered by the update trigger.
    store = Store.open(tmp_path, create=True)
    store.set_meta({"embedder": {"dim": 8}})
    with store.transaction() as tx:
        tx.put_document(DocumentInfo("/a.txt", "h", 1, 1.0, "text"), [_chunk("old words here")], _units(1))
    db = sqlite3.connect(tmp_path / "index.db")
    db.execute("UPDATE chunks SET text = 'fresh vocabulary now'")
    db.commit()
    db.close()
    assert store.bm25("old", 5) == []
    assert len(store.bm25("vocabulary", 5)) == 1
    assert _fts_rows(store) == 1
    store.close()


def test_index_without_fts_gets_it_on_open(tmp_path: Path) -> None:
    store = Store.open(tmp_path, create=True)
    store.set_meta({"embedder": {"dim": 8}})
    with store.transaction() as tx:
        tx.put_document(DocumentInfo("/a.txt", "h", 1, 1.0, "text"), [_chunk("lighthouse keeper")], _units(1))
    store.close()
    db = sqlite3.connect(tmp_path / "index.db")  # an index written before BM25 existed
    for trigger in ("chunks_fts_insert", "chunks_fts_delete", "chunks_fts_update"):
        db.execute(f"DROP TRIGGER {trigger}")
    db.execute("DROP TABLE chunks_fts")
    db.execute("DROP TABLE vectors_prev")
    db.execute("DROP TABLE alembic_version")  # made before the migrations, too
    db.commit()
    db.close()
    reopened = Store.open(tmp_path)
    assert len(reopened.bm25("lighthouse", 5)) == 1
    reopened.close()


@pytest.mark.parametrize(
    "query", ['"', "AND", "OR NOT", "*", "NEAR(a b)", "col:umn", "^start", "a' OR 1=1 --", "(((", "", "   "]
)
def test_any_user_text_is_a_safe_bm25_query(sample_index: Index, query: str) -> None:
    assert isinstance(sample_index.store.bm25(query, 3), list)


def test_fts_query_quotes_every_word() -> None:
    assert fts_query('top-p "AND" NEAR*') == '"top" OR "p" OR "and" OR "near"'
    assert fts_query("?!") == ""


def test_rrf_fusion_matches_hand_computed_scores() -> None:
    dense = [(1, 0.9), (2, 0.8), (3, 0.7)]
    sparse = [(3, 12.0), (4, 9.0)]
    fused = dict(fuse(dense, sparse, Fusion(rrf_k=10, dense_weight=1.0, bm25_weight=2.0)))
    assert fused[1] == pytest.approx(1 / 11)
    assert fused[3] == pytest.approx(1 / 13 + 2 / 11)
    assert fused[4] == pytest.approx(2 / 12)
    assert [cid for cid, _ in fuse(dense, sparse, Fusion(10, 1.0, 2.0))] == [3, 4, 1, 2]


Q19 = next(q for q in load_questions() if q["id"] == "q19")


def _found(hits: list) -> set[str]:
    return {str(Path(h.path).relative_to(SAMPLE_DOCS)) for h in hits}


def test_bm25_and_hybrid_find_the_lexical_question_dense_misses(sample_index: Index) -> None:
    files = set(Q19["files"])
    assert not _found(sample_index.search(Q19["question"], 5, retrieval="dense")) & files
    assert _found(sample_index.search(Q19["question"], 5, retrieval="bm25")) & files
    assert _found(sample_index.search(Q19["question"], 5)) & files  # the default, hybrid


def test_every_store_retrieves_alike(any_index: Index, sample_index: Index) -> None:
    """The same documents and vectors: dense hits identical to the session's SQLite index, BM25 (FTS5 or
    PostgreSQL's tsvector) finding what dense misses, and filters inside every mode."""
    any_index.ingest(SAMPLE_DOCS)
    assert any_index.counts() == sample_index.counts()
    for question in [q["question"] for q in load_questions()[:8]]:
        ours, theirs = (i.search(question, 5, retrieval="dense") for i in (any_index, sample_index))
        assert [(h.path, h.start) for h in ours] == [(h.path, h.start) for h in theirs]
        assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], abs=1e-5)
    files = set(Q19["files"])
    assert _found(any_index.search(Q19["question"], 5, retrieval="bm25")) & files
    assert _found(any_index.search(Q19["question"], 5)) & files
    query = "how do tokens attend to each other in self-attention?"
    for mode in ("dense", "bm25", "hybrid"):
        hits = any_index.search(query, 4, retrieval=mode, filters=Filters(kinds=("pdf",)))
        assert len(hits) == 4 and {h.kind for h in hits} == {"pdf"}, mode
        hits = any_index.search("probability of the next token", 5, retrieval=mode, filters=Filters(path="decoding/*"))
        assert hits and all("/decoding/" in h.path for h in hits), mode
    assert any_index.search("attention", 5, filters=Filters(path="no-such-dir/*")) == []


def test_candidates_explain_every_hit(sample_index: Index) -> None:
    result = sample_index.retrieve("How does nucleus sampling choose tokens?", 3)
    assert result.mode == "hybrid"
    kept = [c for c in result.candidates if c.kept]
    assert [c.rank for c in kept] == [1, 2, 3] and all(c.reason == "kept" for c in kept)
    assert [c.chunk_id for c in kept] == [h.chunk_id for h in result.hits]
    assert {c.reason for c in result.candidates if not c.kept} == {"beyond-k"}
    cfg = sample_index.config
    for c in result.candidates:
        assert c.dense_rank is not None or c.bm25_rank is not None
        expected = sum(
            w / (cfg.rrf_k + r) for w, r in ((cfg.dense_weight, c.dense_rank), (cfg.bm25_weight, c.bm25_rank)) if r
        )
        assert c.fused_score == pytest.approx(expected)
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)


def test_threshold_is_on_cosine_in_every_mode(sample_index: Index) -> None:
    for mode in ("dense", "bm25", "hybrid"):
        result = sample_index.retrieve("How does beam search work?", 5, retrieval=mode, min_score=0.3)
        assert result.hits
        for c in result.candidates:
            assert c.dense_score is not None
            assert (c.reason == "threshold") == (c.dense_score < 0.3)


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_kind_filter_applies_inside_retrieval(sample_index: Index, mode: str) -> None:
    # Unfiltered, the top hits for this question come from the attention documents; filtered, all k are PDF chunks.
    query = "how do tokens attend to each other in self-attention?"
    hits = sample_index.search(query, 4, retrieval=mode, filters=Filters(kinds=("pdf",)))
    assert len(hits) == 4
    assert {h.kind for h in hits} == {"pdf"}
    unfiltered = sample_index.search(query, 4, retrieval=mode)
    assert sum(h.kind == "pdf" for h in unfiltered) < 4


def test_path_glob_filter(sample_index: Index) -> None:
    for pattern in ("decoding/*", "*.html", str(SAMPLE_DOCS / "decoding") + "/*"):
        hits = sample_index.search("attention and embeddings", 5, filters=Filters(path=pattern))
        assert hits, pattern
        assert all("/decoding/" in h.path or h.path.endswith(".html") for h in hits), pattern
    assert sample_index.search("attention", 5, filters=Filters(path="no-such-dir/*")) == []


def test_modified_since_filter(any_index: Index, docs_copy: Path) -> None:
    fresh_index = any_index
    old = time.time() - 30 * 86400
    for path in docs_copy.rglob("*"):
        os.utime(path, (old, old))
    recent = docs_copy / "glossary.txt"
    os.utime(recent, None)
    fresh_index.ingest(docs_copy)
    hits = fresh_index.search("tokens", 5, filters=Filters(modified_since=time.time() - 86400))
    assert hits and {h.path for h in hits} == {str(recent.resolve())}


def _mean_pairwise_cosine(index: Index, hits: list) -> float:
    vecs = index.store.vectors.vectors([h.chunk_id for h in hits])
    mat = np.stack([vecs[h.chunk_id] for h in hits])
    sims = mat @ mat.T
    n = len(hits)
    return float((sims.sum() - n) / (n * (n - 1)))


def test_mmr_trades_relevance_for_diversity(sample_index: Index) -> None:
    query = "What is temperature in sampling?"
    plain = sample_index.search(query, 5)
    assert [h.chunk_id for h in sample_index.search(query, 5, mmr=1.0)] == [h.chunk_id for h in plain]
    diverse = sample_index.retrieve(query, 5, mmr=0.3)
    assert diverse.hits[0].chunk_id == plain[0].chunk_id  # the most relevant still leads
    assert _mean_pairwise_cosine(sample_index, diverse.hits) < _mean_pairwise_cosine(sample_index, plain)
    assert any(c.reason == "mmr" for c in diverse.candidates)
    with pytest.raises(ConfigError, match="mmr"):
        sample_index.search(query, 5, mmr=1.5)


def test_unknown_mode_is_a_config_error(sample_index: Index) -> None:
    with pytest.raises(ConfigError, match=r"retrieval 'sparse': use one of dense, bm25, hybrid"):
        sample_index.search("attention", 3, retrieval="sparse")


def test_missing_reranker_is_a_typed_error(sample_index: Index, tmp_path: Path) -> None:
    # No cross-encoder is bundled (and nothing may be downloaded): only the error paths are testable here.
    for spec in (str(tmp_path / "no-such-model"), "./relative/missing"):
        index = Index(sample_index.store, Config.load(index=sample_index.store.directory, reranker=spec))
        index.embedder = sample_index.embedder
        with pytest.raises(ModelNotFoundError, match="reranker"):
            index.search("attention", 3)
    not_a_model = tmp_path / "empty-folder"
    not_a_model.mkdir()
    index = Index(sample_index.store, Config.load(index=sample_index.store.directory, reranker=str(not_a_model)))
    index.embedder = sample_index.embedder
    with pytest.raises(ModelNotFoundError, match="could not be loaded"):
        index.search("attention", 3)
    # rerank=False (what `rag eval` uses for the non-rerank columns) leaves the reranker untouched.
    assert index.retrieve("attention", 3, rerank=False).hits


def test_retrieval_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Config.load().retrieval == "hybrid" and Config.load().mmr is None
    monkeypatch.setenv("RAG_RETRIEVAL", "bm25")
    monkeypatch.setenv("RAG_MMR", "0.5")
    monkeypatch.setenv("RAG_RERANKER", "")
    config = Config.load()
    assert (config.retrieval, config.mmr, config.reranker) == ("bm25", 0.5, None)
    monkeypatch.setenv("RAG_RETRIEVAL", "sparse")
    with pytest.raises(ConfigError, match="retrieval"):
        Config.load()


def test_rows_replaced_under_a_stale_reader_do_not_take_the_k_places(any_index: Index, tmp_path: Path) -> None:
    fresh_index = any_index
    folder = tmp_path / "notes"
    folder.mkdir()

    def write(suffix: str) -> None:
        for n in range(6):
            (folder / f"n{n}.txt").write_text(f"Volcano note {n}: basalt lava flows from vent {n}{suffix}.\n")

    write("")
    fresh_index.ingest(folder)
    reader = Index.open(config=fresh_index.config)  # another process's view of the same index
    reader.embedder = fresh_index.embedder
    assert len(reader.store.vectors) == 6  # its FAISS index, loaded at this generation
    write(", revised by the survey")
    fresh_index.ingest(folder)  # a writer replaces every chunk
    # Searching before the reader has caught up: every id in its FAISS index is gone from SQLite. Those must not
    # take the k places (they did: k stale ids gave no hits at all); BM25 still finds the new rows.
    r = retrieve(reader.store, reader.embedder, "volcano lava vent", 3, retrieval="hybrid")
    assert len(r.hits) == 3 and all("revised" in h.text for h in r.hits)
    assert any(c.reason == "missing" for c in r.candidates)
    reader.close()


def test_bm25_weighs_a_rare_word_above_a_common_one(location: Location) -> None:
    # IDF: FTS5's BM25 has it, and so does the BM25 computed over PostgreSQL's tsvector (ts_rank_cd has none).
    store = Store.open(location.directory, create=True, url=location.url)
    store.set_meta({"embedder": {"dim": 8}})
    with store.transaction() as tx:
        for n in range(30):
            words = "harbour ferry timetable" if n else "harbour lighthouse"
            tx.put_document(DocumentInfo(f"/{n}.txt", f"h{n}", 1, 1.0, "text"), [_chunk(words)], _units(1, n))
    assert len(store.bm25("harbour", 50)) == 30
    top = store.bm25("harbour ferry lighthouse", 3)
    assert store.chunks([top[0][0]])[top[0][0]].path == "/0.txt"  # the only chunk with the rare word
    assert top[0][1] > top[1][1] > 0
    store.close()
