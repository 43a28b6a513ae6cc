"""The question -> answer path that ``Index.ask`` and ``rag explain`` share.

Given the retrieved hits: fit them into the generator's context budget (the focus sentences of each, packed in
rank order), produce the text in the answer mode (free generation, a constrained quote, or the best sentence),
then check it against the sources and fall back when the check fails: ``auto`` -> ``extract`` (the best
sentence) when the generated answer is not a span of a source sentence, ``quote`` -> ``extract`` when the quote
has no content of its own, ``sentences`` -> the best supported source sentences when none of the written ones is
supported, and "not in the sources" when there is no sentence at all or the model says the sources do not answer.
"""

from __future__ import annotations

import time
from collections.abc import Generator as PyGenerator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rag.answer.modes import (
    NOT_IN_SOURCES,
    PROMPTS,
    QUOTE_TOKENS,
    SENTENCES_FALLBACK,
    SENTENCES_FOCUS,
    best_sentence,
    best_sentences,
    mode_decoding,
    quote_constraint,
    routed,
    snap,
    trim,
)
from rag.answer.prompt import PackedPrompt, build_messages, focus, pack
from rag.answer.sentences import check_sentences, compose, declines, fallback, whole_sentences
from rag.answer.similarity import SentenceSimilarity
from rag.answer.support import Support, check, is_supported
from rag.answer.text import citations
from rag.errors import ConfigError
from rag.models.decoding import Decoding, DecodingSession, GenerationStats, drain
from rag.models.generator import Generator
from rag.types import Answer, Hit

NO_ANSWER = "The indexed documents do not seem to contain anything relevant to this question."


@dataclass(frozen=True)
class Answerer:
    """The models and settings an answer is made with."""

    generator: Generator
    similarity: SentenceSimilarity
    context_tokens: int  # prompt + answer budget
    focus_sentences: int  # 0: whole chunks
    unsupported: str = "drop"  # a written sentence no source backs: "drop" or "mark" (sentences mode)


@dataclass(frozen=True)
class Run:
    """One decoding run of an answer: ``generate`` (free) or ``quote`` (constrained), with its statistics."""

    kind: str
    stats: GenerationStats


def prepare(
    answerer: Answerer, question: str, hits: Sequence[Hit], answer_mode: str, max_new_tokens: int
) -> PackedPrompt:
    """The prompt for ``question``: the hits' focus sentences packed in rank order within the context budget."""
    gen = answerer.generator
    window = min(answerer.context_tokens, gen.context_window)
    budget = window - max_new_tokens
    if budget < 128:
        raise ConfigError(
            f"--max-new-tokens {max_new_tokens} leaves no room for sources in a {window}-token context; lower it"
        )
    asked = gen.count(build_messages(question, [], system=PROMPTS[answer_mode]))
    if asked > budget // 2:
        raise ConfigError(
            f"the question takes {asked} of the prompt's {budget} tokens, leaving too little for sources; shorten it"
        )
    excerpts = None
    if answerer.focus_sentences:
        keep = (
            max(answerer.focus_sentences, SENTENCES_FOCUS) if answer_mode == "sentences" else answerer.focus_sentences
        )
        excerpts = focus(question, hits, answerer.similarity, keep)
    return pack(question, hits, gen.count, budget, excerpts, system=PROMPTS[answer_mode])


