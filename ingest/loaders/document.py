"""What a loader returns: the document's text, its sections (where a citation points), and attachments.

Every loader builds its text with :class:`TextBuilder`, so each section is ``text[section.start:section.end]``
and chunk spans, cut later from the same text, always reproduce the chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ingest.records import SkipFile, SkippedFile

# Files larger than this are skipped rather than read whole into memory.
MAX_FILE_BYTES = 64 * 1024 * 1024
# Extracted text is capped too: a small compressed file can inflate to hundreds of megabytes of text. A builder
# stops here as it goes; RAG_MAX_CHARS (ingest.limits) may set a lower cap, checked on the finished text.
MAX_TEXT_CHARS = MAX_FILE_BYTES


@dataclass(frozen=True)
class Section:
    """A stretch of the document's text under one heading path (and, for PDFs, on one page).

    ``heading`` names the place a citation points to: a heading path ("A > B"), "slide 3: Title",
    "sheet Budget, rows 2-31", a chapter or an e-mail's subject.
    """

    start: int
    end: int
    heading: str | None = None
    page: int | None = None


@dataclass(frozen=True)
class Attachment:
    """A file carried inside another (an e-mail's attachment): indexed as a source of its own."""

    name: str
    data: bytes


@dataclass
class LoadedDocument:
    text: str
    kind: str  # one of ingest.records.KINDS
    title: str | None = None
    encoding: str | None = None
    language: str | None = None  # for code: a langchain Language value
    sections: list[Section] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    # Parts left out (a message nested past the depth limit), reported under ``<file>/<part path>``.
    dropped: list[SkippedFile] = field(default_factory=list)


class TextBuilder:
    """Assembles a document block by block, recording where each block lies and under which heading.

    A block goes under the explicit ``heading``/``page`` it is given, else under the path of the headings added
    so far with :meth:`heading`. Consecutive blocks under the same place share one section.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self._sections: list[Section] = []
        self._path: list[tuple[int, str]] = []

    @property
    def length(self) -> int:
        return self._length

    def heading(self, level: int, title: str) -> None:
        """Start a heading of ``level`` (1 = top); its title is part of the text, under its own path."""
        title = " ".join(title.split())
        if not title:
            return
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, title))
        self.block(title)

    def heading_path(self) -> str | None:
        return " > ".join(t for _, t in self._path) or None

    def block(self, text: str, *, heading: str | None = None, page: int | None = None) -> None:
        """Append ``text`` as a paragraph-like block (blocks are separated by a blank line)."""
        text = text.strip()
        if not text:
            return
        if self._length:
            self._emit("\n\n")
        start = self._length
        self._emit(text)
        place = (heading if heading is not None else self.heading_path(), page)
        last = self._sections[-1] if self._sections else None
        if last is not None and (last.heading, last.page) == place:
            self._sections[-1] = Section(last.start, self._length, last.heading, last.page)
        else:
            self._sections.append(Section(start, self._length, *place))
        if self._length > MAX_TEXT_CHARS:  # stop here: the rest would only be thrown away
            raise SkipFile("too-much-text", f"more than {MAX_TEXT_CHARS:,} characters of text")

    def _emit(self, s: str) -> None:
        self._parts.append(s)
        self._length += len(s)

    def document(
        self,
        kind: str,
        title: str | None = None,
        attachments: list[Attachment] | None = None,
        dropped: list[SkippedFile] | None = None,
    ) -> LoadedDocument:
        text = "".join(self._parts)
        sections = list(self._sections)
        return LoadedDocument(
            text, kind, title, sections=sections, attachments=attachments or [], dropped=dropped or []
        )


@contextmanager
def parsing(reason: str) -> Iterator[None]:
    """Whatever a parser raises on a damaged file becomes :class:`SkipFile` ``reason``, with what it said
    (format libraries raise every kind of exception: zip, XML, key and index errors)."""
    try:
        yield
    except SkipFile:
        raise
    except Exception as e:
        raise SkipFile(reason, f"{type(e).__name__}: {e}"[:200]) from None
