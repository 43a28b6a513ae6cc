"""`rag eval` on tiny hand-made BEIR and QA folders, with numbers that can be checked by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rag import Config, ConfigError, Index, SourceNotFoundError
from rag.tools.datasets import QAItem
from rag.tools.evaluate import answer_scores, beir_scores, evaluate, load_qa
from rag.types import Answer

from .test_cli import run

CORPUS = {
    "d1": ("Zebras", "Zebras have black and white stripes that confuse biting flies."),
    "d2": ("Volcanoes", "Magma rises through the crust and erupts from a volcano as lava."),
    "d3": ("Sourdough bread", "A sourdough starter ferments flour and water with wild yeast."),
    "d4": ("Chess openings", "The Sicilian Defence answers 1.e4 with c5."),
    "d5": ("Photosynthesis", "Plants convert sunlight, water and carbon dioxide into glucose and oxygen."),
}
QUERIES = {
    "q1": ("Why do zebras have stripes?", ["d1"]),
    "q2": ("How does lava come out of a volcano?", ["d2"]),
    "q3": ("What does a sourdough starter ferment?", ["d3"]),
    # d4 shares no word with q4, so BM25 never returns it: BM25 finds 1 of q4's 2 relevant documents.
    "q4": ("How do plants make glucose from sunlight?", ["d5", "d4"]),
}


@pytest.fixture()
def beir_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-beir"
    folder.mkdir()
    rows = [{"_id": i, "title": t, "text": x} for i, (t, x) in CORPUS.items()]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    queries = [{"_id": q, "text": t} for q, (t, _) in QUERIES.items()]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    qrels = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, (_, ds) in QUERIES.items() for d in ds]
    (folder / "qrels-test.tsv").write_text("\n".join(qrels) + "\n")
    return folder


def _config(tmp_path: Path) -> Config:
    return Config.load(cache_dir=tmp_path / "cache")


def test_beir_eval_reports_every_mode_with_hand_checkable_numbers(
    beir_folder: Path, tmp_path: Path, sample_index: Index
) -> None:
    report = evaluate(beir_folder, _config(tmp_path), split="test", embedder=sample_index.embedder)
    assert list(report.modes) == ["dense", "bm25", "hybrid"]
    assert report.queries == 4 and report.ingest["documents"] == 5
    bm25 = report.modes["bm25"]
    # q1-q3: the one relevant document first (nDCG 1). q4: d5 first, d4 never: DCG 1, ideal DCG 1 + 1/log2(3).
    q4_ndcg = 1 / (1 + 1 / math.log2(3))
    assert bm25["ndcg@10"] == pytest.approx((3 + q4_ndcg) / 4)
    assert bm25["recall@10"] == pytest.approx((3 + 0.5) / 4)
    assert bm25["mrr@10"] == pytest.approx(1.0)
    # Dense and hybrid rank all five documents, so every relevant one is within 100.
    assert report.modes["dense"]["recall@100"] == pytest.approx(1.0)
    assert report.modes["hybrid"]["recall@100"] == pytest.approx(1.0)
    assert report.modes["hybrid"]["mrr@10"] == pytest.approx(1.0)

    again = evaluate(beir_folder, _config(tmp_path), split="test", embedder=sample_index.embedder)
    assert again.ingest["embedded_chunks"] == 0  # the cached index is reused, nothing re-embedded
    assert again.modes == report.modes


def test_beir_errors_name_what_to_fix(beir_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"qrels-train\.tsv"):
        evaluate(beir_folder, _config(tmp_path), split="train")
    with pytest.raises(ConfigError, match="--answers needs a QA file"):
        evaluate(beir_folder, _config(tmp_path), answers=True)
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        evaluate(tmp_path / "nothing", _config(tmp_path))
    with pytest.raises(ConfigError, match="reranker"):
        evaluate(beir_folder, _config(tmp_path), retrievals=["rerank"])


def test_ranking_scores_by_hand() -> None:
    scores = beir_scores(["x", "a", "y", "b"], {"a": 1, "b": 1})
    assert scores["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert scores["mrr@10"] == pytest.approx(0.5)
    assert scores["recall@10"] == scores["recall@100"] == 1.0


@pytest.fixture()
def qa_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "qa"
    (folder / "docs").mkdir(parents=True)
    (folder / "docs" / "rivers.txt").write_text("The river Silvermere flows through the town of Quellbrook.\n")
    (folder / "docs" / "bells.txt").write_text("The bell tower of Ostmark was cast in bronze in 1721.\n")
    questions = [
        {"question": "Which river flows through Quellbrook?", "answers": ["Silvermere"], "doc_file": "docs/rivers.txt"},
        {"question": "When was the Ostmark bell tower cast?", "answers": ["1721"], "doc_file": "docs/bells.txt"},
        {"question": "What metal is the Ostmark bell tower made of?", "answers": ["bronze"]},
    ]
    (folder / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    return folder


def test_qa_eval_scores_retrieval_hits(qa_folder: Path, tmp_path: Path, sample_index: Index) -> None:
    report = evaluate(qa_folder, _config(tmp_path), embedder=sample_index.embedder)
    assert report.kind == "qa" and report.queries == 3
    for mode, scores in report.modes.items():
        assert scores["hit@1"] == pytest.approx(1.0), mode
        assert scores["mrr@10"] == pytest.approx(1.0), mode
        # file hits are averaged over the questions that name a file (the third names none).
        assert scores["file_hit@1"] == pytest.approx(1.0), mode


def test_qa_eval_scores_answer_modes_side_by_side(qa_folder: Path, cache_dir: Path, sample_index: Index) -> None:
    config = Config.load(cache_dir=cache_dir)  # the session's converted generator weights
    report = evaluate(
        qa_folder, config, split="tune", answer_modes=["extract", "quote"], embedder=sample_index.embedder
    )
    assert list(report.answers) == ["extract", "quote"]
    extract, quote = report.answers["extract"], report.answers["quote"]
    # Each document is one sentence holding its answer: the ceiling is reached, and extract returns it whole.
    assert extract["ceiling"] == quote["ceiling"] == 1.0
    assert extract["answer_contained"] == 1.0 and extract["exact_match"] == 0.0
    assert 0.0 < extract["token_f1"] < 1.0
    # Quotes are verbatim spans of the sources, so every answered one is backed by its cited span.
    assert quote["faithful"] == 1.0 and quote["answered"] == 1.0
    assert all(scores["seconds_per_answer"] > 0 for scores in report.answers.values())


def test_qa_eval_answers_with_several_generators_side_by_side(
    qa_folder: Path, cache_dir: Path, sample_index: Index
) -> None:
    config = Config.load(cache_dir=cache_dir)
    source = sample_index.generator.source
    same_model = str(Path(source.location) / source.gguf_file)  # the fast tier again, named by its file
    report = evaluate(
        qa_folder,
        config,
        answer_modes=["extract"],
        generators=[config.gen_model, same_model],
        embedder=sample_index.embedder,
    )
    assert list(report.answers) == [f"{config.gen_model} · extract", f"{same_model} · extract"]
    first, second = report.answers.values()
    assert first["answer_contained"] == 1.0 and first["answered"] == 1.0
    # One model under two names packs the same prompts, so it extracts the same sentences.
    assert {k: v for k, v in first.items() if "seconds" not in k} == {
        k: v for k, v in second.items() if "seconds" not in k
    }
    out = run("eval", str(qa_folder), "--answer-mode", "extract", "--generator", same_model, "--retrieval", "bm25")
    assert out.returncode == 0, out.stderr
    assert "answer_contained" in out.stdout and "extract" in out.stdout


def test_load_qa_limit_spreads_over_the_split(tmp_path: Path) -> None:
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question": f"q{n}", "answers": [str(n)]}) + "\n" for n in range(20)))
    assert [q.question for q in load_qa(questions, "tune", limit=3)] == ["q0", "q6", "q12"]
    assert [q.question for q in load_qa(questions, "all", limit=4)] == ["q0", "q5", "q10", "q15"]


def test_qa_splits_are_even_and_odd_lines(qa_folder: Path) -> None:
    questions = qa_folder / "questions.jsonl"
    assert [q.answers for q in load_qa(questions, "tune")] == [["Silvermere"], ["bronze"]]
    assert [q.answers for q in load_qa(questions, "test")] == [["1721"]]
    assert len(load_qa(questions, "all", limit=2)) == 2
    assert load_qa(questions, "tune")[0].files == [str((qa_folder / "docs" / "rivers.txt").resolve())]
    with pytest.raises(ConfigError, match="split"):
        load_qa(questions, "train")


def test_answer_scores_use_squad_normalisation() -> None:
    answer = Answer("q", "The Silvermere river.", [], timings={"retrieve_s": 0.5, "generate_s": 1.5})
    scores = answer_scores(answer, QAItem("q", ["Silvermere"]), shown="Quellbrook lies on the Silvermere.")
    assert scores["exact_match"] == 0.0 and scores["ceiling"] == 1.0 and scores["faithful"] == 0.0
    assert scores["token_f1"] == pytest.approx(2 * (1 / 2) * 1 / (1 / 2 + 1))
    assert scores["answer_contained"] == 1.0
    assert scores["seconds_per_answer"] == pytest.approx(2.0)
    assert "rouge_l" not in scores and "abstained" not in scores  # a fact question


def test_long_references_get_rouge_and_recall_and_unanswerable_ones_abstention() -> None:
    from rag.answer.support import Support

    reference = "Owls hunt at night because their large eyes gather the little light there is, and they fly silently."
    item = QAItem("why do owls hunt at night", [reference, "Owls are nocturnal."], ["/d/owls.txt"])
    assert item.long and item.answerable
    said = "Owls hunt at night [1]. Their large eyes gather light [1]. Owls are blue [2]."
    support = [
        Support("Owls hunt at night.", True, 1.0, 0.9, 1, "/d/owls.txt", 0, 10, "Owls hunt at night."),
        Support("Their large eyes gather light.", True, 1.0, 0.9, 1, "/d/owls.txt", 0, 10, "..."),
        Support("Owls are blue.", False, 0.5, 0.5, 2, "/d/owls.txt", 0, 10, "..."),
    ]
    scores = answer_scores(Answer("q", said, [], support=support), item)
    assert scores["sentences_supported"] == pytest.approx(2 / 3)
    assert scores["words"] == 12.0  # the [n] markers are not words
    # rouge-score tokenises lower-case alphanumerics: the LCS is "owls hunt at night their large eyes gather light"
    ref_tokens, said_tokens, lcs = 18, 12, 9
    precision, recall = lcs / said_tokens, lcs / ref_tokens
    assert scores["rouge_l"] == pytest.approx(2 * precision * recall / (precision + recall))
    # the best reference: "owls are" of "Owls are nocturnal" (2/3) beats 9 of the first one's 17 (no "the")
    assert scores["token_recall"] == pytest.approx(2 / 3)
    unanswerable = QAItem("who painted the owl", [], answerable=False)
    declined = answer_scores(Answer("q", "The sources do not answer this.", [], answered=False), unanswerable)
    assert declined["abstained"] == 1.0 and "token_f1" not in declined and declined["words"] == 0.0


def test_cli_eval_json_and_errors(beir_folder: Path, tmp_path: Path, sample_index: Index) -> None:
    env = {"RAG_CACHE_DIR": str(tmp_path / "cache")}
    result = run("eval", str(beir_folder), "--retrieval", "bm25", "--retrieval", "dense", "--json", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kind"] == "beir" and list(data["modes"]) == ["bm25", "dense"]
    assert data["modes"]["bm25"]["recall@10"] == pytest.approx(0.875)
    table = run("eval", str(beir_folder), "--retrieval", "bm25", "-q", env=env)
    assert table.returncode == 0 and "ndcg@10" in table.stdout and "bm25" in table.stdout
    missing = run("eval", str(tmp_path / "nothing"), env=env)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    bad_split = run("eval", str(beir_folder), "--split", "dev", env=env)
    assert bad_split.returncode == 2 and "qrels-dev.tsv" in bad_split.stderr


def test_cli_search_modes_and_filters(sample_index: Index) -> None:
    index = str(sample_index.store.directory)
    result = run("--index", index, "search", "FAISS IVF nprobe", "--retrieval", "bm25", "--kind", "markdown", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["retrieval"] == "bm25" and data["hits"]
    assert {h["kind"] for h in data["hits"]} == {"markdown"}
    assert run("--index", index, "search", "q", "--retrieval", "sparse").returncode == 2
    assert run("--index", index, "search", "q", "--since", "yesterday-ish").returncode == 2
