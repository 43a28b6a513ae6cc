"""The fast paths give the same results as the reference ones: the lean decoder, ONNX queries, the IVF index.

No timings here: speed is measured by `python -m bench` (bench/RESULTS.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag import Decoding, Index
from rag.models import lean, llamacpp
from rag.models.generator import Generator
from rag.models.sources import resolve_generator
from rag.storage.store import Store

from .conftest import ROOT

QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]


def _text(gen: Generator, decoding: Decoding, messages: list[dict[str, str]] = QUESTION, **kw) -> tuple[str, int]:
    stream = gen.stream(messages, decoding, **kw)
    pieces = []
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as stop:
            return "".join(pieces), stop.value.new_tokens


@pytest.fixture(scope="module")
def backends(sample_index: Index) -> dict[str, Generator]:
    source, cache = sample_index.generator.source, sample_index.generator.cache_dir
    _ = sample_index.generator.model  # the session's conversion, so the others load from the cache
    return {
        "transformers": Generator(source, cache, backend="transformers"),
        "lean-fp32": Generator(source, cache, backend="lean", precision="fp32"),
    }


def test_lean_decoder_reproduces_transformers_greedy(backends: dict[str, Generator]) -> None:
    decoding = Decoding(max_new_tokens=12)
    reference = _text(backends["transformers"], decoding)
    assert backends["lean-fp32"].backend_used == "lean-fp32"
    assert _text(backends["lean-fp32"], decoding) == reference
    # Twice: the second answer reuses the cached prompt prefix and must not change.
    assert _text(backends["lean-fp32"], decoding) == reference
    # Another prompt sharing only the template's start: the reused prefix is shorter, the rest recomputed.
    other = [{"role": "user", "content": "Name two planets."}]
    assert _text(backends["lean-fp32"], decoding, other) == _text(backends["transformers"], decoding, other)


class _Ban:
    """Forbids one token, as issue 7's grounded decoding will forbid tokens outside the sources."""

    def __init__(self, token: int) -> None:
        self.token = token

    def __call__(self, input_ids, scores):  # type: ignore[no-untyped-def]
        scores[:, self.token] = float("-inf")
        return scores


def _always(input_ids, scores, **kw) -> bool:  # type: ignore[no-untyped-def]
    return True


def test_logits_processors_and_stopping_criteria_apply_on_both_backends(backends: dict[str, Generator]) -> None:
    gen = backends["transformers"]
    plain, _ = _text(gen, Decoding(max_new_tokens=6))
    first = gen._encode(gen.render(QUESTION) + plain)[len(gen._encode(gen.render(QUESTION)))]
    for name, backend in backends.items():
        banned, _ = _text(backend, Decoding(max_new_tokens=6), logits_processor=[_Ban(first)])
        assert banned != plain, name
        _, n = _text(backend, Decoding(max_new_tokens=6), stopping_criteria=[_always])
        assert n == 1, name


@pytest.mark.skipif(not llamacpp.installed(), reason="optional: pip install -e '.[llamacpp]'")
def test_llamacpp_backend_decodes_through_the_same_loop(backends: dict[str, Generator], sample_index: Index) -> None:
    gen = Generator(sample_index.generator.source, sample_index.generator.cache_dir, backend="llamacpp")
    assert gen.backend_used == "llamacpp"
    decoding = Decoding(max_new_tokens=12)
    text, n = _text(gen, decoding)
    assert text and 0 < n <= 12
    # The same prompt again reuses llama.cpp's cached prefix and must give the same greedy answer.
    assert _text(gen, decoding) == (text, n)
    # Processors and stopping criteria go through the shared loop: a banned first token changes the answer.
    first = gen._encode(gen.render(QUESTION) + text)[len(gen._encode(gen.render(QUESTION)))]
    assert _text(gen, decoding, logits_processor=[_Ban(first)])[0] != text
    assert _text(gen, decoding, stopping_criteria=[_always])[1] == 1


