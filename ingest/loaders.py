"""Read one file into plain text plus sections (heading path, PDF page) with character offsets.

Every loader returns text in which each section is ``text[section.start:section.end]``; chunk spans are offsets
into the same text, so a chunk can always be found again in its extracted document.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.encoding import NotText, decode, looks_binary
from ingest.records import SkipFile
from ingest.walk import read

# Files larger than this are skipped rather than read whole into memory.
MAX_FILE_BYTES = 64 * 1024 * 1024
# Extracted text is capped too: a small compressed PDF can inflate to hundreds of megabytes of text.
MAX_TEXT_CHARS = MAX_FILE_BYTES

MARKDOWN = {".md", ".markdown", ".mdx"}
RST = {".rst"}
HTML = {".html", ".htm", ".xhtml"}
PDF = {".pdf"}
TEXT = {".txt", ".text"}
# Extension -> language name understood by langchain's code splitters (None: generic separators).
CODE: dict[str, str | None] = {
    ".py": "python",
    ".pyi": "python",
    ".js": "js",
    ".mjs": "js",
    ".jsx": "js",
    ".ts": "ts",
    ".tsx": "ts",
    ".java": "java",
    ".kt": "kotlin",
    ".scala": "scala",
    ".go": "go",
    ".rs": "rust",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".cs": "csharp",
    ".rb": "ruby",
    ".php": "php",
    ".swift": "swift",
    ".lua": "lua",
    ".pl": "perl",
    ".hs": "haskell",
    ".ex": "elixir",
    ".exs": "elixir",
    ".r": "r",
    ".sol": "sol",
    ".proto": "proto",
    ".tex": "latex",
    ".sh": None,
    ".bash": None,
    ".sql": None,
    ".css": None,
    ".toml": None,
    ".yaml": None,
    ".yml": None,
    ".ini": None,
    ".cfg": None,
}


@dataclass(frozen=True)
class Section:
    """A stretch of the document's text under one heading path (and, for PDFs, on one page)."""

    start: int
    end: int
    heading: str | None = None
    page: int | None = None


@dataclass
class LoadedDocument:
    text: str
    kind: str  # text | markdown | rst | html | pdf | code
    title: str | None = None
    encoding: str | None = None
    language: str | None = None  # for code: a langchain Language value
    sections: list[Section] = field(default_factory=list)


def kind_of(path: Path) -> str | None:
    """The loader kind for ``path`` by extension, or None when unsupported."""
    ext = path.suffix.lower()
    for kind, exts in (("markdown", MARKDOWN), ("rst", RST), ("html", HTML), ("pdf", PDF), ("text", TEXT)):
        if ext in exts:
            return kind
    return "code" if ext in CODE else None


def load(path: Path, data: bytes | None = None) -> LoadedDocument:
    """Read ``path`` (or parse ``data``, its bytes, when the caller already has them).

    Raises :class:`SkipFile` with a reason for anything that cannot be indexed.
    """
    kind = kind_of(path)
    if kind is None:
        raise SkipFile("unsupported", f"no loader for {path.suffix or 'files without extension'}")
    if data is None:
        data = read(path, MAX_FILE_BYTES)
    if len(data) > MAX_FILE_BYTES:
        raise SkipFile("too-large", f"{len(data)} bytes > {MAX_FILE_BYTES}")
    if not data:
        raise SkipFile("empty")

    if kind == "pdf":
        doc = _load_pdf(data)
    else:
        if looks_binary(data[:8192]):
            raise SkipFile("binary", "contains NUL bytes")
        try:
            text, encoding = decode(data)
        except NotText as e:
            raise SkipFile(e.reason, str(e)) from None
        if kind == "html":
            doc = _load_html(text)
        elif kind == "markdown":
            doc = LoadedDocument(text, kind, sections=_heading_sections(text, _markdown_headings(text)))
        elif kind == "rst":
            doc = LoadedDocument(text, kind, sections=_heading_sections(text, _rst_headings(text)))
        else:
            doc = LoadedDocument(text, kind, language=CODE.get(path.suffix.lower()))
        doc.encoding = encoding
    if len(doc.text) > MAX_TEXT_CHARS:
        raise SkipFile("too-much-text", f"more than {MAX_TEXT_CHARS:,} characters of text")
    if not doc.text.strip():
        raise SkipFile("empty", "no text after extraction" if doc.text else "")
    if not doc.sections:
        doc.sections = [Section(0, len(doc.text))]
    if doc.title is None:
        doc.title = _first_heading(doc.sections) or path.stem
    return doc


def _first_heading(sections: list[Section]) -> str | None:
    for s in sections:
        if s.heading:
            return s.heading.split(" > ")[0]
    return None


# --- headings -------------------------------------------------------------------------------------------------

_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_MD_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def _markdown_headings(text: str) -> list[tuple[int, int, str]]:
    """(offset, level, title) of ATX headings outside fenced code blocks."""
    fenced = [(m.start(), m.end()) for m in _MD_FENCE.finditer(text)]
    out = []
    for m in _MD_HEADING.finditer(text):
        if not any(a <= m.start() < b for a, b in fenced):
            out.append((m.start(), len(m.group(1)), m.group(2).strip()))
    return out


_RST_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+.:_])\1{2,}[ \t]*$")


