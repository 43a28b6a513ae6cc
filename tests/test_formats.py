"""Every supported format, written by the library that writes it, ingested with the real models, and a known fact
found by search and ask in each, cited at the right page, slide, sheet rows, chapter or heading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ingest.loaders import SkipFile, load
from ingest.ocr import Ocr
from rag import Config, Index

from .formats import ATTACHMENT, SAMPLES, Sample, write_all, write_eml
from .test_cli import run

HAVE_TESSERACT = shutil.which("tesseract") is not None
needs_ocr = pytest.mark.skipif(not HAVE_TESSERACT, reason="Tesseract is not installed (`make setup` installs it)")


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory, sample_index: Index) -> tuple[Index, Path, object]:
    folder = tmp_path_factory.mktemp("formats")
    write_all(folder, ocr=HAVE_TESSERACT)
    index = Index.open(config=Config.load(index=folder.parent / f"{folder.name}-index"), create=True)
    index.embedder = sample_index.embedder
    report = index.ingest(folder)
    yield index, folder, report
    index.close()


def test_every_format_is_indexed(formats) -> None:
    index, _folder, report = formats
    assert report.skipped == [], report.skipped
    kinds = set(index.status()["by_type"])
    assert {"docx", "pptx", "spreadsheet", "odt", "epub", "email", "notebook", "rtf", "latex", "pdf"} <= kinds
    if HAVE_TESSERACT:
        assert "image" in kinds
        assert report.ocr_pages == 3 and report.ocr_seconds > 0  # two scanned pages and one picture


def test_chunks_reproduce_their_text_and_fit_the_model(formats) -> None:
    index, folder, _ = formats
    limit = index.store.meta["chunker"]["max_tokens"]
    for sample in {s.name: s for s in SAMPLES}.values():
        if sample.ocr and not HAVE_TESSERACT:
            continue
        doc = load(folder / sample.name, ocr=Ocr())
        chunks = index.store.document_chunks(str(folder / sample.name))
        assert chunks, sample.name
        for c in chunks:
            assert doc.text[c.start : c.end] == c.text and c.token_count <= limit, (sample.name, c)


def _check_hit(hits, folder: Path, sample: Sample) -> None:
    top = next((h for h in hits if sample.answer in h.text), None)
    assert top is not None, f"{sample.name}: {sample.answer!r} not in {[h.path for h in hits]}"
    assert top.path == str(folder / sample.name)
    assert sample.location in top.location(), (sample.name, top.location())


@pytest.mark.parametrize("sample", SAMPLES, ids=[f"{s.name}-{s.answer}" for s in SAMPLES])
def test_fact_is_found_and_cited(formats, sample: Sample) -> None:
    index, folder, _ = formats
    if sample.ocr and not HAVE_TESSERACT:
        pytest.skip("Tesseract is not installed")
    _check_hit(index.search(sample.question, k=3), folder, sample)
    answer = index.ask(sample.question, answer_mode="extract")
    assert sample.answer in answer.text, (sample.name, answer.text)
    assert answer.sources[answer.cited[0] - 1].path == str(folder / sample.name)


def test_an_emails_attachment_is_a_source_of_its_own(formats) -> None:
    index, folder, _ = formats
    path, question, fact = ATTACHMENT
    hits = index.search(question, k=3)
    assert hits[0].path == str(folder / path) and fact in hits[0].text
    assert hits[0].kind == "docx"


def test_attachments_live_and_go_with_their_message(sample_index: Index, tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    write_eml(folder / "audit.eml")
    index = Index.open(config=Config.load(index=tmp_path / "idx"), create=True)
    index.embedder = sample_index.embedder
    assert index.ingest(folder).added == 2  # the message and its attachment
    again = index.ingest(folder)
    assert (again.unchanged, again.removed) == (1, 0)
    assert index.store.document(str(folder / "audit.eml/minutes.docx")) is not None
    (folder / "audit.eml").unlink()
    assert index.ingest(folder).removed == 2
    assert index.counts() == (0, 0)


def test_cli_search_and_ask_cite_table_and_sheet(formats) -> None:
    index, _folder, _ = formats
    by_name = {s.name: s for s in SAMPLES}
    sample = by_name["stations.pdf"]
    result = run("--index", str(index.store.directory), "search", "--json", "-k", "3", sample.question)
    assert result.returncode == 0, result.stderr
    hit = next(h for h in json.loads(result.stdout)["hits"] if sample.answer in h["text"])
    assert (Path(hit["path"]).name, hit["page"]) == ("stations.pdf", 1)
    assert hit["heading"].startswith("table 1, rows")
    sample = by_name["budget.xlsx"]
    result = run("--index", str(index.store.directory), "ask", "--json", "--answer-mode", "extract", sample.question)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert sample.answer in answer["text"]
    assert "sheet Budget, rows" in answer["sources"][answer["cited"][0] - 1]["heading"]


@needs_ocr
def test_ocr_text_is_cached_by_page_image(formats, sample_index: Index, tmp_path: Path) -> None:
    index, folder, _ = formats
    scan = folder / "archive-scan.pdf"
    other = tmp_path / "scans"
    other.mkdir()
    # Other bytes (a trailing comment, which PDF readers ignore), the same pages: no page is read again.
    (other / "edited-scan.pdf").write_bytes(scan.read_bytes() + b"\n% edited\n")
    second = Index.open(config=Config.load(index=index.store.directory), create=False)
    second.embedder = sample_index.embedder
    try:
        report = second.ingest(other, delete=False)
    finally:
        second.close()
    assert (report.added, report.ocr_pages, report.ocr_cached) == (1, 0, 2)


def test_without_tesseract_scans_are_skipped_with_the_fix(
    sample_index: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "docs"
    write_all(folder, ocr=True)
    for sample in SAMPLES:
        if not sample.ocr:
            (folder / sample.name).unlink(missing_ok=True)
    (folder / "note.md").write_text("# Note\nA text file is indexed all the same.\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no tesseract on the PATH
    index = Index.open(config=Config.load(index=tmp_path / "idx"), create=True)
    index.embedder = sample_index.embedder
    report = index.ingest(folder)
    assert report.added == 1
    assert {s.reason for s in report.skipped} == {"ocr-unavailable"}
    assert all("apt-get install tesseract-ocr" in s.detail for s in report.skipped)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("broken.docx", b"PK\x03\x04 not really a zip", "docx-broken"),
        ("broken.pptx", b"not a deck", "pptx-broken"),
        ("broken.xlsx", b"not a workbook", "spreadsheet-broken"),
        ("broken.xls", b"\xd0\xcf\x11\xe0 truncated", "spreadsheet-broken"),
        ("broken.ods", b"PK nothing", "spreadsheet-broken"),
        ("broken.odt", b"PK nothing", "odt-broken"),
        ("broken.epub", b"PK nothing", "epub-broken"),
        ("broken.ipynb", b'{"cells": [', "notebook-broken"),
        ("broken.rtf", b"plain words, no rtf header", "rtf-broken"),
        ("broken.mbox", b"no separator line here", "mbox-broken"),
        ("broken.png", b"\x89PNG\r\n\x1a\n truncated", "image-broken"),
    ],
)
def test_a_broken_file_is_skipped_with_a_reason(name: str, data: bytes, reason: str) -> None:
    if name.endswith(".png") and not HAVE_TESSERACT:
        pytest.skip("Tesseract is not installed")
    with pytest.raises(SkipFile) as e:
        load(Path(name), data, ocr=Ocr())
    assert e.value.reason == reason


def test_a_document_that_breaks_keeps_what_was_indexed(sample_index: Index, tmp_path: Path) -> None:
    from .formats import write_docx, write_xlsx

    folder = tmp_path / "docs"
    folder.mkdir()
    write_docx(folder / "notes.docx")
    write_xlsx(folder / "budget.xlsx")
    index = Index.open(config=Config.load(index=tmp_path / "idx"), create=True)
    index.embedder = sample_index.embedder
    index.ingest(folder)
    before = index.counts()
    (folder / "notes.docx").write_bytes(b"PK\x03\x04 a truncated download")
    report = index.ingest(folder)
    assert [(Path(s.path).name, s.reason) for s in report.skipped] == [("notes.docx", "docx-broken")]
    assert index.counts() == before
    assert "Varnholm" in index.search("Varnholm lighthouse lamp", k=1, retrieval="bm25")[0].text
