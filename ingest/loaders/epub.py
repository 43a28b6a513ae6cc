"""E-books (.epub) through EbookLib: the spine's chapters in reading order, each cited by its title from the
table of contents (or its first heading), its own headings beneath."""

from __future__ import annotations

import io
import warnings
from typing import Any

from ingest.loaders.document import LoadedDocument, TextBuilder, parsing
from ingest.loaders.html import load_html
from ingest.records import SkipFile


def load_epub(data: bytes) -> LoadedDocument:
    import ebooklib
    from ebooklib import epub

    # EbookLib warns about its own future defaults on every read.
    with parsing("epub-broken"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        book = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": True})
    titles = _toc_titles(book.toc)
    builder = TextBuilder()
    for idref, *_ in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        chapter_doc = load_html(item.get_content().decode("utf-8", errors="replace"))
        chapter = titles.get(item.get_name()) or chapter_doc.title
        for section in chapter_doc.sections:
            builder.block(chapter_doc.text[section.start : section.end], heading=_place(chapter, section.heading))
    if not builder.length:
        raise SkipFile("empty", "no text in the e-book's chapters")
    found = book.get_metadata("DC", "title")
    return builder.document("epub", found[0][0] if found else None)


def _place(chapter: str | None, heading: str | None) -> str | None:
    """A section's citation: the chapter, then the section's own heading path when it says more."""
    if not chapter or heading == chapter:
        return heading
    return f"{chapter} > {heading}" if heading else chapter


def _toc_titles(toc: Any) -> dict[str, str]:
    """Chapter file -> its first title in the table of contents (nested sections included)."""
    out: dict[str, str] = {}
    stack = list(toc)[::-1]
    while stack:
        entry = stack.pop()
        if isinstance(entry, tuple | list):  # (Section, [children])
            section, children = entry[0], entry[1]
            stack.extend(list(children)[::-1])
            entry = section
        href = getattr(entry, "href", None)
        title = getattr(entry, "title", None)
        if href and title:
            out.setdefault(href.split("#")[0], " ".join(title.split()))
    return out