def test_llamacpp_backend_missing_is_a_clear_error(sample_index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    from rag import ConfigError

    monkeypatch.setattr(llamacpp, "installed", lambda: False)
    gen = Generator(sample_index.generator.source, sample_index.generator.cache_dir, backend="llamacpp")
    with pytest.raises(ConfigError, match=r"llama-cpp-python is not installed.*\[llamacpp\]"):
        _ = gen.backend_used


def test_lean_sampling_is_seeded(backends: dict[str, Generator]) -> None:
    gen = backends["lean-fp32"]
    decoding = Decoding(max_new_tokens=8, temperature=0.8, top_k=20, top_p=0.9, seed=7)
    assert _text(gen, decoding) == _text(gen, decoding)


def test_onnx_query_vectors_match_sentence_transformers(sample_index: Index) -> None:
    embedder = sample_index.embedder
    assert embedder.query_runtime == "onnx"  # exported while building the session's index
    queries = ["Who introduced nucleus sampling?", "kv cache", "Wie viele Dimensionen hat MiniLM?"]
    onnx = np.stack([embedder.embed_query(q) for q in queries])
    torch_vectors = embedder.model.encode(queries, normalize_embeddings=True, convert_to_numpy=True)
    assert float((onnx * torch_vectors).sum(1).min()) >= 1 - 1e-4


def _heavy_modules_after(code: str) -> tuple[list[str], str]:
    """Run ``code`` in a fresh interpreter; which of torch, transformers, sentence-transformers it imported, and
    its stdout."""
    probe = (
        "; import json, sys; "
        "print(json.dumps([m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]), "
        "file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code + probe], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stderr.strip().splitlines()[-1]), out.stdout


def test_search_process_never_imports_torch(sample_index: Index) -> None:
    index = str(sample_index.store.directory)
    heavy, stdout = _heavy_modules_after(
        f"from rag.cli import main; assert main(['--index', {index!r}, 'search', 'top-p', '--json']) == 0"
    )
    assert heavy == []
    assert '"hits"' in stdout


def test_large_index_switches_to_ivf_on_rebuild_and_keeps_removals(tmp_path) -> None:
    from ingest.records import Chunk, DocumentInfo

    rng = np.random.default_rng(0)
    store = Store.open(tmp_path / "idx", create=True)
    store.set_meta({"embedder": {"dim": 8}})
    store.ann_min_vectors = 400
    vectors = rng.standard_normal((500, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with store.transaction() as tx:
        for d in range(5):
            chunks = [Chunk(i, f"doc {d} chunk {i}", 0, 1, 1) for i in range(100)]
            tx.put_document(DocumentInfo(f"/d{d}", "h", 1, 0.0, "text"), chunks, vectors[d * 100 : (d + 1) * 100])
    assert store.vectors.kind == "flat"
    store.save_vectors()
    assert store.vectors.kind == "ivf" and store.meta["vectors"]["kind"] == "ivf"
    assert store.meta["vectors"]["nprobe"] >= 1
    reopened = Store.open(tmp_path / "idx")
    assert reopened.vectors.kind == "ivf" and sorted(reopened.vectors.ids().tolist()) == reopened.chunk_ids()
    with reopened.transaction() as tx:
        tx.remove_document("/d0")
    assert sorted(reopened.vectors.ids().tolist()) == reopened.chunk_ids()
    # Every stored vector finds itself first.
    top = [reopened.vectors.search(v, 1)[0][0] for v in vectors[100:110]]
    assert top == reopened.chunk_ids()[:10]
    reopened.close()
    store.close()


def test_bench_smoke_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "retrieval"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "| 3000 | ivf |" in out.stdout


def test_lean_logits_of_a_few_tokens_equal_the_full_ones(backends: dict[str, Generator]) -> None:
    import torch

    gen = backends["lean-fp32"]
    ids = gen._encode(gen.render(QUESTION))
    full = gen.session.prefill(ids, len(ids) + 4)
    few = [5, 17, int(full.argmax())]
    some = gen.session.prefill(ids, len(ids) + 4, only=few)
    assert torch.allclose(some[few], full[few], atol=1e-4)
    assert torch.isinf(some).sum() == len(full) - len(few)


@pytest.mark.parametrize("precision", ["int8", "mixed", "bf16"])
def test_lower_precisions_stay_close_to_fp32_and_keep_their_own_weights(
    backends: dict[str, Generator], precision: str
) -> None:
    import torch

    reference = backends["lean-fp32"]
    ids = reference._encode(reference.render(QUESTION))
    full = reference.session.prefill(ids, len(ids) + 4)
    gen = Generator(reference.source, reference.cache_dir, backend="lean", precision=precision)
    got = gen.session.prefill(ids, len(ids) + 4)
    assert gen.backend_used == f"lean-{precision}"
    assert int(got.argmax()) == int(full.argmax())
    assert float(torch.nn.functional.cosine_similarity(got, full, dim=0)) > 0.99
    # Kept as the decoder uses them (nothing to convert in a later process), beside the fp32 file.
    path = gen.lean_path()
    assert path is not None and path != reference.lean_path()
    _, kept = lean.load(path)
    assert kept["0.qkv"].dtype == (torch.bfloat16 if precision == "bf16" else torch.int8)
    assert (kept["0.down"].dtype == torch.float32) == (precision == "mixed")
    later = Generator(reference.source, reference.cache_dir, backend="lean", precision=precision)
    again = later.session.prefill(ids, len(ids) + 4)
    # The same weights, laid out as the file maps them: fp32 sums may run in another order (a few 1e-6 apart).
    assert int(again.argmax()) == int(got.argmax())
    assert torch.allclose(again, got, rtol=0, atol=1e-4), float((again - got).abs().max())
    assert "model" not in later.__dict__


def test_auto_precision_is_the_bundled_tier_s_own(sample_index: Index) -> None:
    source, cache = sample_index.generator.source, sample_index.generator.cache_dir
    assert Generator(source, cache).precision == "fp32"  # the fast tier's
    large = Generator(resolve_generator("qwen2.5-coder-1.5b-instruct", cache, assemble=False), cache)
    assert large.precision == "int8"
    assert Generator(source, cache, precision="mixed").precision == "mixed"


def test_lean_weights_are_kept_so_a_later_process_skips_the_transformers_model(backends: dict[str, Generator]) -> None:
    first = backends["lean-fp32"]
    _ = first.session
    path = first.lean_path()
    assert path is not None and path.is_file()
    later = Generator(first.source, first.cache_dir, backend="lean", precision="fp32")
    decoding = Decoding(max_new_tokens=12)
    assert _text(later, decoding) == _text(backends["transformers"], decoding)
    assert "model" not in later.__dict__  # config, tokenizer and the fused weights came from the cache


def test_sentence_vectors_through_onnx_match_sentence_transformers(sample_index: Index) -> None:
    embedder = sample_index.embedder
    _ = embedder.model  # exports the ONNX graph once
    texts = ["A short one.", "Top-p sampling keeps the smallest set of tokens whose probability reaches p." * 3, "x"]
    onnx = embedder.embed_sentences(texts)
    reference = embedder.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert embedder.query_runtime == "onnx"
    assert float((onnx * reference).sum(1).min()) > 1 - 1e-4


def test_document_vectors_through_onnx_match_sentence_transformers(sample_index: Index) -> None:
    embedder = sample_index.embedder
    assert embedder.document_runtime == "onnx"
    chunks = sample_index.store.document_chunks(sample_index.store.documents()[0].path)
    texts = [c.text for c in chunks] + ["x", "Beam search keeps the best partial sequences. " * 40]
    onnx = embedder.embed_documents(texts)
    reference = embedder.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert onnx.shape == reference.shape and onnx.dtype == np.float32
    assert float((onnx * reference).sum(1).min()) > 1 - 1e-4


def test_ingest_with_the_export_cached_never_imports_torch(sample_index: Index, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "note.md").write_text("# Tides\nThe harbour floods twice a day at spring tide.\n")
    code = (
        "from rag import Config, Index; "
        f"index = Index.open(config=Config.load(index={str(tmp_path / 'idx')!r}), create=True); "
        f"report = index.ingest({str(folder)!r}); "
        "print(report.added, index.embedder.document_runtime)"
    )
    heavy, stdout = _heavy_modules_after(code)
    assert heavy == []
    assert stdout.split() == ["1", "onnx"]
