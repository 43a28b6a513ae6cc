"""Compare PostgreSQL's full-text rankings with the BM25 of rag/storage/fts_postgres.py on a BEIR train split,
and choose BM25's k1 and b there.

    python scripts/tune_postgres_fts.py ../shared/eval/scifact --store postgresql://USER@HOST:PORT/DB

Uses the index `rag eval FOLDER --store URL` builds for the folder (run it first, with any split). Every variant
ranks the same OR-ed query words over the chunks; documents rank by their best chunk; the score is nDCG@10, and
hybrid is the default RRF over the same dense lists. Never point it at a test split when choosing defaults.
"""

from __future__ import annotations

import argparse
import itertools
import re
import statistics
from pathlib import Path

from sqlalchemy import text

from rag import Config, Index
from rag.retrieval.retrieve import Fusion, fuse
from rag.storage import fts_postgres
from rag.tools.datasets import beir_workspace, load_beir, materialise_beir
from rag.tools.evaluate import _index_dir, _query_threads, beir_scores

DEPTH = 100
# ts_rank_cd's normalisation flags: 0 none; 1 / (1 + log length); 2 / length; 4 / mean harmonic distance between
# extents; 32 rank / (rank + 1).
RANKINGS = [("ts_rank", f) for f in (0, 1)] + [("ts_rank_cd", f) for f in (0, 1, 4, 32)]
K1S = (0.9, 1.2, 1.6)
BS = (0.5, 0.75, 0.9)


def _or_query(query: str) -> str:
    return " | ".join(f"'{w}'" for w in dict.fromkeys(re.findall(r"\w+", query.lower())))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--store", required=True)
    p.add_argument("--split", default="train")
    args = p.parse_args()
    if args.split == "test":
        raise SystemExit("tune on a train split; the test split is for reporting only")
    config = Config.load(store=args.store)
    data = load_beir(args.folder, args.split)
    workspace = beir_workspace(args.folder, config.cache_dir)
    _, names = materialise_beir(args.folder, workspace)
    with Index.open(_index_dir(workspace, config), config=config) as index:
        store = index.store
        doc_of_chunk = {c.chunk_id: names[Path(c.path).name] for c in store.chunks(store.chunk_ids()).values()}
        with _query_threads(config):
            dense = {q: store.vectors.search(index.embedder.embed_query(t), DEPTH) for q, t in data.queries.items()}

        def report(name: str, lists: dict[str, list[tuple[int, float]]]) -> None:
            def ndcg(ranked_lists: dict[str, list[tuple[int, float]]]) -> float:
                scores = []
                for qid, ranked in ranked_lists.items():
                    docs = list(dict.fromkeys(doc_of_chunk[c] for c, _ in ranked if c in doc_of_chunk))
                    scores.append(beir_scores(docs, data.qrels[qid])["ndcg@10"])
                return statistics.fmean(scores)

            hybrid = {q: fuse(dense[q], lists.get(q, []), Fusion(60.0, 1.0, 1.0)) for q in data.queries}
            print(f"{ndcg(lists):.4f}  {ndcg(hybrid):.4f}  {name}", flush=True)

        print(f"{len(data.queries)} queries; bm25 nDCG@10, hybrid nDCG@10, ranking")
        with store.engine.connect() as conn:
            for function, flags in RANKINGS:
                sql = text(
                    f"SELECT c.id, {function}(c.fts, q, {flags}) AS score FROM to_tsquery('english', :q) q, "
                    "chunks c WHERE c.fts @@ q ORDER BY score DESC, c.id LIMIT :k"
                )
                lists = {
                    qid: [(int(i), float(s)) for i, s in conn.execute(sql, {"q": _or_query(t), "k": DEPTH})]
                    for qid, t in data.queries.items()
                }
                report(f"{function} normalization={flags}", lists)
        for k1, b in itertools.product(K1S, BS):
            fts_postgres.K1, fts_postgres.B = k1, b
            report(f"bm25 k1={k1} b={b}", {q: store.bm25(t, DEPTH) for q, t in data.queries.items()})


if __name__ == "__main__":
    main()
