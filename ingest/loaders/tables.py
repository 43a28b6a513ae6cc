"""Tables as Markdown-style rows, cut into blocks that each repeat the header row.

A question about a cell is answered from one chunk, so each block is kept small enough to be one chunk and
carries the header that names the cell's column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ingest.loaders.document import TextBuilder

# A block's size in characters: under the default chunk size (254 tokens) even for digit-heavy rows, which
# tokenize at about 2.5 characters per token.
BLOCK_CHARS = 600
MAX_COLUMNS = 64


@dataclass(frozen=True)
class RowBlock:
    """Rows ``first``..``last`` (numbered as the source numbers them) under the header row, as text."""

    first: int
    last: int
    text: str


def cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return " ".join(str(value).split()).replace("|", "\\|")


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def clean_rows(rows: Iterable[tuple[int, Sequence[object]]]) -> list[tuple[int, list[str]]]:
    """Rows as cell strings, with empty rows dropped and empty trailing columns cut (spreadsheets often report
    thousands of formatted but empty cells)."""
    out = []
    for number, cells in rows:
        texts = [cell_text(c) for c in list(cells)[:MAX_COLUMNS]]
        while texts and not texts[-1]:
            texts.pop()
        if texts:
            out.append((number, texts))
    width = max((len(t) for _, t in out), default=0)
    return [(n, t + [""] * (width - len(t))) for n, t in out]


def row_blocks(rows: list[tuple[int, list[str]]], *, header: bool = True) -> list[RowBlock]:
    """Cut ``rows`` (from :func:`clean_rows`) into blocks; with ``header``, the first row heads every block."""
    if not rows:
        return []
    head = _line(rows[0][1]) if header else None
    body = rows[1:] if header else rows
    if not body:
        return [RowBlock(rows[0][0], rows[0][0], head or "")]
    blocks: list[RowBlock] = []
    lines: list[str] = []
    first = last = body[0][0]
    size = len(head or "")
    for number, cells in body:
        line = _line(cells)
        if lines and size + len(line) + 1 > BLOCK_CHARS:
            blocks.append(RowBlock(first, last, "\n".join([*([head] if head else []), *lines])))
            lines, first, size = [], number, len(head or "")
        lines.append(line)
        last = number
        size += len(line) + 1
    blocks.append(RowBlock(first, last, "\n".join([*([head] if head else []), *lines])))
    return blocks


def rows_label(block: RowBlock) -> str:
    return f"row {block.first}" if block.first == block.last else f"rows {block.first}-{block.last}"


def add_table(builder: TextBuilder, rows: list[list[object]], heading: str | None = None) -> None:
    """A table inside running text (Word, OpenDocument, slides): blocks of rows, the first row heading each."""
    for block in row_blocks(clean_rows(enumerate(rows, start=1))):
        builder.block(block.text, heading=heading)
