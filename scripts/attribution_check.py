"""Is the source with the largest attention share the one the answer cites, or the one that holds the answer?

    python scripts/attribution_check.py --index DIR QUESTIONS.jsonl [--stride 2] [--offset N] [--limit N] [--out F]
    python scripts/attribution_check.py --merge F1.json F2.json ...   # one summary over shards run in parallel

QUESTIONS.jsonl lines need "question" and "answers"; sample_docs/questions.jsonl and
../shared/eval/xquad-en/questions.jsonl both qualify. For XQuAD use ``--stride 2`` (even line indices: the tuning
half; never the held-out odd half) and ``--limit 100``.

For each question ``rag explain`` answers greedily and records attention over the prompt's sources. Against two
targets - the first source the answer cites, and the sources whose text contains a gold answer string - it scores
which source each signal picks:

- attention: largest mean share over the answer (all layers and heads), and per layer;
- attention per token: that share divided by the source's prompt tokens (attention grows with length);
- lexical overlap: most SQuAD-normalised answer tokens found in the source;
- retrieval: source [1], the best-ranked chunk in the prompt;
- longest source: most prompt tokens;
- chance: 1 / number of sources.

"Holds an answer" is a SQuAD-normalised match or a case-insensitive substring. It also reports the retrieval
rank (in retrieval's own order over its candidates: fused, for hybrid) of the first chunk holding a gold answer
string. The answer is decoded as ``rag ask`` does in ``--answer-mode`` (default: the configured one, ``quote``,
whose "cited" source is the one the quote was copied from).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from rag import Index
from rag.tools.explain import explain
from rag.tools.metrics import answer_contained, normalize_answer


def _pick(scores: list[float]) -> int:
    return max(range(len(scores)), key=lambda i: scores[i]) + 1


def _overlap(answer: str, source: str) -> float:
    words = set(normalize_answer(answer).split())
    have = set(normalize_answer(source).split())
    return float(len(words & have))


def _holds(text: str, golds: list[str]) -> bool:
    # SQuAD-normalised match, or a plain substring: normalisation joins "384-dimensional" into one word.
    return bool(answer_contained(text, golds)) or any(g.lower() in text.lower() for g in golds)


def check(index: Index, q: dict, max_new_tokens: int, answer_mode: str | None) -> dict:
    e = explain(index, q["question"], max_new_tokens=max_new_tokens, answer_mode=answer_mode)
    golds = q["answers"]
    deep = index.store.chunks([c.chunk_id for c in e.candidates])
    # Rank in retrieval's own order (fused, for hybrid) of the first candidate chunk holding a gold answer.
    by_score = sorted(e.candidates, key=lambda c: -(c.fused_score if c.fused_score is not None else -1e9))
    gold_rank = next((n for n, c in enumerate(by_score, start=1) if _holds(deep[c.chunk_id].text, golds)), None)
    row: dict = {
        "id": q.get("id"),
        "question": q["question"],
        "gold_rank": gold_rank,
        "answer": e.answer,
        "answer_mode": e.answer_mode,
        "retrieval": e.retrieval.get("mode"),
    }
    if e.prompt is None or e.attention is None or not e.attention.answer_tokens:
        return {**row, "sources": 0}
    view, att = e.prompt, e.attention
    texts = [view.text[a:b] for a, b in view.source_spans]
    # The block's first line is the "[n] file (location)" label; the answer must be in the text below it.
    holding = [n for n, t in enumerate(texts, start=1) if _holds(t.partition("\n")[2], golds)]
    shares = att.answer_share
    return {
        **row,
        "sources": len(texts),
        "source_tokens": view.source_tokens,
        "answer_share": shares,
        "cited": e.cited,
        "holding": holding,
        "correct": _holds(e.answer, golds),
        "picks": {
            "attention": _pick(shares),
            "attention per token": _pick([s / max(n, 1) for s, n in zip(shares, view.source_tokens, strict=True)]),
            "lexical overlap": _pick([_overlap(e.answer, t) for t in texts]),
            "retrieval rank 1": 1,
            "longest source": _pick([float(n) for n in view.source_tokens]),
        },
        "layer_picks": [_pick(layer) for layer in att.layer_answer_share],
    }


def summarise(rows: list[dict]) -> dict:
    used = [r for r in rows if r["sources"]]
    multi = [r for r in used if r["sources"] > 1]
    out: dict = {
        "questions": len(rows),
        "answered": len(used),
        "with_several_sources": len(multi),
        "answer_correct": round(statistics.mean(r["correct"] for r in used), 3) if used else None,
        "gold_rank_histogram": {
            str(rank): n for rank, n in sorted(Counter(r["gold_rank"] for r in rows).items(), key=lambda x: x[0] or 99)
        },
        # Attention mass grows with a block's length: how often does attention just pick the longest source?
        "attention_picks_longest": round(
            statistics.mean(r["picks"]["attention"] == r["picks"]["longest source"] for r in multi), 3
        )
        if multi
        else None,
    }
    for name, target, keep in (
        ("cited", "cited", lambda r: r["cited"]),
        ("holding", "holding", lambda r: r["holding"]),
        # The strict case: exactly one of several sources holds the answer, so chance is 1 / sources.
        ("the_only_holding", "holding", lambda r: len(r["holding"]) == 1),
    ):
        # Only questions where the target exists and there is a choice to make.
        pool = [r for r in multi if keep(r)]
        agree: dict[str, float] = {}
        for signal in pool[0]["picks"] if pool else []:
            hits = [
                (r["picks"][signal] == r[target][0]) if target == "cited" else (r["picks"][signal] in r[target])
                for r in pool
            ]
            agree[signal] = round(statistics.mean(hits), 3)
        if pool:
            agree["chance"] = round(
                statistics.mean((1 if target == "cited" else len(r[target])) / r["sources"] for r in pool), 3
            )
            layers = len(pool[0]["layer_picks"])
            per_layer = [
                statistics.mean(
                    (r["layer_picks"][i] == r[target][0]) if target == "cited" else (r["layer_picks"][i] in r[target])
                    for r in pool
                )
                for i in range(layers)
            ]
            best = max(range(layers), key=lambda i: per_layer[i])
            agree["best single layer"] = round(per_layer[best], 3)
            agree["best layer (1-based)"] = best + 1
        out[f"agrees_with_{name}"] = {"questions": len(pool), **agree}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("questions", type=Path, nargs="?")
    p.add_argument("--index")
    p.add_argument("--merge", type=Path, nargs="+", metavar="FILE", help="summarise the rows of earlier --out files")
    p.add_argument("--offset", type=int, default=0, help="skip the first N questions (after --stride)")
    p.add_argument("--limit", type=int, help="first N questions (after --stride and --offset)")
    p.add_argument("--stride", type=int, default=1, help="every Nth line from line 0 (2: XQuAD tuning half)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--answer-mode", help="quote (the configured default), generate, auto or extract (free)")
    p.add_argument("--out", type=Path, help="write per-question rows and the summary as JSON")
    args = p.parse_args()
    if args.merge:
        rows, seen = [], set()
        for path in args.merge:  # shards may overlap: the first row of each question counts
            for row in json.loads(path.read_text())["rows"]:
                if row["id"] not in seen:
                    seen.add(row["id"])
                    rows.append(row)
        print(json.dumps(summarise(rows), indent=2))
        return
    if not args.questions or not args.index:
        p.error("give QUESTIONS and --index (or --merge FILES)")
    lines = [line for line in args.questions.read_text().splitlines() if line.strip()]
    questions = [json.loads(line) for line in lines[:: args.stride]][args.offset :][: args.limit]
    rows = []
    started = time.perf_counter()
    with Index.open(args.index) as index:
        for n, q in enumerate(questions, start=1):
            rows.append(check(index, q, args.max_new_tokens, args.answer_mode))
            print(f"{n}/{len(questions)} {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
            summary = {**summarise(rows), "seconds": round(time.perf_counter() - started, 1)}
            if args.out:  # after every question: a long run stopped early still leaves its numbers
                args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
