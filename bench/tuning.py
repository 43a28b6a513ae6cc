"""Training step time of `rag tune` (``rag.models.tuning.fine_tune``): float32 (the baseline) against bfloat16
autocast, on the same SciFact train pairs (query, judged abstract, two other abstracts as negatives).

Each step is timed from ``fine_tune``'s progress callback; the first step (allocator and kernel warm-up) is left
out and the median of the rest reported. bfloat16 is only fast where the CPU has it natively (AVX512-BF16 or
AMX); elsewhere the row says so and is skipped, since emulated bfloat16 is not what `rag tune` would run.
"""

from __future__ import annotations

import itertools
import random
import tempfile
from pathlib import Path
from typing import Any

from bench.common import EVAL, load_jsonl, median

SCIFACT = EVAL / "scifact"


def examples(count: int, negatives: int, seed: int = 0) -> list:  # -> list[rag.models.tuning.Example]
    from rag.models.tuning import Example

    corpus = {d["_id"]: f"{d['title']}\n\n{d['text']}" for d in load_jsonl(SCIFACT / "corpus.jsonl")}
    queries = {q["_id"]: q["text"] for q in load_jsonl(SCIFACT / "queries.jsonl")}
    lines = (SCIFACT / "qrels-train.tsv").read_text().splitlines()[1:]
    rng, ids = random.Random(seed), list(corpus)
    found = []
    for line in lines[:count]:
        query_id, doc_id = line.split("\t")[:2]
        found.append(Example(queries[query_id], corpus[doc_id], tuple(corpus[d] for d in rng.sample(ids, negatives))))
    return found


def run(steps: int, batch_size: int, negatives: int = 2) -> list[dict[str, Any]]:
    import torch

    from rag.models.sources import bundled_embedder_dir, resolve_embedder
    from rag.models.tuning import TrainSettings, fine_tune

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    base = resolve_embedder(str(bundled_embedder_dir()))
    pairs = examples(batch_size * (steps + 1), negatives)
    rows: list[dict[str, Any]] = []
    for precision in ("fp32", "bf16"):
        row: dict[str, Any] = {"precision": precision, "batch": batch_size, "negatives": negatives}
        if precision == "bf16" and not native:
            rows.append({**row, "note": "skipped: this CPU has no native bfloat16 (AVX512-BF16/AMX)"})
            continue
        elapsed: list[float] = []  # seconds since the loop started, after each step
        settings = TrainSettings(minutes=600, epochs=1, batch_size=batch_size, negatives_per_example=negatives,
                                 precision=precision)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "m"
            report = fine_tune(base, pairs, out, settings, progress=lambda p, seen=elapsed: seen.append(p.elapsed_s))
        times = [b - a for a, b in itertools.pairwise(elapsed)]
        rows.append(
            {
                **row,
                "steps_timed": len(times),
                "median_step_s": median(times),
                "pairs_per_s": batch_size / median(times),
                "last_loss": report.last_loss,
            }
        )
    baseline = rows[0]["median_step_s"]
    for r in rows:
        if "median_step_s" in r:
            r["x_vs_fp32"] = baseline / r["median_step_s"]
    return rows
