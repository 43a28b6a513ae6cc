"""Plain text, Markdown, reStructuredText and source code: decoded text, cut at its headings."""

from __future__ import annotations

import re

from ingest.encoding import NotText, decode, looks_binary
from ingest.loaders.document import LoadedDocument, Section
from ingest.records import SkipFile


def decode_text(data: bytes) -> tuple[str, str]:
    """``(text, encoding)`` of a text file; :class:`SkipFile` for binary or undecodable bytes."""
    if looks_binary(data[:8192]):
        raise SkipFile("binary", "contains NUL bytes")
    try:
        return decode(data)
    except NotText as e:
        raise SkipFile(e.reason, str(e)) from None


def load_markdown(text: str) -> LoadedDocument:
    return LoadedDocument(text, "markdown", sections=heading_sections(text, markdown_headings(text)))


def load_rst(text: str) -> LoadedDocument:
    return LoadedDocument(text, "rst", sections=heading_sections(text, rst_headings(text)))


_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_MD_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def markdown_headings(text: str) -> list[tuple[int, int, str]]:
    """(offset, level, title) of ATX headings outside fenced code blocks."""
    fenced = [(m.start(), m.end()) for m in _MD_FENCE.finditer(text)]
    out = []
    for m in _MD_HEADING.finditer(text):
        if not any(a <= m.start() < b for a, b in fenced):
            out.append((m.start(), len(m.group(1)), m.group(2).strip()))
    return out


_RST_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+.:_])\1{2,}[ \t]*$")


def rst_headings(text: str) -> list[tuple[int, int, str]]:
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


def heading_sections(text: str, headings: list[tuple[int, int, str]]) -> list[Section]:
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