def _rst_headings(text: str) -> list[tuple[int, int, str]]:
    """(offset, level, title) of reST section titles; levels follow the order adornments first appear."""
    lines = text.split("\n")
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    levels: dict[str, int] = {}
    out = []
    for i in range(len(lines) - 1):
        title, under = lines[i].rstrip(), lines[i + 1].rstrip()
        m = _RST_ADORNMENT.match(under)
        if not m or not title.strip() or _RST_ADORNMENT.match(title) or len(under) < len(title.strip()):
            continue
        overlined = i > 0 and lines[i - 1].rstrip() == under
        key = ("over" if overlined else "") + m.group(1)
        level = levels.setdefault(key, len(levels) + 1)
        start = offsets[i - 1] if overlined else offsets[i]
        out.append((start, level, title.strip()))
    return out


def _heading_sections(text: str, headings: list[tuple[int, int, str]]) -> list[Section]:
    """Cut ``text`` at each heading; each section carries its heading path ("A > B > C")."""
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    if not headings or headings[0][0] > 0:
        sections.append(Section(0, headings[0][0] if headings else len(text)))
    for i, (start, level, title) in enumerate(headings):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        end = headings[i + 1][0] if i + 1 < len(headings) else len(text)
        sections.append(Section(start, end, " > ".join(t for _, t in stack)))
    return [s for s in sections if text[s.start : s.end].strip()]


# --- HTML -----------------------------------------------------------------------------------------------------

_HTML_DROP = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "button", "form"}
_HTML_BLOCK = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "aside",
    "nav",
    "ul",
    "ol",
    "li",
    "dl",
    "dt",
    "dd",
    "table",
    "tr",
    "blockquote",
    "pre",
    "figure",
    "figcaption",
    "hr",
    "address",
    "details",
    "summary",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "caption",
    "thead",
    "tbody",
    "tfoot",
}
_HEADING_TAGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


def _load_html(markup: str) -> LoadedDocument:
    from bs4 import BeautifulSoup
    from bs4.element import NavigableString, PreformattedString, Tag

    soup = BeautifulSoup(markup, "html.parser")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else None
    parts: list[str] = []
    length = 0
    trailing_newlines = 0
    headings: list[tuple[int, int, str]] = []

    def emit(s: str) -> None:
        nonlocal length, trailing_newlines
        parts.append(s)
        length += len(s)
        body = s.rstrip("\n")
        trailing_newlines = trailing_newlines + len(s) if not body else len(s) - len(body)

    def newline(n: int) -> None:
        # Block boundaries collapse: at most n newlines in a row, none at the very start.
        if length and trailing_newlines < n:
            emit("\n" * (n - trailing_newlines))

    # Depth-first over the tree with an explicit stack: a deeply nested page must not exhaust Python's recursion.
    end = object()
    stack: list[tuple[Any, bool, str | None]] = [(iter((soup.body or soup).children), False, None)]
    while stack:
        children, pre, closing = stack[-1]
        child = next(children, end)
        if child is end:
            stack.pop()
            if closing in {"td", "th"}:
                emit(" ")
            if closing in _HTML_BLOCK:
                newline(2 if closing not in {"li", "tr", "dt", "dd"} else 1)
            continue
        if isinstance(child, PreformattedString):  # comments, doctype, CDATA, processing instructions
            continue
        if isinstance(child, NavigableString):
            s = str(child)
            if not pre:
                s = re.sub(r"\s+", " ", s)
                if not length or parts[-1].endswith(("\n", " ")):
                    s = s.lstrip()
            if s:
                emit(s)
            continue
        if not isinstance(child, Tag) or child.name in _HTML_DROP:
            continue
        name = child.name
        if name == "br":
            emit("\n")
            continue
        block = name in _HTML_BLOCK
        if block:
            newline(2 if name not in {"li", "tr", "dt", "dd"} else 1)
        if name in _HEADING_TAGS:
            text = child.get_text(" ", strip=True)
            if text:
                headings.append((length, _HEADING_TAGS[name], text))
                emit(text)
            if block:
                newline(2)
        else:
            stack.append((iter(child.children), pre or name == "pre", name))

    text = "".join(parts)
    if title is None and headings:
        title = headings[0][2]
    return LoadedDocument(text, "html", title=title, sections=_heading_sections(text, headings))


# --- PDF ------------------------------------------------------------------------------------------------------


def _load_pdf(data: bytes) -> LoadedDocument:
    import io

    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    # pypdf logs every recoverable oddity of real-world PDFs; the skip reason is what the user needs.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise SkipFile("pdf-encrypted", "password-protected")
        parts: list[str] = []
        sections: list[Section] = []
        pos = 0
        for number, page in enumerate(reader.pages, start=1):
            page_text = (page.extract_text() or "").replace("\r\n", "\n").replace("\x00", "")
            if not page_text.strip():
                continue
            if parts:
                parts.append("\n\n")
                pos += 2
            parts.append(page_text)
            sections.append(Section(pos, pos + len(page_text), None, number))
            pos += len(page_text)
            if pos > MAX_TEXT_CHARS:  # stop extracting: the rest would only be thrown away
                raise SkipFile("too-much-text", f"more than {MAX_TEXT_CHARS:,} characters of text")
        title = (reader.metadata.title if reader.metadata else None) or None
    except SkipFile:
        raise
    except FileNotDecryptedError:
        raise SkipFile("pdf-encrypted", "password-protected") from None
    except (PdfReadError, Exception) as e:
        raise SkipFile("pdf-broken", f"{type(e).__name__}: {e}"[:200]) from None
    if not sections:
        raise SkipFile("pdf-no-text", "no text layer (scanned?)")
    return LoadedDocument("".join(parts), "pdf", title=str(title) if title else None, sections=sections)
