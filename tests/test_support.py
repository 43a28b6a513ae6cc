"""The support check on crafted answers, with the real embedder and a real document on disk."""

from pathlib import Path

import pytest

from rag import Index
from rag.answer.support import check, claims, content_words, is_supported
from rag.types import Hit

DOC = (
    "Super Bowl 50\n\n"
    "Super Bowl 50 was an American football game played on February 7, 2016, at Levi's Stadium in Santa Clara, "
    "California. The American Football Conference champion Denver Broncos defeated the National Football "
    "Conference champion Carolina Panthers 24–10 to earn their third Super Bowl title. "
    "The Panthers' defense gave up just 308 points, ranking sixth in the league.\n\n"
    "Beyoncé and Bruno Mars headlined the halftime show, which was produced by Coldplay."
)


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("support") / "super_bowl.txt"
    path.write_text(DOC, encoding="utf-8")
    return path


def hits_of(doc: Path) -> list[Hit]:
    """Two chunks of the document, neither starting at offset 0, so offsets must be mapped back to the file."""
    first = DOC.index("Super Bowl 50 was")
    second = DOC.index("Beyoncé")
    chunks = [(first, second - 2), (second, len(DOC))]
    return [
        Hit(
            rank=n,
            score=0.5,
            chunk_id=n,
            path=str(doc),
            title=None,
            kind="text",
            ordinal=n - 1,
            start=s,
            end=e,
            token_count=0,
            text=DOC[s:e],
        )
        for n, (s, e) in enumerate(chunks, start=1)
    ]


@pytest.fixture(scope="module")
def embed(sample_index: Index):
    return sample_index.embedder.embed_documents


@pytest.mark.parametrize(
    ("answer", "source", "quoted"),
    [
        ("The Denver Broncos defeated the Carolina Panthers.", 1, "Denver Broncos defeated"),
        ("308", 1, "308 points"),
        ("It was played at Levi's Stadium in Santa Clara.", 1, "Levi's Stadium"),
        ("Beyoncé and Bruno Mars headlined the halftime show [2].", 2, "Bruno Mars"),
        ("Coldplay produced the halftime show.", 2, "produced by Coldplay"),
    ],
)
def test_supported_claims_cite_their_span_in_the_file(doc: Path, embed, answer: str, source: int, quoted: str) -> None:
    hits = hits_of(doc)
    [support] = check(answer, hits, embed, question="")
    assert support.supported, support
    assert support.source == source and support.path == str(doc)
    assert quoted in support.quote
    assert doc.read_text(encoding="utf-8")[support.start : support.end] == support.quote


@pytest.mark.parametrize(
    "answer",
    [
        "Super Bowl 50 was played on February 9, 2017.",  # wrong date, same words otherwise
        "The Carolina Panthers won the game.",  # the opposite of the source
        "The defense gave up 408 points.",  # wrong number
        "Taylor Swift performed at halftime.",  # not in the sources at all
        "I don't know.",
    ],
)
def test_unsupported_claims_are_marked(doc: Path, embed, answer: str) -> None:
    supports = check(answer, hits_of(doc), embed)
    assert supports and not any(s.supported for s in supports), supports
    assert not is_supported(supports)


def test_each_clause_is_checked_on_its_own(doc: Path, embed) -> None:
    answer = "The Broncos defeated the Panthers 24–10; the halftime show was headlined by Taylor Swift."
    supports = check(answer, hits_of(doc), embed)
    assert [s.supported for s in supports] == [True, False]
    assert [s.source for s in supports] == [1, 2]
    assert not is_supported(supports)


def test_the_question_picks_the_span_for_a_bare_answer(doc: Path, embed) -> None:
    # "Super Bowl" is in several sentences; the one answering the question is the right citation.
    [support] = check("third", hits_of(doc), embed, question="Which Super Bowl title was it for the Broncos?")
    assert support.supported and "third Super Bowl title" in support.quote


def test_no_sources_or_no_claims() -> None:
    assert check("", [], lambda texts: None) == []
    assert check("The, of and.", [], lambda texts: None) == []
    [support] = check("Denver won.", [], lambda texts: None)
    assert not support.supported and support.path is None


def test_claims_and_content_words() -> None:
    assert claims("Denver won [1]. The score was 24–10; Carolina lost.\n") == [
        "Denver won.",
        "The score was 24–10;",
        "Carolina lost.",
    ]
    assert content_words("The Panthers gave up 308 points!") == ["panther", "gave", "308", "point"]
