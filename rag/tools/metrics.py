"""Scoring functions for retrieval and answers: plain functions over plain values, no models.

Answer metrics follow the official SQuAD v1.1 evaluation script (rag.answer.text.normalize_answer). Ranking
metrics take a ranked list of ids and the set of relevant ids.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from rag.answer.text import normalize_answer


def exact_match(prediction: str, golds: Iterable[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def token_f1(prediction: str, golds: Iterable[str]) -> float:
    """The best token-level F1 between the prediction and any gold answer (SQuAD)."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        ref = normalize_answer(gold).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if common == 0:
            continue
        precision, recall = common / len(pred), common / len(ref)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def token_recall(prediction: str, golds: Iterable[str]) -> float:
    """The best share of a gold answer's tokens (SQuAD-normalised, with repeats) that the prediction holds."""
    pred = Counter(normalize_answer(prediction).split())
    best = 0.0
    for gold in golds:
        ref = Counter(normalize_answer(gold).split())
        if ref:
            best = max(best, sum((pred & ref).values()) / sum(ref.values()))
    return best


def rouge_l(prediction: str, golds: Iterable[str]) -> float:
    """The best ROUGE-L F1 between the prediction and any gold answer (rouge-score, Google's implementation;
    its tokenizer lower-cases and splits on non-alphanumerics; no stemming)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return max((scorer.score(g, prediction)["rougeL"].fmeasure for g in golds if g.strip()), default=0.0)


def answer_contained(text: str, golds: Iterable[str]) -> float:
    """1.0 when any normalised gold answer occurs in the normalised text, on word boundaries."""
    hay = f" {normalize_answer(text)} "
    return float(any(normalize_answer(g) and f" {normalize_answer(g)} " in hay for g in golds))


def ndcg_at_k(ranked: Sequence[str], relevance: Mapping[str, float], k: int = 10) -> float:
    """nDCG@k with graded (here usually binary) relevance, as in BEIR / pytrec_eval."""
    dcg = sum(relevance.get(doc, 0.0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((r for r in relevance.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Share of the relevant ids found in the top ``k``."""
    rel = set(relevant)
    return len(rel.intersection(ranked[:k])) / len(rel) if rel else 0.0


def hit_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """1.0 when any relevant id is in the top ``k``."""
    rel = set(relevant)
    return float(any(doc in rel for doc in ranked[:k]))


def reciprocal_rank(ranked: Sequence[str], relevant: Iterable[str], k: int | None = None) -> float:
    """1 / rank of the first relevant id (0.0 when none is in the top ``k``, or anywhere when ``k`` is None)."""
    rel = set(relevant)
    for i, doc in enumerate(ranked[:k] if k else ranked):
        if doc in rel:
            return 1.0 / (i + 1)
    return 0.0
