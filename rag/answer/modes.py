"""Answer modes: how an answer's text is produced from the packed sources, and the prompts each one uses.

- ``generate``: free generation; may paraphrase, may be wrong. The support check marks unsupported claims.
- ``quote``: constrained generation (:mod:`rag.answer.quote`): the model picks a span of the sources by its own
  likelihood, so the answer is a verbatim, citable quote.
- ``extract``: no generation; the source sentence most similar to the question.
- ``auto``: ``generate`` a short answer and keep it only as the span of a source sentence that holds its words
  (:func:`snap`), else fall back to ``extract``; a how / why / compare question (:func:`routed`) gets
  ``sentences``.
- ``sentences``: a few generated sentences, each kept only when the support check backs it and cited by the
  sources that do (:mod:`rag.answer.sentences`); "not in the sources" when the model says so.

The default (``Config.answer_mode``) is ``auto``, chosen on the XQuAD tuning half (docs/quality.md). The path
that runs them, with the fallbacks between them, is rag/answer/pipeline.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rag.answer.prompt import SYSTEM_PROMPT, PackedPrompt, Similarity
from rag.answer.route import wants_explanation
from rag.answer.text import find_words, normalize_answer, sentences
from rag.config import ANSWER_MODES, one_of
from rag.models.decoding import Decoding
from rag.types import Hit

if TYPE_CHECKING:
    from rag.answer.quote import QuoteConstraint

# Said instead of an answer when nothing in the sources supports one.
NOT_IN_SOURCES = "The sources do not contain an answer to this question."

# Small models copy a short fact reliably when asked for "a few words"; asked for sentences they drift. The
# support check cites the source, so the model is not asked to (a 135M model cites at random anyway).
GENERATE_PROMPT = (
    "You answer questions using only the numbered sources provided. Reply with just the answer, copied from "
    "the sources: a name, a number, a date or a few words. Do not write a sentence. If the sources do not "
    'contain the answer, say "I don\'t know."'
)
# Quotes: at most this many tokens, cut where the model's end-of-sequence margin is highest, copied from the
# sentences most similar to the question. The most similar one holds the answer less often than the best three
# do, and the 0.5B tier picks among three better than from one (docs/quality.md); the 135M tier was tuned to one.
QUOTE_TOKENS = 16
QUOTE_SENTENCES = 3
# auto's free answer must be a short span of a source to be kept, so decoding longer is wasted time.
AUTO_TOKENS = 24
# Free answers end at the first line break: what follows is a small model repeating itself.
GENERATE_STOP = ("\n",)
QUOTE_PROMPT = (
    "You answer questions by copying the exact words from the numbered sources. "
    "Reply with only the shortest phrase from the sources that answers the question: a name, a number, "
    "a date or a few words. Do not write a sentence."
)
# How / why / compare questions (rag/answer/route.py): a few sentences, each checked on its own
# (rag/answer/sentences.py). The budget keeps the default tier near 10 s on two cores; the prompt and the
# sentences shown are a first choice, measured on the CLAP NQ tuning half but not yet swept (docs/quality.md).
SENTENCES_PROMPT = (
    "You answer questions using only the numbered sources provided. Explain the answer in two to four short "
    "sentences, using the facts and words of the sources, and end each sentence with the number of its source, "
    'like [1]. If the sources do not answer the question, reply only: "Not in the sources."'
)
SENTENCES_TOKENS = 64
SENTENCES_FOCUS = 10  # sentences shown: an explanation joins several, a fact needs one
SENTENCES_FALLBACK = 2  # source sentences that stand in when none of the written ones is supported
SENTENCES_STOP = ("\n\n",)
PROMPTS = {
    "generate": GENERATE_PROMPT,
    "quote": QUOTE_PROMPT,
    "extract": SYSTEM_PROMPT,
    "auto": GENERATE_PROMPT,
    "sentences": SENTENCES_PROMPT,
}

_WORD = re.compile(r"\S+")
_EDGE_PUNCT = ".,;:!?\"'()[]“”‘’"


def routed(mode: str, question: str) -> str:
    """The mode that answers ``question``: ``auto`` answers a how / why / compare question in ``sentences``."""
    return "sentences" if mode == "auto" and wants_explanation(question) else mode


def mode_decoding(mode: str, decoding: Decoding) -> Decoding:
    """``decoding`` with the mode's stop strings when it sets none; ``auto`` and ``sentences`` also capped at
    their budgets (:data:`AUTO_TOKENS`, :data:`SENTENCES_TOKENS`)."""
    if mode in ("generate", "auto", "sentences") and not decoding.stop:
        decoding = replace(decoding, stop=SENTENCES_STOP if mode == "sentences" else GENERATE_STOP)
    cap = {"auto": AUTO_TOKENS, "sentences": SENTENCES_TOKENS}.get(mode)
    if cap and decoding.max_new_tokens > cap:
        decoding = replace(decoding, max_new_tokens=cap)
    return decoding


def check_mode(mode: str) -> str:
    return one_of("answer mode", mode, ANSWER_MODES)


def question_words(question: str) -> set[str]:
    """The question's words, lower-cased, as written and as normalised: a quote should not start with them."""
    return set(question.lower().split()) | set(normalize_answer(question).split())


_MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
_NUMBER_WORDS = set(
    [
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "dozen",
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "hundred",
        "thousand",
        "million",
        "billion",
        "several",
    ]
)
_HOW_MUCH = re.compile(r"\bhow (many|much|long|old|large|big|far|tall|high)\b|\bwhat (percentage|percent|number)\b")
_WHEN = re.compile(r"^when\b|\b(what|which|in what) (year|date|century|decade)\b|\bwhat day\b")
_WHO = re.compile(r"^(who|whom|whose)\b")


def answer_start(question: str) -> Callable[[str], bool] | None:
    """What the first word of a quote answering ``question`` looks like, from the question word alone: a
    number for "how many", a date for "when", a name for "who"; None when the question does not say."""
    q = question.strip().lower()
    if _HOW_MUCH.search(q):
        return lambda w: any(c.isdigit() for c in w) or w.lower() in _NUMBER_WORDS
    if _WHEN.search(q):
        return lambda w: any(c.isdigit() for c in w) or w.lower() in _MONTHS
    if _WHO.search(q):
        return lambda w: w[:1].isupper()
    return None


def quote_constraint(question: str, packed: PackedPrompt, similarity: Similarity, tokenizer: Any) -> QuoteConstraint:
    """The logits processor that makes the answer to ``question`` a quote of the prompt's best sentence(s),
    recording the end-of-sequence margins that :meth:`QuoteConstraint.best_end` cuts by."""
    from rag.answer.quote import QuoteConstraint

    segments = best_sentences(question, packed.sources, packed.excerpts, similarity, QUOTE_SENTENCES)
    return QuoteConstraint.build(tokenizer, segments, avoid=question_words(question), start=answer_start(question))


def quote_segments(sources: Sequence[Hit], excerpts: Sequence[str]) -> list[str]:
    """The sentences a quote may be copied from: each source's own sentences that its shown excerpt holds.

    Taken from the source text, not re-split from the excerpt: an excerpt joins its focus sentences (and a
    heading) with a space, and a quote running across that join would not occur in the document.
    """
    return [s for hit, shown in zip(sources, excerpts, strict=True) for s in sentences(hit.text) if s in shown]


def best_sentences(
    question: str, sources: Sequence[Hit], excerpts: Sequence[str], similarity: Similarity, n: int | None = 1
) -> list[str]:
    """The ``n`` shown sentences (None: all) most similar to the question, best first.

    Headings ("Super Bowl 50") are similar to every question about their section and answer none: sentences
    of fewer than four words are passed over while there are longer ones.
    """
    candidates = quote_segments(sources, excerpts)
    candidates = [c for c in candidates if len(c.split()) >= 4] or candidates
    if not candidates:
        return []
    scores = similarity(question, candidates)
    return [candidates[i] for i in sorted(range(len(candidates)), key=lambda i: -float(scores[i]))[:n]]


def best_sentence(question: str, sources: Sequence[Hit], excerpts: Sequence[str], similarity: Similarity) -> str:
    """The shown sentence most similar to the question ("" when there is none)."""
    return next(iter(best_sentences(question, sources, excerpts, similarity)), "")


def snap(answer: str, segments: Sequence[str]) -> str:
    """The span of the first of ``segments`` that holds ``answer``'s words (see :func:`find_words`), as the
    segment writes it; "" when none does. A generated answer that snaps is a verbatim quote of its source."""
    for segment in segments:
        found = find_words(answer, segment)
        if found:
            text = segment[found[0] : found[1]]
            return text.strip(_EDGE_PUNCT) or text
    return ""


def trim(answer: str, question: str) -> str:
    """``answer`` without leading and trailing words that only repeat the question or are filler.

    A quote often restates the question around the fact ("The Panthers defense gave up 308 points"); the fact
    is what remains. The result is still a substring of ``answer`` (so still a verbatim quote), and never empty.
    """
    asked = set(normalize_answer(question).split())
    filler = {"a", "an", "the", "of", "in", "on", "at", "by", "to", "and", "or", "was", "were", "is", "are", "as"}
    words = list(_WORD.finditer(answer))

    def droppable(m: re.Match[str]) -> bool:
        norm = normalize_answer(m.group())
        return not norm or norm in asked or norm in filler

    lo, hi = 0, len(words)
    while lo < hi and droppable(words[lo]):
        lo += 1
    while hi > lo and droppable(words[hi - 1]):
        hi -= 1
    if lo >= hi:
        return answer.strip()
    text = answer[words[lo].start() : words[hi - 1].end()]
    stripped = text.strip(_EDGE_PUNCT)
    return stripped or text
