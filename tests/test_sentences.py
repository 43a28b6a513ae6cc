"""How / why questions: the router, the per-sentence check with the real embedder, and the default tier's
answers to the explanation questions of sample_docs."""

from pathlib import Path

import pytest

from rag import Index
from rag.answer.route import wants_explanation
from rag.answer.sentences import UNSUPPORTED_MARK, check_sentences, compose, declines, whole_sentences
from rag.answer.support import content_words
from rag.types import Hit

from .conftest import SAMPLE_DOCS, load_questions

EXPLAIN = [
    "Why are the query-key dot products scaled before the softmax in attention?",
    "How does top-p sampling decide which tokens stay in the candidate set?",
    "What are the differences between BERT and GPT pre-training?",
    "In the attention code, why is the largest score subtracted before calling exp?",
    "Describe the components of current in an npn transistor",
    "what is the purpose of the molasses act",
    "compare the audit committees of Nigeria and the United States",
]
FACT = [
    "How many points did the Panthers defense surrender?",
    "How long can an input to all-MiniLM-L6-v2 be before it gets truncated?",
    "Who introduced nucleus (top-p) sampling?",
    "Which name is also used to describe the Amazon rainforest in English?",
    "What theory best explains gravity?",
    "When was the bell tower cast?",
]


@pytest.mark.parametrize("question", EXPLAIN)
def test_explanation_questions_are_routed_to_sentences(question: str) -> None:
    assert wants_explanation(question)


@pytest.mark.parametrize("question", FACT)
def test_fact_questions_keep_the_short_answer(question: str) -> None:
    assert not wants_explanation(question)


def test_the_marked_sample_questions_are_the_routed_ones() -> None:
    for q in load_questions():
        assert wants_explanation(q["question"]) == q["explain"], q["id"]
        assert not q["explain"] or len(q["reference"].split()) > 12, q["id"]


def test_whole_sentences_leave_out_a_cut_end_and_fragments() -> None:
    text = "The raw scores grow with d_k [1]. So it is [2]. Dividing by the root keeps the softmax smooth [1]. The s [1"
    assert whole_sentences(text) == ["The raw scores grow with d_k.", "Dividing by the root keeps the softmax smooth."]
    assert declines('"Not in the sources."') and declines("The sources do not mention who painted it.")
    assert not declines("The softmax is not smooth for large scores.")


DOC = (
    "Scaled dot-product attention\n\n"
    "If the components of q and k are independent with mean 0 and variance 1, their dot product has variance d_k. "
    "For large d_k the raw scores become large in magnitude, and the softmax of large numbers is extremely peaked. "
    "Dividing by the square root of d_k brings the variance back to about 1 and makes training stable.\n\n"
    "Multi-head attention runs several attention functions in parallel, each with its own projections."
)


@pytest.fixture(scope="module")
def hits(tmp_path_factory: pytest.TempPathFactory) -> list[Hit]:
    path = tmp_path_factory.mktemp("sentences") / "attention.md"
    path.write_text(DOC, encoding="utf-8")
    cut = DOC.index("Multi-head")
    pieces = [(cut, len(DOC)), (0, cut - 2)]  # the scaling paragraph is source [2]
    return [
        Hit(
            rank=n,
            score=0.5,
            chunk_id=n,
            path=str(path),
            title=None,
            kind="markdown",
            ordinal=n - 1,
            start=s,
            end=e,
            token_count=0,
            text=DOC[s:e],
        )
        for n, (s, e) in enumerate(pieces, start=1)
    ]


def test_unsupported_sentences_are_dropped_and_citations_rewritten(sample_index: Index, hits: list[Hit]) -> None:
    embed = sample_index.embedder.embed_documents
    question = "Why are the dot products scaled in attention?"
    written = [
        # restates the question, then says what the source says; the model cited the wrong source
        "The dot products are scaled because for large d_k the raw scores become large and the softmax is peaked.",
        "Scaling was invented by Geoffrey Hinton in 1986 to save memory on GPUs.",  # in no source
        "Dividing by the square root of d_k brings the variance back to about 1.",
    ]
    checked = check_sentences(written, hits, embed, question)
    assert [c.supported for c in checked] == [True, False, True]
    text, supports = compose(checked)
    assert "Hinton" not in text and text.count("[2]") == 2 and "[1]" not in text
    for s in supports:
        assert s.supported and s.path == hits[1].path
        assert Path(s.path).read_text(encoding="utf-8")[s.start : s.end] == s.quote
    marked, _ = compose(checked, "mark")
    assert f"GPUs {UNSUPPORTED_MARK}." in marked


@pytest.mark.parametrize("qid", ["q16", "q17"])
def test_sample_explanation_questions_get_cited_supported_sentences(default_index: Index, qid: str) -> None:
    q = next(q for q in load_questions() if q["id"] == qid)
    answer = default_index.ask(q["question"])
    assert answer.answered and answer.answer_mode == "sentences", answer.text
    said = whole_sentences(answer.text)
    assert len(said) >= 1 and answer.supported
    assert all(s.supported for s in answer.support)
    assert answer.text.rstrip(".").endswith("]")  # each sentence ends in its citation
    files = {str(Path(answer.sources[n - 1].path).relative_to(SAMPLE_DOCS)) for n in answer.cited}
    assert files & set(q["files"]), files
    # the explanation the source gives: the reference's key words
    key = {"q16": {"cumul", "probabl"}, "q17": {"softmax", "peak", "gradient"}}[qid]
    words = " ".join(content_words(answer.text))
    assert all(k in words for k in key), answer.text
