"""OpenDocument text (.odt) through odfpy: headings by outline level, paragraphs and lists, tables as rows."""

from __future__ import annotations

import io
from typing import Any

from ingest.loaders.document import LoadedDocument, TextBuilder, parsing
from ingest.loaders.tables import MAX_COLUMNS, add_table

_TEXT_NS = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_TABLE_NS = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"


def cell_texts(row: Any) -> list[str]:
    """The texts of a table:table-row's cells, run-length repeats expanded (up to MAX_COLUMNS)."""
    from odf import teletype

    out: list[str] = []
    for cell in row.childNodes:
        if cell.qname not in ((_TABLE_NS, "table-cell"), (_TABLE_NS, "covered-table-cell")):
            continue
        repeat = int(cell.getAttribute("numbercolumnsrepeated") or 1)
        text = teletype.extractText(cell)
        out.extend([text] * min(repeat, MAX_COLUMNS - len(out)))
        if len(out) >= MAX_COLUMNS:
            break
    return out


def load_odt(data: bytes) -> LoadedDocument:
    from odf import opendocument, teletype

    with parsing("odt-broken"):
        doc = opendocument.load(io.BytesIO(data))
    builder = TextBuilder()

    def walk(node: Any) -> None:
        for child in node.childNodes:
            name = getattr(child, "qname", None)
            if name == (_TEXT_NS, "h"):
                builder.heading(int(child.getAttribute("outlinelevel") or 1), teletype.extractText(child))
            elif name == (_TEXT_NS, "p"):
                builder.block(teletype.extractText(child))
            elif name == (_TABLE_NS, "table"):
                add_table(builder, [cell_texts(r) for r in _rows(child)])
            elif name is not None:  # lists, sections, frames: their paragraphs in order
                walk(child)

    walk(doc.text)
    return builder.document("odt")


def _rows(table: Any) -> list[Any]:
    from odf import table as odf_table

    return list(table.getElementsByType(odf_table.TableRow))