def answer(
    answerer: Answerer,
    question: str,
    hits: Sequence[Hit],
    answer_mode: str,
    decoding: Decoding,
    settings: dict[str, Any],
    timings: dict[str, float],
    session: DecodingSession | None = None,
) -> AnswerStream:
    """Answer ``question`` from ``hits`` (best first) in ``answer_mode``; iterate the stream for its text.

    ``settings`` and ``timings`` (retrieval's so far) go into the answer. ``session``: decode through it instead
    of the generator's backend (``rag explain`` records attention so).
    """
    if not hits:
        return AnswerStream.finished(
            Answer(question, NO_ANSWER, [], answered=False, settings=settings, timings=timings, answer_mode=answer_mode)
        )
    answer_mode = routed(answer_mode, question)
    decoding = mode_decoding(answer_mode, decoding)
    gen = answerer.generator
    started = time.perf_counter()
    was_loaded = gen.loaded_from is not None
    packed = prepare(answerer, question, hits, answer_mode, decoding.max_new_tokens)
    timings = {**timings, "pack_s": time.perf_counter() - started}
    if not was_loaded:  # counting prompt tokens loaded the generator: part of pack_s, shown apart
        _ = gen.session  # prepares the decoding backend too, so load time is all in one place
        timings["load_generator_s"] = gen.load_seconds or 0.0
    stream = AnswerStream(prompt=packed)
    stream.steps = _answer(answerer, question, packed, answer_mode, decoding, settings, timings, session, stream.runs)
    return stream


def _answer(
    answerer: Answerer,
    question: str,
    packed: PackedPrompt,
    mode: str,
    decoding: Decoding,
    settings: dict[str, Any],
    timings: dict[str, float],
    session: DecodingSession | None,
    runs: list[Run],
) -> PyGenerator[str, None, Answer]:
    similar = answerer.similarity
    if mode == "extract":
        text = best_sentence(question, packed.sources, packed.excerpts, similar)
        if text:
            yield text
        stats = GenerationStats(packed.tokens, 0, 0.0, 0.0)
    elif mode == "quote":
        text, stats = _quote(answerer, question, packed, decoding, session)
        runs.append(Run("quote", stats))
        yield text
    else:
        pieces: list[str] = []
        stats = yield from _tee(answerer.generator.stream(packed.messages, decoding, session=session), pieces)
        runs.append(Run("generate", stats))
        text = "".join(pieces).strip()
    timings.update(
        first_token_s=stats.first_token_s,
        generate_s=stats.seconds,
        tokens_per_s=stats.new_tokens / stats.seconds if stats.seconds else 0.0,
    )
    if mode == "sentences":
        return _sentences(answerer, question, packed, text, stats, settings, timings)
    produced_by = "generate" if mode == "auto" else mode
    started = time.perf_counter()
    if produced_by == "quote":
        text = trim(text, question)
    elif mode == "auto":
        # Kept only as the source writes it: a free answer is often right but worded its own way or restating
        # the question; one that is not a span of a source sentence is replaced by the best sentence. Trimmed
        # only when it does not snap as written: the question's words around an answer are often part of it
        # ("the Wojciech Bogusławski Theatre" for "what theatre ...", docs/quality.md).
        shown = best_sentences(question, packed.sources, packed.excerpts, similar, None)
        text = snap(text, shown) or snap(trim(text, question), shown)
    supports = check(text, packed.sources, similar.embed, question)
    timings["verify_s"] = time.perf_counter() - started
    if mode == "auto" and not (text and is_supported(supports)):
        # The source sentence most like the question holds the answer more often than a constrained quote cut
        # from it does (docs/quality.md), and costs no decoding.
        text, produced_by = best_sentence(question, packed.sources, packed.excerpts, similar), "extract"
        supports = check(text, packed.sources, similar.embed, question)
    if produced_by == "quote" and not is_supported(supports):
        # A verbatim quote fails the check only when it has no content of its own (a cut "It was", or the
        # question's words): the most similar sentence is the better quote then.
        text, produced_by = best_sentence(question, packed.sources, packed.excerpts, similar), "extract"
        supports = check(text, packed.sources, similar.embed, question)
    supported = is_supported(supports)
    answered = bool(text)
    if produced_by == "extract" and not supported:  # no source sentence at all
        text, answered = NOT_IN_SOURCES, False
    return _finished(question, packed, text, answered, produced_by, supports, stats, settings, timings)


