"""Answer modes side by side on a SQuAD-style questions file (XQuAD): EM, F1, contained, ceiling, faithfulness.

    python scripts/answer_modes.py --index /tmp/xq ../shared/eval/xquad-en/questions.jsonl --split test --limit 40

``--split tune`` keeps the questions at even line index (0, 2, ...), ``test`` the odd ones (the held-out half);
``--limit N`` takes N of them spread evenly over the split. Per mode: exact match, token F1 and answer-contained
(SQuAD normalisation, rag.metrics), the retrieval ceiling (a gold answer occurs in the sentences the prompt
shows), faithfulness (share of answers whose every claim the support check backs with a cited span), the share
of questions answered at all, and seconds per answer (retrieval to support check, models already loaded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from rag import Config, Index
from rag.metrics import answer_contained, exact_match, token_f1
from rag.modes import ANSWER_MODES


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("questions", type=Path, help='JSONL with "question" and "answers"')
    p.add_argument("--index", required=True)
    p.add_argument("--split", choices=["tune", "test", "all"], default="tune")
    p.add_argument("--limit", type=int, default=0, help="questions, spread evenly over the split (0: all)")
    p.add_argument("--modes", default=",".join(ANSWER_MODES))
    p.add_argument("--out", type=Path, help="write one JSON line per question and mode here")
    args = p.parse_args()
    modes = args.modes.split(",")
    rows = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    if args.split != "all":
        rows = [q for i, q in enumerate(rows) if i % 2 == (0 if args.split == "tune" else 1)]
    if args.limit:
        rows = rows[:: max(1, len(rows) // args.limit)][: args.limit]
    index = Index.open(config=Config.load(index=args.index))
    for mode in modes:  # load both models and the quote vocabulary before timing anything
        index.ask("warm up", answer_mode=mode)
    out = args.out.open("w") if args.out else None
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for n, q in enumerate(rows, start=1):
        for mode in modes:
            started = time.perf_counter()
            stream = index.ask_stream(q["question"], answer_mode=mode)
            for _ in stream:
                pass
            answer = stream.answer
            seconds = time.perf_counter() - started
            shown = " ".join(stream.prompt.excerpts) if stream.prompt else ""
            row = {
                "id": q.get("id"),
                "mode": mode,
                "question": q["question"],
                "gold": q["answers"],
                "text": answer.text,
                "produced_by": answer.mode,
                "em": exact_match(answer.text, q["answers"]) if answer.answered else 0.0,
                "f1": token_f1(answer.text, q["answers"]) if answer.answered else 0.0,
                "contained": answer_contained(answer.text, q["answers"]) if answer.answered else 0.0,
                "ceiling": answer_contained(shown, q["answers"]),
                "answered": answer.answered,
                "faithful": answer.supported,
                "seconds": seconds,
            }
            results[mode].append(row)
            if out:
                out.write(json.dumps(row) + "\n")
                out.flush()
        print(f"{n}/{len(rows)}", file=sys.stderr)
    print(f"{len(rows)} questions, split {args.split}")
    print("| mode | EM | F1 | contained | ceiling | faithful | answered | s/answer |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in modes:
        r = results[mode]
        answered = [x for x in r if x["answered"]]

        def mean(key: str, rows: list[dict] = r) -> float:
            return statistics.mean(x[key] for x in rows) if rows else 0.0

        faithful = mean("faithful", answered)
        print(
            f"| {mode} | {mean('em'):.3f} | {mean('f1'):.3f} | {mean('contained'):.3f} | {mean('ceiling'):.3f} | "
            f"{faithful:.3f} | {len(answered) / max(1, len(r)):.2f} | {mean('seconds'):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
