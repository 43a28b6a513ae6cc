"""Quote mode: whatever the model prefers, the answer is a verbatim span of the sources."""

import re
from pathlib import Path

import pytest

from rag import Decoding, Index
from rag.answer.modes import NOT_IN_SOURCES
from rag.answer.quote import QuoteConstraint, token_bytes

from .conftest import load_questions

SEGMENTS = [
    "Super Bowl 50 was played on February 7, 2016, at Levi's Stadium in Santa Clara.",
    "The Panthers' defense gave up just 308 points (ranking sixth) — Beyoncé headlined.",
    "def top_p_filter(probs, p):",
    "Tokyo-based café owners paid ¥1,200 for 3.5 kg.",
]


@pytest.fixture(scope="module")
def tokenizer(sample_index: Index):
    return sample_index.generator.tokenizer


def test_token_bytes_reassemble_the_text(tokenizer) -> None:
    table = token_bytes(tokenizer)
    for text in SEGMENTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert b"".join(table[i] for i in ids).decode("utf-8") == text


def test_any_choice_of_tokens_stays_a_verbatim_span(tokenizer) -> None:
    """Random scores stand in for every possible model: each greedy path through them must be a quote."""
    import torch

    vocab = len(tokenizer)
    ended = 0
    for trial in range(60):
        constraint = QuoteConstraint.build(tokenizer, SEGMENTS)
        ids = torch.tensor([[1, 2, 3]])  # a stand-in prompt
        torch.manual_seed(trial)
        for _ in range(40):
            scores = constraint(ids, torch.randn(1, vocab) * 5)
            choice = int(scores[0].argmax())
            if choice == tokenizer.eos_token_id:
                ended += 1
                break
            ids = torch.cat([ids, torch.tensor([[choice]])], dim=1)
        text = tokenizer.decode(ids[0, 3:].tolist(), skip_special_tokens=True)
        assert text, "the first step admits no end: a quote is never empty"
        # Verbatim, and starting at a word, not inside one.
        at_word_start = [
            m.start()
            for seg in SEGMENTS
            for m in re.finditer(re.escape(text), seg)
            if m.start() == 0 or not seg[m.start() - 1].isalnum()
        ]
        assert at_word_start, text
    assert ended > 0  # the end is reachable (other paths hit the 40-step cap)


def test_end_is_forced_when_the_quote_cannot_continue(tokenizer) -> None:
    constraint = QuoteConstraint.build(tokenizer, ["Denver won."])
    ids = tokenizer("Denver won.", add_special_tokens=False)["input_ids"]
    allowed, may_end = constraint.allowed(ids)
    assert allowed == set() and may_end
    # Mid-word the quote may not end: "Den" must go on to "ver".
    partial = tokenizer("Den", add_special_tokens=False)["input_ids"]
    if tokenizer.decode(partial) == "Den":
        assert not constraint.allowed(partial)[1]


def test_quote_answers_are_verbatim_spans_of_their_documents(sample_index: Index) -> None:
    from ingest.loaders import load

    answered = 0
    for q in load_questions():
        answer = sample_index.ask(q["question"], answer_mode="quote", decoding=Decoding(max_new_tokens=24))
        assert answer.answer_mode in ("quote", "extract")  # extract: the quote had no content, the sentence is given
        if not answer.answered:
            assert answer.text == NOT_IN_SOURCES
            continue
        answered += 1
        assert any(answer.text in h.text for h in answer.sources), (q["id"], answer.text)
        # The support check cites the span holding the quote, by file and character offsets.
        assert answer.supported and answer.support, (q["id"], answer.text)
        for support in answer.support:
            assert support.claim in support.quote or support.claim.rstrip(";") in support.quote, support
            assert load(Path(support.path)).text[support.start : support.end] == support.quote
    assert answered >= len(load_questions()) * 0.8


def test_admitted_tokens_end_where_the_sources_own_tokens_end(tokenizer) -> None:
    """A byte fragment spells the quote too, but the model would never write it: only tokens that end on the
    source's token boundaries (or on those of a word written at the answer's start) are admitted."""
    import torch

    constraint = QuoteConstraint.build(tokenizer, SEGMENTS)
    table = token_bytes(tokenizer)
    ends = set(constraint.ends)
    written: list[int] = []
    torch.manual_seed(0)
    for _ in range(12):
        at = constraint.positions(written)
        allowed, may_end = constraint.allowed(written)
        if not allowed:
            break
        for tok in allowed:
            assert any(p + len(table[tok]) in ends for p in at), table[tok]
        ids = torch.tensor([[1, 2, 3, *written]])
        expected = sorted(allowed | set(constraint.eos_ids)) if may_end else sorted(allowed)
        assert constraint.candidates(ids) == expected
        written.append(sorted(allowed)[int(torch.randint(len(allowed), (1,)))])
    # An answer starts without a leading space, where a word often splits otherwise than mid-sentence: the
    # word's own first token, as the tokenizer writes it at the start, is admitted.
    start = QuoteConstraint.build(tokenizer, ["It was Beyoncé who headlined."], start=lambda w: w[:1].isupper())
    own_first = tokenizer("Beyoncé", add_special_tokens=False)["input_ids"][0]
    assert own_first in start.allowed([])[0]
