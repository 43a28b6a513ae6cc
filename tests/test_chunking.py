"""Chunks are sized in the embedder's own tokens and always point back at their text."""

from pathlib import Path

import pytest

from ingest.chunking import Chunker, ChunkerSettings
from ingest.loaders import LoadedDocument, Section, SkipFile, load
from ingest.walk import list_folder
from rag.config import BUNDLED_EMBEDDER
from rag.models.embedder import Embedder
from rag.models.sources import resolve_embedder

from .conftest import SAMPLE_DOCS, SHARED_EVAL


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(resolve_embedder(BUNDLED_EMBEDDER))  # tokenizer only: the model is never loaded here


@pytest.fixture(scope="module")
def chunker(embedder: Embedder) -> Chunker:
    return Chunker(ChunkerSettings(200, 40, embedder.max_tokens), embedder.tokenize)


def check_document(doc: LoadedDocument, chunker: Chunker, embedder: Embedder) -> int:
    chunks = chunker.split(doc)
    for i, c in enumerate(chunks):
        assert c.ordinal == i
        assert doc.text[c.start : c.end] == c.text
        # With [CLS]/[SEP], as the model will see it: never above max_seq_length, so never truncated.
        assert len(embedder.encode(c.text).ids) <= embedder.max_seq_length
        assert c.token_count == chunker.count(c.text)
    return len(chunks)


def test_model_limits_come_from_the_model_folder(embedder: Embedder) -> None:
    assert embedder.max_seq_length == 256
    assert embedder.max_tokens == 254


def test_sample_docs_chunks(chunker: Chunker, embedder: Embedder) -> None:
    total = 0
    for path in list_folder(SAMPLE_DOCS).files:
        if path.suffix == ".jsonl":
            continue
        total += check_document(load(path), chunker, embedder)
    assert total > 50


def test_headings_and_pages_reach_the_chunks(chunker: Chunker) -> None:
    md = chunker.split(load(SAMPLE_DOCS / "attention" / "self_attention.md"))
    assert all(c.heading for c in md[1:])
    pdf = chunker.split(load(SAMPLE_DOCS / "tokenization" / "subword_tokenization.pdf"))
    assert {c.page for c in pdf} == {1, 2, 3, 4}


def test_text_without_separators_is_cut_at_the_limit(chunker: Chunker, embedder: Embedder) -> None:
    # No separator the splitter knows, but a token per character (CJK) or per punctuation mark.
    text = "注意力机制" * 1000 + "x." * 5000
    doc = LoadedDocument(text, "text", sections=[Section(0, len(text))])
    assert check_document(doc, chunker, embedder) > 10


def test_chunk_size_above_model_limit_is_refused(embedder: Embedder) -> None:
    with pytest.raises(ValueError, match="exceeds the model limit"):
        Chunker(ChunkerSettings(300, 0, embedder.max_tokens), embedder.tokenize)


def test_docs_mixed_sample(chunker: Chunker, embedder: Embedder) -> None:
    folder = SHARED_EVAL / "docs-mixed"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    files = [p for p in list_folder(folder).files if p.stat().st_size < 1_500_000 and p.suffix != ".tsv"]
    sample = files[:: max(1, len(files) // 45)]
    checked = 0
    for path in sample:
        try:
            doc = load(path)
        except SkipFile:
            continue
        check_document(doc, chunker, embedder)
        checked += 1
    assert checked >= 30, f"only {checked} of {len(sample)} sampled files were loadable"


def test_loaders_and_chunking_do_not_import_models() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import ingest.loaders, ingest.chunking, ingest.pipeline;"
        "bad = [m for m in ('torch', 'transformers', 'sentence_transformers', 'faiss') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)
