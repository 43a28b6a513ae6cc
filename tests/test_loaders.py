from pathlib import Path

import pytest

from ingest.loaders import SkipFile, kind_of, load

from .conftest import SAMPLE_DOCS, SHARED_EVAL


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_markdown_sections_carry_heading_paths_and_ignore_code_fences(tmp_path: Path) -> None:
    md = (
        "Intro line.\n\n# Title\n\nText.\n\n## Part A\n\n```\n# not a heading\n```\n\n### Deep\n\nx\n\n## Part B\n\ny\n"
    )
    doc = load(write(tmp_path, "a.md", md))
    headings = [s.heading for s in doc.sections]
    assert headings == [None, "Title", "Title > Part A", "Title > Part A > Deep", "Title > Part B"]
    assert doc.title == "Title"
    for s in doc.sections:
        if s.heading:
            assert doc.text[s.start : s.end].lstrip("# ").startswith(s.heading.split(" > ")[-1])


def test_rst_titles_become_sections(tmp_path: Path) -> None:
    rst = "KV cache\n========\n\nIntro.\n\nPrefill\n-------\n\nFirst.\n\nDecode\n------\n\nSecond.\n"
    doc = load(write(tmp_path, "a.rst", rst))
    assert [s.heading for s in doc.sections] == ["KV cache", "KV cache > Prefill", "KV cache > Decode"]


def test_html_keeps_text_and_headings_drops_scripts(tmp_path: Path) -> None:
    html = (
        "<html><head><title>Doc title</title><style>p{color:red}</style></head><body>"
        "<script>var secret = 1;</script><h1>Top</h1><p>Hello <b>bold</b> world.</p>"
        "<h2>Sub</h2><ul><li>one</li><li>two</li></ul><!-- a comment --></body></html>"
    )
    doc = load(write(tmp_path, "a.html", html))
    assert doc.title == "Doc title"
    assert "Hello bold world." in doc.text
    assert "secret" not in doc.text and "color" not in doc.text and "comment" not in doc.text
    assert [s.heading for s in doc.sections] == ["Top", "Top > Sub"]
    assert doc.text[doc.sections[1].start :].startswith("Sub")


def test_pdf_pages_are_kept() -> None:
    doc = load(SAMPLE_DOCS / "tokenization" / "subword_tokenization.pdf")
    assert doc.kind == "pdf"
    assert [s.page for s in doc.sections] == [1, 2, 3, 4]
    assert "WordPiece" in doc.text[doc.sections[1].start : doc.sections[1].end]


def test_cp1252_sample_file_decodes() -> None:
    doc = load(SAMPLE_DOCS / "small_models" / "quantization_notes.txt")
    assert doc.encoding and "1252" in doc.encoding
    assert "Gerganov" in doc.text and "\ufffd" not in doc.text


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.txt", b"", "empty"),
        ("blank.md", b"  \n\t\n", "empty"),
        ("bin.txt", b"\x00\x01\x02\x03" * 100, "binary"),
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "pdf-broken"),
        ("data.xyz", b"hello", "unsupported"),
    ],
)
def test_bad_files_are_skipped_with_a_reason(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    with pytest.raises(SkipFile) as err:
        load(write(tmp_path, name, content))
    assert err.value.reason == reason


def test_kinds_by_extension() -> None:
    assert kind_of(Path("a.MD")) == "markdown"
    assert kind_of(Path("a.htm")) == "html"
    assert kind_of(Path("a.py")) == "code"
    assert kind_of(Path("a.png")) == "image"
    assert kind_of(Path("a.jsonl")) is None


def test_copy_protected_pdf_with_empty_password_is_read() -> None:
    path = SHARED_EVAL / "docs-mixed" / "unstructured-example-docs" / "pdf" / "copy-protected.pdf"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    doc = load(path)  # AES-encrypted: needs pypdf's crypto extra
    assert [s.page for s in doc.sections] == [1, 2] and "LayoutParser" in doc.text
