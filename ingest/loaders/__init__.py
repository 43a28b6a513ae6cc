"""Read one file into plain text plus sections (heading path, page, slide, sheet rows) with character offsets.

Every loader returns text in which each section is ``text[section.start:section.end]``; chunk spans are offsets
into the same text, so a chunk can always be found again in its extracted document. One module per family of
formats; each parses with a library made for its format, imported only when such a file is met.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ingest.limits import Limits, setting
from ingest.loaders.document import MAX_FILE_BYTES, MAX_TEXT_CHARS, Attachment, LoadedDocument, Section
from ingest.loaders.zipped import check_zip
from ingest.ocr import Ocr
from ingest.records import SkipFile
from ingest.walk import read

__all__ = ["MAX_FILE_BYTES", "Attachment", "LoadedDocument", "Section", "SkipFile", "kind_of", "load"]

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

# Kind -> extensions, for the formats that are not source code.
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "markdown": (".md", ".markdown", ".mdx"),
    "rst": (".rst",),
    "html": (".html", ".htm", ".xhtml"),
    "pdf": (".pdf",),
    "text": (".txt", ".text"),
    "docx": (".docx",),
    "pptx": (".pptx",),
    "spreadsheet": (".xlsx", ".xlsm", ".xls", ".ods", ".csv", ".tsv"),
    "odt": (".odt",),
    "epub": (".epub",),
    "email": (".eml", ".mbox"),
    "notebook": (".ipynb",),
    "rtf": (".rtf",),
    "latex": (".tex",),
    "image": (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"),
}
_KIND_OF = {ext: kind for kind, exts in EXTENSIONS.items() for ext in exts}
# Kinds whose section names are the document's own headings (so the first one can stand for a missing title),
# not places such as "slide 2" or "sheet Budget, rows 2-9".
_HEADED = {"markdown", "rst", "html", "docx", "odt", "epub", "notebook", "latex"}
# Extension -> (module of ingest.loaders, function) for the formats parsed from bytes by a library.
_READERS: dict[str, tuple[str, str]] = {
    ".docx": ("office", "load_docx"),
    ".pptx": ("office", "load_pptx"),
    ".odt": ("opendocument", "load_odt"),
    ".epub": ("epub", "load_epub"),
    ".eml": ("mail", "load_eml"),
    ".mbox": ("mail", "load_mbox"),
    ".ipynb": ("notebook", "load_ipynb"),
    ".rtf": ("rtf", "load_rtf"),
    ".tex": ("latex", "load_tex"),
    ".xlsx": ("sheets", "load_xlsx"),
    ".xlsm": ("sheets", "load_xlsx"),
    ".xls": ("sheets", "load_xls"),
    ".ods": ("sheets", "load_ods"),
    ".csv": ("sheets", "load_csv"),
    ".tsv": ("sheets", "load_tsv"),
}
# Modules whose readers take the limits too (rows of a sheet, messages nested in messages).
_LIMITED = {"sheets", "mail"}
# Formats that are zip archives of XML: their declared sizes are checked before a library inflates anything.
_ZIPPED = {".docx", ".pptx", ".xlsx", ".xlsm", ".odt", ".ods", ".epub"}


def kind_of(path: Path) -> str | None:
    """The loader kind for ``path`` by extension, or None when unsupported."""
    ext = path.suffix.lower()
    return _KIND_OF.get(ext) or ("code" if ext in CODE else None)


def load(
    path: Path, data: bytes | None = None, *, ocr: Ocr | None = None, limits: Limits | None = None
) -> LoadedDocument:
    """Read ``path`` (or parse ``data``, its bytes, when the caller already has them).

    Pages without a text layer and pictures are read with ``ocr`` (skipped without it). What a file may
    inflate to is bounded by ``limits`` (ingest.sandbox also bounds memory and time). Raises :class:`SkipFile`
    with a reason for anything that cannot be indexed.
    """
    limits = limits or Limits()
    kind = kind_of(path)
    if kind is None:
        raise SkipFile("unsupported", f"no loader for {path.suffix or 'files without extension'}")
    if data is None:
        data = read(path, MAX_FILE_BYTES)
    if len(data) > MAX_FILE_BYTES:
        raise SkipFile("too-large", f"{len(data)} bytes > {MAX_FILE_BYTES}")
    if not data:
        raise SkipFile("empty")
    if path.suffix.lower() in _ZIPPED:
        check_zip(data, limits)
    doc = _read(kind, path.suffix.lower(), data, ocr, limits)
    if len(doc.text) > min(limits.chars, MAX_TEXT_CHARS):
        detail = f"more than {min(limits.chars, MAX_TEXT_CHARS):,} characters of text ({setting('chars')} raises it)"
        raise SkipFile("too-much-text", detail)
    if not doc.text.strip():
        raise SkipFile("empty", "no text after extraction" if doc.text else "")
    if not doc.sections:
        doc.sections = [Section(0, len(doc.text))]
    if doc.title is None:
        doc.title = (_first_heading(doc.sections) if kind in _HEADED else None) or path.stem
    return doc


def _read(kind: str, ext: str, data: bytes, ocr: Ocr | None, limits: Limits) -> LoadedDocument:
    """Parse ``data`` with the loader of its format (its module imported now: `rag --help` never pays for it)."""
    if kind == "pdf":
        from ingest.loaders.pdf import load_pdf

        return load_pdf(data, ocr, limits)
    if kind == "image":
        from ingest.loaders.images import load_image

        return load_image(data, ocr, limits)
    if ext in _READERS:
        module, function = _READERS[ext]
        reader = getattr(importlib.import_module(f"ingest.loaders.{module}"), function)
        return reader(data, limits) if module in _LIMITED else reader(data)
    from ingest.loaders import text as plain

    decoded, encoding = plain.decode_text(data)
    if kind == "html":
        from ingest.loaders.html import load_html

        doc = load_html(decoded)
    elif kind == "markdown":
        doc = plain.load_markdown(decoded)
    elif kind == "rst":
        doc = plain.load_rst(decoded)
    else:
        doc = LoadedDocument(decoded, kind, language=CODE.get(ext))
    doc.encoding = encoding
    return doc


def _first_heading(sections: list[Section]) -> str | None:
    for s in sections:
        if s.heading:
            return s.heading.split(" > ")[0]
    return None
