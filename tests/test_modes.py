"""Answer modes: quote trimming, sentence choice, the mode setting, and each mode end to end on sample_docs."""

import json
from pathlib import Path

import pytest

from rag import Config, ConfigError, Decoding, Index
from rag.answer.modes import answer_start, best_sentences, question_words, trim
from rag.types import Hit

from .test_cli import run


@pytest.mark.parametrize(
    ("quote", "question", "expected"),
    [
        ("the defense gave up 308 points,", "How many points did the defense allow?", "gave up 308"),
        ("in 1886, Robert Lane", "Who did Tesla partner with in 1886?", "Robert Lane"),
        ("Denver Broncos", "Who won Super Bowl 50?", "Denver Broncos"),
        ("the Super Bowl", "Which Super Bowl?", "the Super Bowl"),  # nothing would be left: keep it
    ],
)
def test_trim_drops_words_that_restate_the_question(quote: str, question: str, expected: str) -> None:
    trimmed = trim(quote, question)
    assert trimmed == expected
    assert trimmed in quote  # still a verbatim quote


@pytest.mark.parametrize(
    ("question", "yes", "no"),
    [
        ("How many points did the defense allow?", ["308", "twelve"], ["Denver", "points"]),
        ("When did the game take place?", ["2016", "February"], ["Sunday", "game"]),
        ("In what year was it built?", ["1889,"], ["built"]),
        ("Who won the game?", ["Denver"], ["won", "the"]),
    ],
)
def test_answer_start_follows_the_question_word(question: str, yes: list[str], no: list[str]) -> None:
    test = answer_start(question)
    assert test is not None
    assert all(test(w) for w in yes) and not any(test(w) for w in no)


def test_answer_start_is_open_for_other_questions() -> None:
    assert answer_start("What does top-p sampling keep?") is None


def test_question_words_cover_written_and_normalised_forms() -> None:
    assert {"panthers'", "panthers", "defense", "how"} <= question_words("How did the Panthers' defense do?")


def test_best_sentences_pass_over_headings() -> None:
    def similarity(question: str, texts: list[str]) -> list[float]:
        return [1.0 if t == "Super Bowl 50" else 0.5 + 0.01 * len(t) for t in texts]

    text = "Super Bowl 50\n\nDenver beat Carolina 24–10. The game was played in Santa Clara, California."
    hit = Hit(
        rank=1, score=0.5, chunk_id=1, path="/d.md", title=None, kind="markdown",
        ordinal=0, start=0, end=len(text), token_count=20, text=text,
    )  # fmt: skip
    # The excerpt shown joins heading and sentences with spaces; segments come from the source text itself.
    excerpt = "Super Bowl 50 Denver beat Carolina 24–10. The game was played in Santa Clara, California."
    assert best_sentences("q?", [hit], [excerpt], similarity, 2) == [
        "The game was played in Santa Clara, California.",
        "Denver beat Carolina 24–10.",
    ]


def test_unknown_answer_mode_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="answer_mode"):
        Config.load(answer_mode="best")
    result = run("ask", "q", "--answer-mode", "best", "--index", str(tmp_path))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "quote, auto, generate, extract" in result.stderr


QUESTION = "Who introduced nucleus (top-p) sampling?"


@pytest.mark.parametrize("mode", ["quote", "auto", "generate", "extract"])
def test_every_mode_answers_with_checked_support(sample_index: Index, mode: str) -> None:
    answer = sample_index.ask(QUESTION, answer_mode=mode, decoding=Decoding(max_new_tokens=24))
    assert answer.settings["answer_mode"] == mode
    # auto and quote replace an unsupported answer (a quote: one with no content of its own) by the best sentence.
    produced = {"auto": {"generate", "extract"}, "quote": {"quote", "extract"}}.get(mode, {mode})
    assert answer.answer_mode in produced
    assert answer.support, answer
    assert answer.supported == all(s.supported for s in answer.support)
    if mode in ("quote", "extract"):  # copied from the sources: supported by construction
        assert answer.supported and any(answer.text in h.text for h in answer.sources)
    if mode == "auto":  # auto never leaves an unsupported answer standing
        assert answer.supported or not answer.answered
    if answer.supported:
        assert answer.cited and set(answer.cited) <= set(range(1, len(answer.sources) + 1))


def test_ask_json_carries_mode_and_support(sample_index: Index) -> None:
    index = str(sample_index.store.directory)
    result = run("ask", QUESTION, "--answer-mode", "extract", "--json", "--index", index)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["answer_mode"] == "extract" and data["supported"] is True
    [support] = data["support"]
    assert {"claim", "supported", "quote", "path", "start", "end", "source", "overlap", "similarity"} <= set(support)
    assert "Holtzman" in support["quote"]

    text = run("ask", QUESTION, "--answer-mode", "extract", "--index", index)
    assert text.returncode == 0, text.stderr
    answer = text.stdout.partition("\nSources:\n")[0]
    assert '  > "' in answer and "sampling.html:" in answer  # the quote under the answer, with its file


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("the 12th", "12th"),
        ("Jacksonville is 12th", "Jacksonville is the 12th"),  # articles and case may differ
        ("top-p sampling", "Top-p sampling"),
        ("Ari Holtzman.", "Ari Holtzman"),
        ("Holtzman and Smith", ""),  # not a span of any segment
        ("", ""),
    ],
)
def test_a_generated_answer_snaps_to_the_span_its_source_writes(answer: str, expected: str) -> None:
    from rag.answer.modes import snap

    segments = ["Jacksonville is the 12th largest city.", "Top-p sampling was introduced by Ari Holtzman and others."]
    assert snap(answer, segments) == expected
