"""Soft labels for unlabelled tuning: how relevant a teacher finds each training text to its query.

A query cut from a chunk is a noisy label: the rest of its chunk is not always the best match for it, and a mined
"negative" may answer it as well, often enough that an embedder trained to rank the positive first regardless
got worse on real questions (docs/tuning.md). Instead, as in GPL (Wang et al., 2022), the tuned model learns the
teacher's margins, score(query, positive) - score(query, negative), wherever the teacher puts them.

The teacher is the index's own hybrid idea written as one score: the base embedder's cosine plus ``BM25_WEIGHT``
times BM25 over the index's chunk statistics, divided by the query's total IDF (so it lies between 0 and about 2
whatever the query's length). On a specialised field's vocabulary BM25 can outscore a general embedder, and
their fusion outscores both, so the margins teach the embedder what BM25 knows there.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag.api import Index
    from rag.tools.pairs import Pair

# The BM25 share of the teacher's score, chosen on SciFact's train queries (docs/tuning.md): larger weights pull the
# model further from what it knew, and past about 0.6 it got worse.
BM25_WEIGHT = 0.3
K1, B = 1.2, 0.75
BLOCK = 256  # pairs embedded at a time, between progress reports
# Mined negatives kept and scored per pair: one, as in GPL; each costs an embedding and a step's forward pass.
NEGATIVES = 1
_WORD = re.compile(r"\w+")
# Function words carry no evidence; dropping them keeps a long query's normalising IDF sum about its content.
_FUNCTION_WORDS = (
    "a an and are as at be been by for from in is it its no not of on or our than that the their these this those "
    "to was we were which with"
)
_STOP = frozenset(_FUNCTION_WORDS.split())

Progress = Callable[[str, int, int], None]


def terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


@dataclass(frozen=True)
class Lexical:
    """BM25 over a collection's term statistics, for any text (not only the collection's own)."""

    idf: dict[str, float]
    average_length: float

    def score(self, query: str, text: str) -> float:
        """BM25 of ``text`` for ``query``, divided by the query's total IDF."""
        wanted = set(terms(query))
        total = sum(self.idf.get(t, 0.0) for t in wanted)
        counts = Counter(terms(text))
        norm = K1 * (1 - B + B * sum(counts.values()) / self.average_length)
        found = sum(self.idf.get(t, 0.0) * counts[t] * (K1 + 1) / (counts[t] + norm) for t in wanted if t in counts)
        return found / total if total > 0 else 0.0


def lexical_statistics(index: Index) -> Lexical:
    """Document frequencies and the mean length of the index's chunks, read once from the store."""
    frequency: Counter[str] = Counter()
    lengths = 0
    ids = index.store.chunk_ids()
    for at in range(0, len(ids), 512):
        for chunk in index.store.chunks(ids[at : at + 512]).values():
            words = terms(chunk.text)
            frequency.update(set(words))
            lengths += len(words)
    n = max(len(ids), 1)
    idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in frequency.items()}
    return Lexical(idf, max(lengths / n, 1.0))


def with_teacher(
    index: Index,
    pairs: list[Pair],
    seed: int,
    negatives: int = NEGATIVES,
    weight: float = BM25_WEIGHT,
    progress: Progress | None = None,
) -> list[Pair]:
    """The pairs that have mined negatives, each with ``negatives`` of them (a seeded sample) and the teacher's
    scores of its positive and of each kept negative, in that order (BM25 counting ``weight``)."""
    rng = random.Random(seed)
    sample = [(p, min(negatives, len(p.negatives))) for p in pairs if p.negatives]
    kept = [replace(p, negatives=tuple(rng.sample(p.negatives, n))) for p, n in sample]
    lexical = lexical_statistics(index)
    scored: list[Pair] = []
    for at in range(0, len(kept), BLOCK):
        block = kept[at : at + BLOCK]
        queries = index.embedder.embed_documents([p.query for p in block])
        texts = [[p.positive, *p.negatives] for p in block]
        vectors = index.embedder.embed_documents([t for own in texts for t in own])
        start = 0
        for pair, query, own in zip(block, queries, texts, strict=True):
            cosine = vectors[start : start + len(own)] @ query
            start += len(own)
            lexical_scores = [lexical.score(pair.query, t) for t in own]
            teacher = tuple(float(c) + weight * b for c, b in zip(cosine, lexical_scores, strict=True))
            scored.append(replace(pair, teacher=teacher))
        if progress:
            progress("teacher scores", len(scored), len(kept))
    return scored
