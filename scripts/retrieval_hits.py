"""How often retrieval puts an answer string in the top-k chunks, for a questions file with gold answers.

    python scripts/retrieval_hits.py --index DIR QUESTIONS.jsonl [--k 1 3 5 10]

QUESTIONS.jsonl lines need "question" and "answers" (a list of strings); both sample_docs/questions.jsonl and
../shared/eval/xquad-en/questions.jsonl qualify. A hit is a case-insensitive substring match in a chunk's text.
Superseded by `rag eval` once it exists.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rag import Index


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("questions", type=Path)
    p.add_argument("--index", required=True)
    p.add_argument("--k", type=int, nargs="+", default=[1, 3, 5, 10])
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    questions = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    depth = max(args.k)
    hits_at = {k: 0 for k in args.k}
    latencies = []
    with Index.open(args.index) as index:
        index.search("warm up", 1)  # model load is not search latency
        for q in questions:
            started = time.perf_counter()
            hits = index.search(q["question"], depth)
            latencies.append(time.perf_counter() - started)
            answers = [a.lower() for a in q["answers"]]
            first = next((h.rank for h in hits if any(a in h.text.lower() for a in answers)), None)
            for k in args.k:
                hits_at[k] += first is not None and first <= k
    n = len(questions)
    result = {
        "questions": n,
        **{f"hit@{k}": round(hits_at[k] / n, 4) for k in args.k},
        "median_search_ms": round(statistics.median(latencies) * 1000, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<18} {value}")


if __name__ == "__main__":
    main()
