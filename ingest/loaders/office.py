"""Word documents (.docx: paragraphs under their headings, tables as rows) and slide decks (.pptx: one section per
slide, named by its number and title, speaker notes included), through python-docx and python-pptx."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

from ingest.loaders.document import LoadedDocument, TextBuilder, parsing
from ingest.loaders.tables import add_table

_HEADING_STYLE = re.compile(r"^heading (\d)$", re.IGNORECASE)


def load_docx(data: bytes) -> LoadedDocument:
    import docx
    from docx.table import Table

    with parsing("docx-broken"):
        document = docx.Document(io.BytesIO(data))
    builder = TextBuilder()
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            add_table(builder, [[cell.text for cell in row.cells] for row in item.rows])
            continue
        style = (item.style.name if item.style is not None else "") or ""
        level = 1 if style == "Title" else int(m.group(1)) if (m := _HEADING_STYLE.match(style)) else None
        if level is not None:
            builder.heading(level, item.text)
        else:
            builder.block(item.text)
    title = document.core_properties.title or None
    return builder.document("docx", title)


def load_pptx(data: bytes) -> LoadedDocument:
    import pptx

    with parsing("pptx-broken"):
        deck = pptx.Presentation(io.BytesIO(data))
    builder = TextBuilder()
    for number, slide in enumerate(deck.slides, start=1):
        title_shape = slide.shapes.title
        title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None else ""
        place = f"slide {number}: {title}" if title else f"slide {number}"
        for shape in _shapes(slide.shapes):
            if getattr(shape, "has_table", False) and shape.has_table:
                add_table(builder, [[c.text for c in row.cells] for row in shape.table.rows], place)
            elif shape.has_text_frame:
                builder.block(shape.text_frame.text, heading=place)
        notes = slide.notes_slide.notes_text_frame if slide.has_notes_slide else None
        if notes is not None and notes.text.strip():
            builder.block(f"Notes: {notes.text}", heading=place)
    return builder.document("pptx", deck.core_properties.title or None)


def _shapes(shapes: Any) -> Iterator[Any]:
    """Shapes in reading order, the members of groups included."""
    for shape in shapes:
        if hasattr(shape, "shapes"):  # a group
            yield from _shapes(shape.shapes)
        else:
            yield shape
