"""Rich Text Format (.rtf) as its plain text, through striprtf."""

from __future__ import annotations

from ingest.loaders.document import LoadedDocument, TextBuilder, parsing
from ingest.loaders.text import decode_text
from ingest.records import SkipFile


def load_rtf(data: bytes) -> LoadedDocument:
    from striprtf.striprtf import rtf_to_text

    text, _ = decode_text(data)  # RTF is 7-bit text; other characters are escapes that striprtf decodes
    if not text.lstrip().startswith("{\\rtf"):
        raise SkipFile("rtf-broken", "does not start with {\\rtf")
    with parsing("rtf-broken"):
        plain = rtf_to_text(text, errors="replace")
    builder = TextBuilder()
    for paragraph in plain.replace("\r\n", "\n").split("\n\n"):
        builder.block(paragraph)
    return builder.document("rtf")
