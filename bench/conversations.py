"""Follow-up questions: retrieval and answers of a conversation's later turns, with and without the turns before.

bench/data/followups.jsonl holds two- and three-turn conversations over sample_docs/ and the XQuAD tuning half
(even lines only), written by hand: each later turn is a tuning question reworded to lean on the turn before
("How many tackles did he register?"), and a few change the subject on purpose. Each later turn is asked once
with its own words as the retrieval query (``alone``, as `rag ask` does) and once with the conversation's query
(:func:`rag.retrieval.followup.conversation_query`); hit@5 is a gold answer in the top five chunks.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import SAMPLE_DOCS, load_jsonl, median

FOLLOWUPS = Path(__file__).parent / "data" / "followups.jsonl"
XQUAD_DOCS = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "xquad-en" / "docs"


def run(answers: bool = True, limit: int | None = None) -> list[dict[str, Any]]:
    from rag import Config, Index
    from rag.retrieval.followup import conversation_query
    from rag.tools.metrics import answer_contained, exact_match, token_f1

    conversations = load_jsonl(FOLLOWUPS)[:limit]
    scores: dict[str, list[dict[str, float]]] = {"alone": [], "with conversation": []}
    with tempfile.TemporaryDirectory() as tmp:
        for corpus, docs in (("xquad", XQUAD_DOCS), ("sample_docs", SAMPLE_DOCS)):
            mine = [c for c in conversations if c["corpus"] == corpus]
            if not mine:
                continue
            with Index.open(config=Config.load(index=Path(tmp) / corpus), create=True) as index:
                index.ingest(docs)
                for conversation in mine:
                    turns = conversation["turns"]
                    for n in range(1, len(turns)):
                        question, golds = turns[n]["question"], turns[n]["answers"]
                        earlier = [t["question"] for t in turns[:n]]
                        for variant, query in (("alone", question), ("with conversation", None)):
                            query = query or conversation_query(question, earlier)
                            hits = index.search(query, 5)
                            row = {"hit@5": float(any(g.lower() in h.text.lower() for g in golds for h in hits))}
                            if answers:
                                t = time.perf_counter()
                                a = index.ask(question, query=query)
                                said = a.text if a.answered else ""
                                row |= {
                                    "exact_match": exact_match(said, golds),
                                    "token_f1": token_f1(said, golds),
                                    "answer_contained": answer_contained(said, golds),
                                    "seconds": time.perf_counter() - t,
                                }
                            scores[variant].append(row)
    rows = []
    for variant, got in scores.items():
        keys = [k for k in got[0] if k != "seconds"] if got else []
        row: dict[str, Any] = {"retrieval query": variant, "later turns": len(got)}
        row |= {k: sum(r[k] for r in got) / len(got) for k in keys}
        if answers and got:
            row["median_s"] = median([r["seconds"] for r in got])
        rows.append(row)
    return rows
