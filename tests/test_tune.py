"""`rag tune` with the real bundled embedder: a tiny training run on sample_docs/, the switch through the shadow
vector set, resume after kill -9 during the re-embed, rollback, and the pieces (pairs, held-out split, seeding)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from rag import Index
from rag.cli import main
from rag.config import Config
from rag.errors import ConfigError, ModelMismatchError
from rag.models.sources import bundled_embedder_dir, resolve_embedder
from rag.models.tuning import Example, TrainSettings, fine_tune, read_record
from rag.tools import pairs as pairs_module
from rag.tools.pairs import Pair, _cut_query, split_held_out
from rag.tools.tune import tune
from tests.stores import copy_index

TINY = TrainSettings(minutes=0.2, epochs=1, batch_size=8, seed=0)
TINY_ARGS = ["--minutes", "0.2", "--epochs", "1", "--batch-size", "8", "--queries", "24"]


def _vectors(index: Index) -> dict[int, np.ndarray]:
    ids, vectors = index.store.vectors.arrays()
    return dict(zip(ids.tolist(), vectors, strict=True))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory, sample_index: Index) -> tuple[Index, dict, dict[int, np.ndarray]]:
    """A copy of the sample index tuned by a tiny real run, with its report and its vectors from before."""

    directory = tmp_path_factory.mktemp("tuned") / ".rag"
    copy_index(sample_index.store.directory, directory)
    index = Index.open(config=Config.load(index=directory, cache_dir=sample_index.config.cache_dir))
    before = _vectors(index)
    report = tune(index, settings=TINY, synthetic=24)
    yield index, report.as_dict(), before
    index.close()


def test_tiny_run_trains_saves_switches_and_reports(tuned) -> None:
    index, report, before = tuned
    folder = index.store.directory / report["model"]
    record = read_record(folder)
    assert report["model"] == "models/tuned-1" and (folder / "modules.json").is_file()
    assert record["base"]["name"] == "all-MiniLM-L6-v2" and record["report"]["steps"] >= 1
    assert report["training"]["epochs"] == record["report"]["epochs"] <= TINY.epochs  # passes made, not asked for
    assert report["source"] == "synthetic" and report["trained_on"] + report["held_out_queries"] <= report["pairs"]
    assert report["training"]["loss"] == "margin-mse"  # cut queries learn the teacher's margins
    assert any("not asked by people" in note for note in report["notes"])  # says how to check on real questions
    # The held-out queries are scored before and after, in every mode, and none of them was trained on.
    assert set(report["before"]) == set(report["after"]) == {"dense", "bm25", "hybrid"}
    assert report["before"]["bm25"] == pytest.approx(report["after"]["bm25"])  # BM25 does not see the embedder
    # Every chunk was re-embedded with the tuned model, and the index records it with the model it came from.
    meta = index.store.meta["embedder"]
    assert report["reembedded"] == index.counts()[1] == len(_vectors(index))
    assert meta["tuned"] == {"folder": "models/tuned-1", "base": record["base"]}
    assert meta["identity"] == resolve_embedder(str(folder)).identity
    after = _vectors(index)
    assert set(after) == set(before) and not np.allclose(after[min(after)], before[min(before)])
    assert index.store.meta["embedder_prev"]["name"] == "all-MiniLM-L6-v2"


def test_tuned_index_needs_no_new_setting_and_refuses_another_model(
    tuned, sample_index: Index, other_embedder_dir: Path
) -> None:
    index, _, _ = tuned
    # The default configuration (the base model) means the index's tuned model.
    with Index.open(config=Config.load(index=index.store.directory, cache_dir=sample_index.config.cache_dir)) as again:
        assert again.embedder.source.name == "models/tuned-1"
        assert again.search("top-p nucleus sampling", 3)
    other = Config.load(index=index.store.directory, embed_model=str(other_embedder_dir))
    with Index.open(config=other) as wrong, pytest.raises(ModelMismatchError, match="tuned-1"):
        wrong.search("top-p", 3)


def test_rollback_restores_the_kept_vectors_without_reembedding(tuned, monkeypatch: pytest.MonkeyPatch) -> None:
    index, _, before = tuned
    tuned_vectors = _vectors(index)
    embedded = []
    monkeypatch.setattr(Index, "_embedder_for", lambda self, record: embedded.append(record) or None)
    assert index.rollback_embedder() == "all-MiniLM-L6-v2"
    assert not embedded  # no chunk was added since the switch: nothing to embed
    restored = _vectors(index)
    assert set(restored) == set(before) and all(np.array_equal(restored[i], before[i]) for i in before)
    assert index.store.meta["embedder"]["identity"] == resolve_embedder("all-MiniLM-L6-v2").identity
    assert index.embedder.source.name == "all-MiniLM-L6-v2"
    # The tuned set is kept in turn: a second rollback goes forward again.
    assert index.rollback_embedder() == "models/tuned-1"
    forward = _vectors(index)
    assert all(np.array_equal(forward[i], tuned_vectors[i]) for i in tuned_vectors)


def test_map_compare_draws_both_models(tuned, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index, _, _ = tuned
    args = ["--index", str(index.store.directory), "map", "--compare", "--query", "what is top-p?"]
    assert main([*args, "--out", str(tmp_path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    before, after = shown["before"], shown["after"]
    assert before["embedder"] != after["embedder"] and before["shown_chunks"] == after["shown_chunks"] > 3
    assert [h["chunk_id"] for h in before["hits"]] == [h["chunk_id"] for h in after["hits"]]
    assert before["points"] != after["points"]
    assert (tmp_path / "map-pca-compare.png").stat().st_size > 10_000 and shown["width"] == 2 * shown["height"]


def test_drop_previous_ends_rollback(tuned, capsys: pytest.CaptureFixture[str]) -> None:
    index, _, _ = tuned
    directory = str(index.store.directory)
    assert main(["--index", directory, "tune", "--drop-previous", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dropped_vectors"] == index.counts()[1]
    index.store.refresh()
    assert main(["--index", directory, "tune", "--rollback"]) == 2  # a ConfigError, as every bad setting
    err = capsys.readouterr().err
    assert "keeps no previous embedding model" in err and len(err.strip().splitlines()) == 1


# Runs the real CLI; after the second committed batch of the re-embed it says so and waits to be killed.
KILLED_AFTER_TWO_BATCHES = textwrap.dedent(
    """
    import sys, time
    import rag.indexing
    from rag.storage import vector_sets
    rag.indexing.BATCH_CHUNKS = 8
    put, done = vector_sets.put, []
    def put_then_wait(store, ids, vectors):
        put(store, ids, vectors)
        done.append(len(ids))
        if len(done) == 2:
            print("committed", sum(done), flush=True)
            time.sleep(600)
    vector_sets.put = put_then_wait
    from rag.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_kill_during_reembed_resumes_where_it_stopped(tmp_path: Path, sample_index: Index) -> None:

    directory = tmp_path / ".rag"
    copy_index(sample_index.store.directory, directory)
    env = {**os.environ, "RAG_CACHE_DIR": str(sample_index.config.cache_dir)}
    args = ["--index", str(directory), "tune", *TINY_ARGS, "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_AFTER_TWO_BATCHES, *args], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("committed"), line
        committed = int(line.split()[1])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Index.open(config=Config.load(index=directory)) as index:
        # Killed mid-switch: searches still use the base model's vectors; the doctor says how to finish.
        assert "tuned" not in index.store.meta["embedder"] and "tuned" in index.store.meta["embedder_next"]
        assert index.search("top-p", 3)
        assert any(p.kind == "reembed-unfinished" and "rag tune" in p.detail for p in index.doctor())
        total = index.counts()[1]
    done = subprocess.run(
        [sys.executable, "-m", "rag.cli", *args, "--json"], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["resumed"] and report["reembedded"] == total - committed
    with Index.open(config=Config.load(index=directory)) as index:
        assert index.store.meta["embedder"]["tuned"]["folder"] == report["model"] == "models/tuned-1"
        assert "embedder_next" not in index.store.meta and not index.doctor()
        assert len(index.store.vectors) == total


def test_fine_tune_is_seeded(tmp_path: Path) -> None:
    base = resolve_embedder(str(bundled_embedder_dir()))
    examples = [
        Example("what keeps the most likely tokens", "Top-k sampling keeps the k most likely tokens.", ("Beams.",)),
        Example("how is text split into tokens", "A tokenizer splits text into subword tokens.", ("Attention.",)),
        Example("what does attention compute", "Attention weighs every token against the others.", ("Top-p.",)),
    ]
    untuned = (bundled_embedder_dir() / "model.safetensors").read_bytes()
    for precision in ("auto", "fp32"):  # auto is bf16 on a CPU with native bfloat16, else fp32
        settings = TrainSettings(minutes=1, epochs=1, batch_size=3, seed=7, precision=precision)
        for name in ("a", "b"):
            report = fine_tune(base, examples, tmp_path / precision / name, settings)
            assert report.steps == 1 and report.stopped_by == "epochs"
            assert report.precision == ("fp32" if precision == "fp32" else _native_precision())
        weights = [(tmp_path / precision / n / "model.safetensors").read_bytes() for n in ("a", "b")]
        assert weights[0] == weights[1] != untuned


def test_margin_loss_moves_the_margins_toward_the_teacher(tmp_path: Path) -> None:
    base = resolve_embedder(str(bundled_embedder_dir()))
    query, good, bad = "how does nucleus sampling pick tokens", "Top-p keeps the smallest likely set.", "Beams."
    # The teacher rates the "negative" far above the positive: training must move the model that way.
    examples = [Example(query, good, (bad,), teacher=(0.0, 1.0))] * 4
    settings = TrainSettings(minutes=1, epochs=8, batch_size=4, learning_rate=1e-4, warmup=0.0, seed=0)
    report = fine_tune(base, examples, tmp_path / "m", settings)
    assert report.loss == "margin-mse" and report.steps == 8

    def margin(location: str) -> float:
        from sentence_transformers import SentenceTransformer

        q, g, b = SentenceTransformer(location, device="cpu").encode([query, good, bad], normalize_embeddings=True)
        return float(q @ g - q @ b)

    assert margin(str(tmp_path / "m")) < margin(base.location) - 0.05
    # Without a teacher's scores the same examples train with InfoNCE.
    plain = [Example(query, good, (bad,))] * 4
    assert fine_tune(base, plain, tmp_path / "p", TrainSettings(minutes=1, epochs=1, batch_size=4)).loss == "infonce"


def test_teacher_scores_follow_shared_rare_words(sample_index: Index) -> None:
    from rag.tools.teacher import lexical_statistics, with_teacher

    lexical = lexical_statistics(sample_index)
    query = "nucleus sampling threshold"
    assert lexical.score(query, "Nucleus sampling keeps tokens up to a threshold.") > lexical.score(
        query, "The model samples the next word."
    )
    assert lexical.score("the of and", "the of and") == 0.0  # only function words: no evidence either way
    assert 0.0 < lexical.score(query, "nucleus sampling threshold") < 2.3  # normalised by the query's IDF
    pair = Pair(
        query,
        "Nucleus sampling keeps the smallest set of tokens whose probability reaches the threshold p.",
        frozenset({"#1"}),
        "g",
        ("Attention weighs each token against the others.", "A tokenizer splits text into pieces.", "Beams."),
    )
    (scored,) = with_teacher(sample_index, [pair, Pair("q", "p", frozenset(), "h")], seed=0, negatives=2)
    assert len(scored.negatives) == 2 and set(scored.negatives) <= set(pair.negatives)  # no negatives: dropped
    assert len(scored.teacher) == 3 and scored.teacher[0] > max(scored.teacher[1:])


def _native_precision() -> str:
    import torch

    return "bf16" if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported() else "fp32"


def test_budget_stops_training(tmp_path: Path) -> None:
    base = resolve_embedder(str(bundled_embedder_dir()))
    examples = [Example(f"question {i}", f"answer number {i} of many") for i in range(64)]
    started = time.monotonic()
    report = fine_tune(base, examples, tmp_path / "m", TrainSettings(minutes=0.05, epochs=50, batch_size=4))
    assert report.stopped_by == "budget" and report.steps < 50 * 16
    assert time.monotonic() - started < 60


def test_cut_queries_leave_the_rest_to_find() -> None:
    import random

    text = "Nucleus sampling keeps the smallest set of tokens. Its mass reaches p. Then it samples from that set only."
    query, rest = _cut_query(text, None, random.Random(0))
    assert query in text and query not in rest and len(rest.split()) >= 10
    assert _cut_query("Too short. Way.", None, random.Random(0)) is None
    title = "Decoding strategies for language models"
    query, rest = _cut_query(
        title + "\n\nGreedy decoding picks the most likely token at every step of the way.", title, random.Random(0)
    )
    assert query == title and rest.startswith("Greedy")


def test_held_out_queries_are_never_trained_on() -> None:
    found = [Pair(f"q{g}", f"p{g}-{n}", frozenset({f"#{g}"}), f"g{g}") for g in range(50) for n in range(3)]
    train, held = split_held_out(found, 0.1, 0, 200)
    assert {p.group for p in held} and not {p.group for p in train} & {p.group for p in held}
    assert len({p.group for p in held}) == 5 and len(train) + len(held) == len(found)
    assert split_held_out(found, 0.1, 0, 200) == (train, held)


def test_jsonl_pairs_point_at_indexed_chunks(tmp_path: Path, sample_index: Index) -> None:
    chunk = next(iter(sample_index.store.chunks(sample_index.store.chunk_ids()[:1]).values()))
    good = tmp_path / "pairs.jsonl"
    good.write_text(json.dumps({"query": "what is this about?", "positive": chunk.text}) + "\n")
    (pair,) = pairs_module.jsonl_pairs(good, sample_index)
    assert pair.targets == {f"#{chunk.chunk_id}"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: .*positive"):
        pairs_module.jsonl_pairs(bad, sample_index)
    absent = tmp_path / "absent.jsonl"
    absent.write_text(json.dumps({"query": "q", "positive": "zebra quokka narwhal platypus axolotl"}) + "\n")
    with pytest.raises(ConfigError, match="not in index"):
        pairs_module.jsonl_pairs(absent, sample_index)


def test_tune_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="precision='fp16'"):
        fine_tune(
            resolve_embedder(str(bundled_embedder_dir())),
            [Example("q", "p")],
            tmp_path / "m",
            TrainSettings(precision="fp16"),
        )
    assert main(["--index", str(tmp_path / "none"), "tune", "--pairs", str(tmp_path / "missing.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "missing.jsonl does not exist" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as usage:
        main(["--index", str(tmp_path / "none"), "tune", "--negatives", "-1"])
    assert usage.value.code == 2 and "--negatives: -1 is negative" in capsys.readouterr().err