def _sentences(
    answerer: Answerer,
    question: str,
    packed: PackedPrompt,
    written: str,
    stats: GenerationStats,
    settings: dict[str, Any],
    timings: dict[str, float],
) -> Answer:
    """The written sentences the sources back, each cited by the sources that do; the best source sentences
    when none is; "not in the sources" when the model said so."""
    started = time.perf_counter()
    embed = answerer.similarity.embed
    answered, produced_by = True, "sentences"
    if declines(written):
        text, supports, answered = NOT_IN_SOURCES, [], False
    else:
        checked = check_sentences(whole_sentences(written), packed.sources, embed, question)
        text, supports = compose(checked, answerer.unsupported)
        if not text:
            best = best_sentences(question, packed.sources, packed.excerpts, answerer.similarity, SENTENCES_FALLBACK)
            text, supports = compose(fallback(best, packed.sources, embed, question))
            produced_by = "extract"
        if not text:
            text, answered = NOT_IN_SOURCES, False
    timings["verify_s"] = time.perf_counter() - started
    return _finished(question, packed, text, answered, produced_by, supports, stats, settings, timings)


def _finished(
    question: str,
    packed: PackedPrompt,
    text: str,
    answered: bool,
    produced_by: str,
    supports: list[Support],
    stats: GenerationStats,
    settings: dict[str, Any],
    timings: dict[str, float],
) -> Answer:
    return Answer(
        question=question,
        text=text,
        sources=packed.sources,
        answered=answered,
        # The text's own [n] markers, else the sources the support check found for its claims.
        cited=citations(text, len(packed.sources))
        or list(dict.fromkeys(s.source for s in supports if s.supported and s.source)),
        settings=settings,
        timings=timings,
        prompt_tokens=stats.prompt_tokens,
        answer_tokens=stats.new_tokens,
        answer_mode=produced_by,
        support=supports,
        supported=is_supported(supports),
    )


def _quote(
    answerer: Answerer, question: str, packed: PackedPrompt, decoding: Decoding, session: DecodingSession | None
) -> tuple[str, GenerationStats]:
    """Constrained decoding over the prompt's best sentence: the answer is a verbatim span of it, cut where the
    model most wanted to end it. The stats say how many tokens the cut kept."""
    gen = answerer.generator
    constraint = quote_constraint(question, packed, answerer.similarity, gen.tokenizer)
    # One sequence: the cut reads the end-of-sequence margins of the quote as it was written, which beam search
    # would reorder under it.
    limit = replace(decoding, max_new_tokens=min(decoding.max_new_tokens, QUOTE_TOKENS), stop=(), num_beams=1)
    _, stats = drain(gen.stream(packed.messages, limit, [constraint], session=session))
    return constraint.best_end(), replace(stats, kept_tokens=constraint.best_step())


def _tee(stream: PyGenerator[str, None, Any], into: list[str]) -> PyGenerator[str, None, Any]:
    """Pass ``stream``'s pieces on, keeping a copy in ``into``; returns the stream's return value."""
    while True:
        try:
            piece = next(stream)
        except StopIteration as stop:
            return stop.value
        into.append(piece)
        yield piece


@dataclass
class AnswerStream:
    """Iterate for the answer's text pieces; ``answer`` is ready once iteration has finished.

    ``prompt`` is what the generator read (None when nothing relevant was retrieved), ``runs`` the decoding runs
    the answer took.
    """

    prompt: PackedPrompt | None = None
    runs: list[Run] = field(default_factory=list)
    steps: PyGenerator[str, None, Answer] | None = None
    _answer: Answer | None = None

    @classmethod
    def finished(cls, answer: Answer) -> AnswerStream:
        return cls(_answer=answer)

    def __iter__(self) -> Iterator[str]:
        if self.steps is None:
            return
        steps, self.steps = self.steps, None
        self._answer = yield from steps

    @property
    def answer(self) -> Answer:
        if self._answer is None:
            raise RuntimeError("iterate over the stream first; the answer is complete only at its end")
        return self._answer
