"""Conversations: follow-up retrieval queries, turns stored in the index and resumed, and `rag chat`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rag import Config, Conversation, Index, SourceNotFoundError, Turn
from rag.retrieval.followup import conversation_query, refers_back
from tests.conftest import FAST_TIER
from tests.stores import copy_index

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("question", "follows"),
    [
        ("How many tackles did he register?", True),
        ("And the year?", True),
        ("When was it brought back to life?", True),
        ("Which character does SentencePiece use in place of spaces?", False),
        ("Who started the llama.cpp project?", False),
    ],
)
def test_a_question_that_leans_on_the_one_before_is_recognised(question: str, follows: bool) -> None:
    assert refers_back(question) is follows


def test_the_follow_up_query_carries_the_subject_of_the_turns_before() -> None:
    first = "When was Warsaw's first stock exchange established?"
    second = "When was it brought back to life?"
    third = "Whose former headquarters was it located in until 2000?"
    assert conversation_query(first, []) == first
    assert conversation_query(second, [first]) == f"{second} {first}"
    assert conversation_query(third, [first, second]) == f"{third} {second} {first}"  # each leaned on the one before
    standalone = "Which character does SentencePiece use in place of spaces?"
    assert conversation_query(standalone, [first, second]) == standalone  # a new subject is searched on its own


@pytest.fixture()
def chat_index(tmp_path: Path, sample_index: Index) -> Index:
    """A private copy of the sample index (conversations write to it) sharing the session's models."""
    copy_index(sample_index.store.directory, tmp_path / "idx")
    index = Index.open(config=Config.load(index=tmp_path / "idx", cache_dir=sample_index.config.cache_dir))
    index.embedder = sample_index.embedder
    index.generator = sample_index.generator
    yield index
    index.close()


def test_a_follow_up_is_retrieved_with_its_subject_and_the_turns_are_stored(chat_index: Index) -> None:
    chat = Conversation.start(chat_index)
    chat.ask("How many tokens are there in the vocabulary of bert-base-uncased?")
    answer = chat.ask("What token id does [CLS] have in it?")
    assert chat.turns[1].query.endswith("bert-base-uncased?") and answer.settings["query"] == chat.turns[1].query
    assert any(h.path.endswith("subword_tokenization.pdf") for h in answer.sources)
    assert answer.answered and answer.support  # grounded and checked like any ask

    again = Conversation.resume(chat_index)  # the most recent conversation
    assert again.id == chat.id and [t.question for t in again.turns] == [t.question for t in chat.turns]
    assert again.turns[1].answer["text"] == answer.text
    with pytest.raises(SourceNotFoundError, match="no conversation 'nope'"):
        Conversation.resume(chat_index, "nope")


def test_a_follow_up_finds_the_document_of_the_turn_before(fresh_index: Index, tmp_path: Path) -> None:
    docs = tmp_path / "bakeries"
    docs.mkdir()
    (docs / "harbour.md").write_text(
        "# Harbour Bakery\n\nMarta Olsen founded the Harbour Bakery in 1987. She trained as a chemist first.\n"
    )
    (docs / "hill.md").write_text(
        "# Hill Bakery\n\nJonas Berg opened the Hill Bakery in 2003. He trained as a carpenter first.\n"
    )
    fresh_index.ingest(docs)
    chat = Conversation.start(fresh_index)
    for first_hit_of_hill in (True, False):  # either document first: the follow-up follows the conversation
        bakery = "Hill" if first_hit_of_hill else "Harbour"
        chat.turns.clear()
        chat.turns.append(Turn(f"Who opened the {bakery} Bakery?", "", {}))
        query = chat.query_for("What did that person train as first?")
        assert fresh_index.search(query, 1)[0].path.endswith(f"{bakery.lower()}.md"), query


def test_rag_chat_reads_questions_from_a_pipe_and_continues_a_stored_conversation(chat_index: Index) -> None:
    env = {**os.environ, "RAG_GEN_MODEL": FAST_TIER}
    cmd = [sys.executable, "-m", "rag.cli", "--index", str(chat_index.store.directory), "chat", "--json"]
    asked = ["Who introduced nucleus (top-p) sampling?", "How does it decide which tokens stay in the candidate set?"]
    piped = f"{asked[0]}\n\n{asked[1]}\n"  # a blank line is passed over
    done = subprocess.run(cmd, input=piped, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    transcript = json.loads(done.stdout)
    assert [t["question"] for t in transcript["turns"]] == asked
    assert "nucleus" in transcript["turns"][1]["query"]

    more = subprocess.run(
        [*cmd, "--continue"], input="Who introduced it?\n", env=env, capture_output=True, text=True, timeout=300
    )
    assert more.returncode == 0, more.stderr
    resumed = json.loads(more.stdout)
    assert resumed["conversation"] == transcript["conversation"] and len(resumed["turns"]) == 3

    missing = subprocess.run([*cmd, "--continue", "nope"], input="", env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "no conversation 'nope'" in missing.stderr
