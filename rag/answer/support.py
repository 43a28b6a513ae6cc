"""Support check: is each claim of an answer backed by a span of its sources, and which span?

An answer is split into claims (sentences and clauses). For each claim every sentence of the packed sources is
scored by lexical overlap (the share of the claim's content words the sentence contains) and embedding
similarity; the best sentence is the supporting span, cited with its file and character offsets. Overlap
decides support: a fluent paraphrase with the wrong number or name is similar in embedding space but lacks the
word, which is exactly the failure a small model makes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rag.answer.text import SENTENCE_END, find_words, normalize_answer, without_citations
from rag.types import Hit

# texts -> (n, dim) L2-normalised vectors; the Embedder's embed_sentences
Embed = Callable[[list[str]], Any]

# A claim is supported when at least this share of its content words occurs in one source sentence...
MIN_OVERLAP = 0.75
# ...or a smaller share does and the sentence says the same thing (cosine of the embeddings). Either way every
# number and name of the claim must be in the sentence.
MIN_OVERLAP_WITH_SIMILARITY = 0.6
MIN_SIMILARITY = 0.8
# A sentence that restates the question around its claim joins the source's words with its own ("to prevent",
# "which leads to"): of the words that are not the question's, this share must be in the sentence.
MIN_OVERLAP_RESTATED = 0.6

_STOPWORD_TEXT = """a an the and or but if of to in on at by for with from as into onto than then that this
    these those is are
    was were be been being it its it's he she they them their his her we you i me my our your who whom whose which
    what when where why how there here do does did done has have had not no nor so such also can could may might
    must shall should will would about after before during over under between through up down out off again
    very just only both each few more most other some any all same own too s t"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# A claim ends at a sentence end or a semicolon; the lookbehind keeps abbreviations like "e.g. x" together
# less often than a real parser would, which is fine: claims are checked one by one anyway.
_CLAIM_END = re.compile(r"(?<=[.!?;])\s+|\n+")
_NUMBER = re.compile(r"\d")


@dataclass(frozen=True)
class Support:
    """How one claim of an answer is backed. ``quote == document_text[start:end]`` of the file at ``path``."""

    claim: str
    supported: bool
    overlap: float  # share of the claim's content words found in the quote
    similarity: float  # cosine between the claim and the quote
    source: int | None  # 1-based source number (answer.sources[source - 1]); None when there are no sources
    path: str | None
    start: int | None
    end: int | None
    quote: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Span:
    """A sentence of a source: ``source`` is its 1-based number, offsets are in the source's document."""

    source: int
    path: str
    start: int
    end: int
    text: str


def content_words(text: str) -> list[str]:
    """Normalised words that carry the claim: no stopwords, plural ``s`` dropped so "points" matches "point"."""
    words = []
    for w in normalize_answer(text).split():
        if w in _STOPWORDS:
            continue
        words.append(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return words


def claims(answer: str) -> list[str]:
    """The answer's sentences and clauses, citation markers removed; pieces with no content words are left out."""
    text = without_citations(answer)
    return [c.strip() for c in _CLAIM_END.split(text) if c.strip() and content_words(c)]


def spans(sources: Sequence[Hit]) -> list[Span]:
    """Every sentence of every source with its offsets in the source's document."""
    out = []
    for n, hit in enumerate(sources, start=1):
        pos = 0
        for piece in SENTENCE_END.split(hit.text):
            at = hit.text.find(piece, pos)
            pos = at + len(piece)
            stripped = piece.strip()
            if len(stripped) < 2:
                continue
            lead = len(piece) - len(piece.lstrip())
            begin = hit.start + at + lead
            out.append(Span(n, hit.path, begin, begin + len(stripped), stripped))
    return out


def overlap(claim_words: Sequence[str], span_words: set[str]) -> float:
    if not claim_words:
        return 0.0
    return sum(1 for w in claim_words if w in span_words) / len(claim_words)


def key_words(claim: str) -> list[str]:
    """The claim's numbers and names (capitalised words after its first word), normalised like content words.

    These are the facts: "1889" is not supported by a sentence saying "1898", nor "Taylor Swift headlined" by
    one naming Beyoncé, however similar the rest.
    """
    words = claim.split()
    keys = [w for i, w in enumerate(words) if _NUMBER.search(w) or (i > 0 and w[:1].isupper())]
    return content_words(" ".join(keys))


def check(
    answer: str, sources: Sequence[Hit], embed: Embed, question: str = "", restates: bool = False
) -> list[Support]:
    """One :class:`Support` per claim of ``answer``, each with its best span among ``sources``.

    ``question`` breaks ties between spans for short claims: "308" occurs in several sentences, and the one
    that also matches the question is the one that answers it. ``restates``: a claim's words that repeat the
    question are its topic, not its claim ("the dot products are scaled to keep the softmax from peaking"), so
    the overlap is counted over the rest when at least two words remain; names and numbers still must all be in
    the span.
    """
    parts = claims(answer)
    if not parts:
        return []
    candidates = spans(sources)
    if not candidates:
        return [Support(c, False, 0.0, 0.0, None, None, None, None, "") for c in parts]
    vectors = embed([*parts, question or parts[0], *(s.text for s in candidates)])
    claim_vecs, question_vec, span_vecs = vectors[: len(parts)], vectors[len(parts)], vectors[len(parts) + 1 :]
    to_question = span_vecs @ question_vec
    span_words = [set(content_words(s.text)) for s in candidates]
    out = []
    asked = set(content_words(question)) if restates else set()
    for claim, vec in zip(parts, claim_vecs, strict=True):
        words = content_words(claim)
        need = MIN_OVERLAP
        if len(own := [w for w in words if w not in asked]) >= 2 and len(own) < len(words):
            words, need = own, MIN_OVERLAP_RESTATED
        sims = span_vecs @ vec
        holds = [find_words(claim, c.text) is not None for c in candidates]
        # A sentence holding the claim word for word is its citation (a quote's own sentence), then overlap.
        best = max(
            range(len(candidates)),
            key=lambda i: (
                holds[i],
                overlap(words, span_words[i]),
                float(sims[i]) + 0.5 * float(to_question[i]),
            ),
        )
        lexical = overlap(words, span_words[best])
        similarity = float(sims[best])
        # Word for word is support even where whole words differ ("384" in "384-dimensional").
        supported = holds[best] or (
            all(w in span_words[best] for w in key_words(claim))
            and (lexical >= need or (lexical >= MIN_OVERLAP_WITH_SIMILARITY and similarity >= MIN_SIMILARITY))
        )
        span = candidates[best]
        out.append(
            Support(
                claim,
                supported,
                round(lexical, 3),
                round(similarity, 3),
                span.source,
                span.path,
                span.start,
                span.end,
                span.text,
            )
        )
    return out


def is_supported(supports: Sequence[Support]) -> bool:
    """True when the answer makes at least one claim and every claim is supported."""
    return bool(supports) and all(s.supported for s in supports)
