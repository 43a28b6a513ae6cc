"""Packing sources into the budget, with a word-counting stand-in for the tokenizer (exact numbers matter here;
the real tokenizer is covered in test_api.py)."""

from rag.answer.prompt import build_messages, focus, pack
from rag.answer.text import citations, sentences
from rag.types import Hit


def hit(rank: int, words: int) -> Hit:
    text = " ".join(f"w{rank}" for _ in range(words))
    return Hit(
        rank=rank, score=0.5, chunk_id=rank, path=f"/docs/d{rank}.md", title=None, kind="markdown",
        ordinal=0, start=0, end=len(text), token_count=words, text=text,
    )  # fmt: skip


def words(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"].split()) for m in messages)


def test_sources_are_packed_in_rank_order_within_budget() -> None:
    hits = [hit(1, 50), hit(2, 500), hit(3, 40)]
    overhead = words(build_messages("q?", []))
    packed = pack("q?", hits, words, budget=overhead + 120)
    assert [h.rank for h in packed.sources] == [1, 3]  # 2 does not fit; the shorter 3 still does
    assert [h.rank for h in packed.dropped] == [2]
    assert packed.tokens == words(packed.messages) <= overhead + 120


def test_a_too_long_best_source_is_cut_not_dropped() -> None:
    overhead = words(build_messages("q?", []))
    packed = pack("q?", [hit(1, 1000)], words, budget=overhead + 100)
    assert len(packed.sources) == 1 and packed.tokens <= overhead + 100
    assert packed.sources[0].text.startswith(packed.excerpts[0]) and len(packed.excerpts[0]) < len(
        packed.sources[0].text
    )


def test_focus_keeps_the_most_similar_sentences_in_order() -> None:
    a = hit(1, 0)
    a = type(a)(
        **{**a.as_dict(), "text": "Cats purr. Top-p keeps the nucleus. Dogs bark.\n\nTop-p was named by Holtzman."}
    )
    b = type(a)(**{**a.as_dict(), "rank": 2, "text": "Nothing here. Or here."})

    def similarity(question: str, texts: list[str]) -> list[float]:  # shared words with the question
        q = set(question.lower().split())
        return [len(q & set(t.lower().rstrip(".").split())) for t in texts]

    excerpts = focus("what does top-p keep nucleus holtzman", [a, b], similarity, keep=2)
    assert excerpts == ["Top-p keeps the nucleus. Top-p was named by Holtzman.", ""]
    packed = pack("q?", [a, b], words, budget=10_000, excerpts=excerpts)
    assert packed.sources == [a] and packed.dropped == [b]
    assert "Cats" not in packed.messages[1]["content"]


def test_sentences_split_on_ends_and_blank_lines() -> None:
    assert sentences("One. Two? Three!\n\nFour\nstill four.") == ["One.", "Two?", "Three!", "Four\nstill four."]


def test_sources_are_numbered_and_delimited() -> None:
    user = build_messages("Why?", [hit(1, 3), hit(2, 3)])[1]["content"]
    assert "[1] d1.md (chunk 1)\nw1 w1 w1" in user and "[2] d2.md" in user
    assert user.startswith("Question: Why?") and user.rstrip().endswith("Question: Why?")


def test_citations_are_parsed() -> None:
    assert citations("See [2] and [1, 3]; also [2] and [9].", 3) == [2, 1, 3]
    assert citations("no citations", 3) == []
