"""`rag explain` and `rag map`: tokens, retrieval stages, attention shares, decoding, PNG files, on the real models."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from rag import Index
from rag.tools.embedding_map import embedding_map
from rag.tools.explain import COMPARED, Explanation, compare, embedder_tokens, explain, generator_tokens
from rag.tools.plots import context_heatmap, map_png, source_heatmap

from .test_cli import run

QUESTION = "Who started the llama.cpp project?"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def explained(sample_index: Index) -> Explanation:
    # Free generation: its greedy steps can be checked against transformers' own greedy generate.
    return explain(sample_index, QUESTION, max_new_tokens=8, first_steps=3, answer_mode="generate")


def test_question_tokens_round_trip(sample_index: Index) -> None:
    question = "Who introduced nucleus (top-p) sampling?"
    emb = embedder_tokens(sample_index, question)
    assert emb.tokens[0] == "[CLS]" and emb.tokens[-1] == "[SEP]"
    # Each WordPiece is the (lower-cased, uncased model) text at its offsets; together they cover every character
    # that is not a space.
    pieces = [(t, s, e) for t, (s, e), special in zip(emb.tokens, emb.offsets, emb.special, strict=True) if not special]
    assert all(t.removeprefix("##") == question[s:e].lower() for t, s, e in pieces)
    assert "".join(question[s:e] for _, s, e in pieces) == question.replace(" ", "")
    gen = generator_tokens(sample_index.generator, question)
    assert sample_index.generator.tokenizer.decode(gen.ids) == question
    assert "".join(question[s:e] for s, e in gen.offsets).replace(" ", "") == question.replace(" ", "")


def test_attention_shares_sum_to_one(explained: Explanation) -> None:
    a = explained.attention
    assert a is not None and len(a.answer_tokens) == len(explained.answer_ids) > 0
    n_sources = len(explained.prompt.sources)
    for row, src, other, answer in zip(a.shares, a.source_mass, a.other_prompt, a.answer_so_far, strict=True):
        assert len(row) == n_sources
        assert sum(row) == pytest.approx(1.0, abs=1e-5)
        # Sources, the rest of the prompt and the answer so far are everything a softmax row covers.
        assert src + other + answer == pytest.approx(1.0, abs=1e-4)
    assert sum(a.answer_share) == pytest.approx(1.0, abs=1e-5)
    assert len(a.layer_answer_share) == a.layers == 30
    assert all(sum(layer) == pytest.approx(1.0, abs=1e-5) for layer in a.layer_answer_share)
    assert all(sum(row) == pytest.approx(1.0, abs=1e-5) for row in a.layer_shares(a.layers - 1))


def test_prompt_source_blocks_and_token_counts(explained: Explanation, sample_index: Index) -> None:
    p = explained.prompt
    for n, ((start, end), label) in enumerate(zip(p.source_spans, p.sources, strict=True), start=1):
        assert p.text[start:end].startswith(f"[{n}] {label}\n")
    assert sum(p.source_tokens) + p.other_tokens == p.tokens
    assert p.tokens == len(generator_tokens(sample_index.generator, p.text).ids)


def test_retrieval_stages_agree_with_search(explained: Explanation, sample_index: Index) -> None:
    config = sample_index.config
    hits = sample_index.search(QUESTION, config.sources_k, min_score=config.min_score)
    retrieved = sorted((c for c in explained.candidates if c.rank is not None), key=lambda c: c.rank)
    assert [c.chunk_id for c in retrieved] == [h.chunk_id for h in hits]
    assert [c.fused_score for c in retrieved] == pytest.approx([h.score for h in hits])  # hybrid: the fused score
    assert explained.retrieval["mode"] == config.retrieval == "hybrid"
    # Both retrievers' scores are shown, and every candidate came from at least one of them.
    assert any(c.bm25_score is not None for c in explained.candidates)
    assert all(c.dense_rank is not None or c.bm25_rank is not None for c in explained.candidates)
    for c in explained.candidates:
        if c.kept:
            assert c.reason == f"in the prompt as [{c.source}]" and c.prompt_tokens
        elif c.rank is None:
            assert c.reason.startswith(("beyond k=", "below min_score", "left out by MMR"))
    assert explained.prompt.sources[0].startswith("quantization_notes.txt")


def test_decoding_steps_and_comparison(explained: Explanation, sample_index: Index) -> None:
    assert [s.position for s in explained.steps] == [1, 2, 3]
    for step in explained.steps:
        ps = [c["p"] for c in step.candidates]
        assert ps == sorted(ps, reverse=True) and 0 < ps[0] <= 1
        assert step.chosen == step.candidates[0]["token"]  # greedy takes the most likely token
    answers = compare(sample_index.generator, explained.prompt.messages, 2)
    assert set(answers) == set(COMPARED) and all(isinstance(t, str) for t in answers.values())
    # transformers' own greedy generate (fused attention) says what the eager token-by-token decode said.
    assert explained.answer.startswith(answers["greedy"])


@pytest.mark.parametrize("mode", ["quote", "auto", "generate", "extract"])
def test_explain_gives_the_answer_rag_ask_gives(sample_index: Index, mode: str) -> None:
    # The same context budget as ask's default 128 new tokens, so both pack the same prompt.
    e = explain(sample_index, QUESTION, max_new_tokens=128, first_steps=2, answer_mode=mode)
    asked = sample_index.ask(QUESTION, answer_mode=mode)
    assert e.answer == asked.text and e.answer
    assert e.answer_mode == asked.answer_mode and e.cited == asked.cited
    if mode == "extract":  # nothing was generated: nothing attended to
        assert e.attention is None and e.answer_ids == [] and not e.replaced
        return
    # Attention covers exactly the tokens of the run that wrote the answer (for a quote: those kept by the cut),
    # or, when the closest sentence replaced that answer, of the model's own answer, which is named.
    assert len(e.attention.answer_tokens) == len(e.answer_ids) > 0
    assert sum(e.attention.answer_share) == pytest.approx(1.0, abs=1e-5)
    assert bool(e.replaced) == (asked.answer_mode != {"auto": "generate"}.get(mode, mode))
    if asked.answer_mode == "quote":
        assert len(e.answer_ids) <= 16 and all(e.answer in asked.sources[n - 1].text for n in e.cited)


def test_heatmaps_are_pngs_of_the_stated_size(explained: Explanation, tmp_path: Path) -> None:
    a = explained.attention
    size = source_heatmap(a, explained.prompt.sources, tmp_path / "s.png")
    assert png_size(tmp_path / "s.png") == size
    assert size[1] == 170 + 16 * len(a.answer_tokens)  # one row per answer token
    size = context_heatmap(a, 1, a.context_tokens[0], explained.prompt.sources[0], tmp_path / "c.png", layer=3)
    assert png_size(tmp_path / "c.png") == size
    assert a.context(1).shape == (len(a.answer_tokens), explained.prompt.source_tokens[0])


def test_map_pca_with_query_and_sampled_tsne(sample_index: Index, tmp_path: Path) -> None:
    emap = embedding_map(sample_index, query=QUESTION, k=3)
    assert not emap.sampled and len(emap.chunk_ids) == emap.total_chunks == sample_index.store.counts()[1]
    assert [h["rank"] for h in emap.hits] == [1, 2, 3] and emap.query_point is not None
    assert 0 < sum(emap.explained_variance) < 1
    size = map_png(emap, tmp_path / "m.png", width=640, height=480)
    assert size == (640, 480) == png_size(tmp_path / "m.png")

    small = embedding_map(sample_index, query=QUESTION, k=3, method="tsne", max_points=25, perplexity=50, seed=1)
    assert small.sampled and len(small.chunk_ids) == 25
    assert {h["chunk_id"] for h in small.hits} <= set(small.chunk_ids)  # the hits survive sampling
    assert small.perplexity == pytest.approx(25 / 3)  # lowered to fit 26 points, and recorded
    assert small.points.shape == (25, 2)


def test_cli_explain_and_map_json_offline(sample_index: Index, tmp_path: Path) -> None:
    index = str(sample_index.store.directory)
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = run(
        "explain", QUESTION, "--max-new-tokens", "16", "--out", str(tmp_path / "ex"), "--json", "--index", index,
        env=offline,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    settings = data["retrieval"]
    same = ["-k", str(settings["k"]), "--min-score", str(settings["min_score"])]
    search = json.loads(run("search", QUESTION, *same, "--json", "--index", index, env=offline).stdout)
    retrieved = sorted((c for c in data["candidates"] if c["rank"]), key=lambda c: c["rank"])
    assert [c["chunk_id"] for c in retrieved] == [h["chunk_id"] for h in search["hits"]]
    assert {"attention-sources.png", "explain.json", "prompt.txt"} <= {Path(f).name for f in data["files"]}
    assert png_size(tmp_path / "ex" / "attention-sources.png")[1] == 170 + 16 * len(data["attention"]["answer_tokens"])

    result = run("map", "--query", QUESTION, "--out", str(tmp_path), "--json", "--index", index, env=offline)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert png_size(tmp_path / "map-pca.png") == (data["width"], data["height"])
    assert len(data["points"]) == data["total_chunks"]

    bad = run("map", "--method", "umap", "--index", index)
    assert bad.returncode == 2 and "umap" in bad.stderr
