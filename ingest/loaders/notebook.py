"""Jupyter notebooks (.ipynb) through nbformat: markdown and code cells in order, under the notebook's own
Markdown headings; outputs are left out (images, tables of numbers and tracebacks are noise to a search)."""

from __future__ import annotations

from ingest.loaders.document import LoadedDocument, TextBuilder, parsing
from ingest.loaders.text import decode_text, markdown_headings


def load_ipynb(data: bytes) -> LoadedDocument:
    import nbformat

    text, encoding = decode_text(data)
    with parsing("notebook-broken"):
        notebook = nbformat.reads(text, as_version=4)
    language = (notebook.metadata.get("kernelspec") or {}).get("language") or "python"
    builder = TextBuilder()
    for cell in notebook.cells:
        source = cell.get("source", "")
        if cell.cell_type == "markdown":
            # Each Markdown heading starts a section; the text between headings stays in one block.
            cursor = 0
            for start, level, title in markdown_headings(source):
                builder.block(source[cursor:start])
                builder.heading(level, title)
                cursor = source.find("\n", start) + 1 or len(source)
            builder.block(source[cursor:])
        elif cell.cell_type == "code" and source.strip():
            builder.block(f"```{language}\n{source.strip()}\n```")
    doc = builder.document("notebook")
    doc.encoding = encoding
    return doc
