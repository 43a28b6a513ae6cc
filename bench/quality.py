"""Answer quality per generator precision: does int8 (or any faster setting) answer as well as fp32?

Each question is answered from its gold sources (XQuAD: the gold paragraph; sample_docs: what `rag ask` packs
from an index of sample_docs/), so only the generator differs between rows. Metric: answer_contained (SQuAD
normalisation) from rag.tools.metrics.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.common import SAMPLE_DOCS, gold_hit, load_jsonl, xquad_contexts, xquad_tuning


def prompts(n_xquad: int, n_sample: int, cache_dir: Path) -> list[tuple[str, list[str], list[dict[str, str]]]]:
    """(question, answers, messages) for the sample_docs questions and the XQuAD tuning-half questions."""
    from rag import Config, Index
    from rag.answer.prompt import build_messages

    out = []
    contexts = xquad_contexts()
    for q in xquad_tuning(n_xquad):
        out.append((q["question"], q["answers"], build_messages(q["question"], [gold_hit(contexts[q["context_id"]])])))
    if n_sample:
        with tempfile.TemporaryDirectory() as tmp:
            config = Config.load(index=Path(tmp) / "idx", cache_dir=cache_dir)
            with Index.open(config=config, create=True) as index:
                index.ingest(SAMPLE_DOCS)
                for q in load_jsonl(SAMPLE_DOCS / "questions.jsonl")[:n_sample]:
                    stream = index.ask_stream(q["question"])
                    if stream.prompt is not None:
                        out.append((q["question"], q["answers"], stream.prompt.messages))
    return out


def run(
    precisions: list[str], n_xquad: int, n_sample: int, max_new_tokens: int, cache_dir: Path
) -> list[dict[str, Any]]:
    from rag.models.decoding import Decoding, drain
    from rag.models.generator import Generator
    from rag.models.sources import resolve_generator
    from rag.tools.metrics import answer_contained

    items = prompts(n_xquad, n_sample, cache_dir)
    source = resolve_generator("SmolLM2-135M-Instruct", cache_dir)
    rows = []
    answers: dict[str, list[str]] = {}
    for precision in precisions:
        backend, _, prec = precision.partition("-")  # "lean-int8-head" -> ("lean", "int8-head")
        gen = Generator(source, cache_dir, backend=backend, precision=prec or "fp32")
        got = []
        for _question, _gold, messages in items:
            got.append(drain(gen.stream(messages, Decoding(max_new_tokens=max_new_tokens)))[0])
        answers[precision] = got
        n_x = min(n_xquad, len(items))
        hits = [answer_contained(text, gold) for text, (_, gold, _) in zip(got, items, strict=True)]
        rows.append(
            {
                "precision": precision,
                "questions": len(items),
                "xquad_contained": sum(hits[:n_x]) / max(n_x, 1),
                "sample_contained": sum(hits[n_x:]) / max(len(items) - n_x, 1),
                "all_contained": sum(hits) / max(len(items), 1),
            }
        )
    base = answers[precisions[0]]
    for row in rows:
        same = sum(a == b for a, b in zip(base, answers[row["precision"]], strict=True))
        row["same_text_as_first"] = same / max(len(base), 1)
    return rows
