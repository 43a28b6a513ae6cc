"""The records ingest produces: what is known of a source file, and the chunks cut from it.

Storage keeps them as they are given (rag/storage imports these, never the other way round).
"""

from __future__ import annotations

from dataclasses import dataclass

# What a document can be, by the loader that read it.
KINDS = (
    "text",
    "markdown",
    "rst",
    "html",
    "pdf",
    "code",
    "docx",
    "pptx",
    "spreadsheet",
    "odt",
    "epub",
    "email",
    "notebook",
    "rtf",
    "latex",
    "image",
)


@dataclass(frozen=True)
class DocumentInfo:
    """What the index records about a source file."""

    path: str
    content_hash: str
    size: int
    mtime: float
    kind: str
    title: str | None = None
    encoding: str | None = None
    chunker: str = ""


@dataclass(frozen=True)
class Chunk:
    """One piece of a document: ``document_text[start:end] == text``."""

    ordinal: int
    text: str
    start: int
    end: int
    token_count: int
    page: int | None = None
    heading: str | None = None


@dataclass(frozen=True)
class SkippedFile:
    """A file (or folder) an ingest passed over, and why; nothing indexed for it before is lost."""

    path: str
    reason: str  # short stable label: binary, empty, unsupported, pdf-encrypted, outside-folder, ...
    detail: str = ""


class SkipFile(Exception):
    """This file is not indexed (and what was indexed for it stays). ``reason`` is a short stable label (the
    ``SkippedFile.reason`` of the report), ``detail`` says more."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[SkipFile], tuple[str, str]]:  # raised in a parser process, re-raised here
        return SkipFile, (self.reason, self.detail)
