"""Choose fusion settings (RRF k, dense:BM25 weight, candidate depth) and the FTS5 tokenizer on a BEIR train split.

    python scripts/tune_fusion.py ../shared/eval/scifact --split train [--json OUT]

Uses the index `rag eval` builds for the folder (run `rag eval FOLDER --split train` first), retrieves each
query's dense and BM25 lists once, then recombines them with rag.retrieval.retrieve.fuse for every setting in the grid:
cheap, and the same fusion code `search` uses. Documents rank by their best chunk; the score is nDCG@10.
Never point it at a test split when choosing defaults.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sqlite3
import statistics
import time
from pathlib import Path

from rag import Config, Index
from rag.retrieval.retrieve import Fusion, fuse
from rag.storage.fts import fts_query
from rag.tools.datasets import beir_workspace, load_beir, materialise_beir
from rag.tools.evaluate import _index_dir, _query_threads, beir_scores

RRF_KS = (1, 5, 10, 20, 30, 45, 60, 80, 100, 150)
DENSE_WEIGHTS = (0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0)
DEPTHS = (50, 100, 200, 400)
TOKENIZERS = ("porter unicode61 remove_diacritics 2", "unicode61 remove_diacritics 2", "trigram")


def _other_bm25(db: Path, tokenizer: str) -> sqlite3.Connection:
    """An in-memory FTS5 table over the index's chunk texts with another tokenizer."""
    mem = sqlite3.connect(":memory:")
    mem.execute(f"CREATE VIRTUAL TABLE fts USING fts5(text, tokenize='{tokenizer}')")
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    mem.executemany("INSERT INTO fts(rowid, text) VALUES (?, ?)", src.execute("SELECT id, text FROM chunks"))
    mem.commit()
    src.close()
    return mem


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--split", default="train")
    p.add_argument("--json", type=Path, help="write every setting's score here")
    args = p.parse_args()
    if args.split == "test":
        raise SystemExit("tune on a train split; the test split is for reporting only")
    config = Config.load()
    data = load_beir(args.folder, args.split)
    queries = data.queries
    workspace = beir_workspace(args.folder, config.cache_dir)
    _, names = materialise_beir(args.folder, workspace)
    depth = max(DEPTHS)
    started = time.monotonic()
    with Index.open(_index_dir(workspace, config), config=config) as index:
        store = index.store
        doc_of_chunk = {c.chunk_id: names[Path(c.path).name] for c in store.chunks(store.chunk_ids()).values()}
        indexed = set(doc_of_chunk.values())
        if len(indexed) < len(names):  # a partial index (still being built): only fully judged queries
            print(f"partial index: {len(indexed)} of {len(names)} documents")
            queries = {q: t for q, t in queries.items() if set(data.qrels[q]) <= indexed}
        dense, sparse = {}, {}
        with _query_threads(config):
            for qid, text in queries.items():
                dense[qid] = store.vectors.search(index.embedder.embed_query(text), depth)
                sparse[qid] = store.bm25(text, depth)
        db = store.directory / "index.db"
    print(f"{len(queries)} queries, lists retrieved in {time.monotonic() - started:.0f} s")

    def ndcg(ranked_chunks: dict[str, list[tuple[int, float]]]) -> float:
        scores = []
        for qid, ranked in ranked_chunks.items():
            # .get: chunks a concurrent ingest added after the mapping was read are left out
            docs_ranked = list(dict.fromkeys(d for c, _ in ranked if (d := doc_of_chunk.get(c)) is not None))
            scores.append(beir_scores(docs_ranked, data.qrels[qid])["ndcg@10"])
        return statistics.fmean(scores)

    results: dict[str, float] = {"dense": ndcg(dense), "bm25": ndcg(sparse)}
    for tokenizer in TOKENIZERS[1:]:
        mem = _other_bm25(db, tokenizer)
        lists = {}
        for qid, text in queries.items():
            match = fts_query(text)
            sql = "SELECT rowid, -bm25(fts) FROM fts WHERE fts MATCH ? ORDER BY rank LIMIT ?"
            lists[qid] = [(int(i), float(s)) for i, s in mem.execute(sql, (match, depth))] if match else []
        results[f"bm25 tokenizer={tokenizer!r}"] = ndcg(lists)
    for rrf_k, weight, cut in itertools.product(RRF_KS, DENSE_WEIGHTS, DEPTHS):
        fusion = Fusion(rrf_k, weight, 1.0)
        fused = {q: fuse(dense[q][:cut], sparse[q][:cut], fusion) for q in queries}
        results[f"hybrid rrf_k={rrf_k} dense_weight={weight} bm25_weight=1 candidates={cut}"] = ndcg(fused)
    best = sorted(results.items(), key=lambda kv: -kv[1])
    for name, score in best[:15]:
        print(f"{score:.4f}  {name}")
    for name in results:
        if not name.startswith("hybrid"):
            print(f"{results[name]:.4f}  {name}")
    default = "hybrid rrf_k=60 dense_weight=1.0 bm25_weight=1 candidates=100"
    print(f"{results[default]:.4f}  {default}  (plain RRF)")
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "queries": len(queries), "ndcg@10": results}))


if __name__ == "__main__":
    main()
