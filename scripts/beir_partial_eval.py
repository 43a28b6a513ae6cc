"""Score a BEIR split on the part of the corpus indexed so far, while `rag eval` is still building the index.

    python scripts/beir_partial_eval.py ../shared/eval/scifact --split train [--json OUT]

Only queries whose judged documents are all indexed count, and they rank among the indexed documents only, so the
numbers run higher than on the full corpus and are not comparable with published ones. Useful to compare modes
and settings early on a slow machine; the full-corpus number is `rag eval FOLDER --split SPLIT`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rag import Config, Index
from rag.tools.datasets import _file_name, _read_jsonl, beir_workspace, load_beir
from rag.tools.evaluate import (
    BASE_MODES,
    _index_dir,
    _mean,
    _query_threads,
    _retrieve_all,
    beir_scores,
    ranked_documents,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--split", default="test")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    config = Config.load()
    data = load_beir(args.folder, args.split)
    names = {_file_name(str(r["_id"])): str(r["_id"]) for r in _read_jsonl(args.folder / "corpus.jsonl")}
    started = time.monotonic()
    with Index.open(_index_dir(beir_workspace(args.folder, config.cache_dir), config), config=config) as index:
        indexed = {names[Path(d.path).name] for d in index.store.documents()}
        qids = [q for q in data.queries if set(data.qrels[q]) <= indexed]
        n_docs, n_chunks = index.store.counts()
        depth = max(config.candidates, int(100 * n_chunks / max(n_docs, 1) * 1.5) + 1)
        per_mode: dict[str, list[dict[str, float]]] = {m: [] for m in BASE_MODES}
        with _query_threads(config):
            for q in qids:
                for mode, hits in _retrieve_all(index, data.queries[q], list(BASE_MODES), depth).items():
                    ranked = ranked_documents(hits, lambda path: names.get(Path(path).name))
                    per_mode[mode].append(beir_scores(ranked, data.qrels[q]))
    result = {
        "split": args.split,
        "indexed_documents": len(indexed),
        "corpus_documents": len(names),
        "queries": len(qids),
        "queries_in_split": len(data.queries),
        "candidates": depth,
        "settings": {
            k: getattr(config, k) for k in ("chunk_tokens", "chunk_overlap", "rrf_k", "dense_weight", "bm25_weight")
        },
        "modes": {m: _mean(rows) for m, rows in per_mode.items()},
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
