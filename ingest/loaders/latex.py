"""LaTeX (.tex): the body as readable text (pylatexenc turns markup into what it prints), cut at
\\part, \\chapter, \\section and below, each cited by its heading path."""

from __future__ import annotations

import re

from ingest.loaders.document import LoadedDocument, TextBuilder
from ingest.loaders.text import decode_text

_LEVELS = {"part": 1, "chapter": 2, "section": 3, "subsection": 4, "subsubsection": 5, "paragraph": 6}
_SECTIONING = re.compile(r"\\(part|chapter|section|subsection|subsubsection|paragraph)\*?\s*(?:\[[^\]]*\])?\{")
_TITLE = re.compile(r"\\title\s*\{")


def load_tex(data: bytes) -> LoadedDocument:
    from pylatexenc.latex2text import LatexNodes2Text

    source, encoding = decode_text(data)
    converter = LatexNodes2Text(math_mode="verbatim", strict_latex_spaces=True)

    def plain(tex: str) -> str:
        try:
            return converter.latex_to_text(tex)
        except Exception:  # pylatexenc is tolerant, but a truncated file can still trip it: keep the source
            return tex

    begin = source.find("\\begin{document}")
    body = source[begin + len("\\begin{document}") :] if begin >= 0 else source
    body = body.split("\\end{document}")[0]
    title = _braced(source, m.end()) if (m := _TITLE.search(source)) else None
    builder = TextBuilder()
    cursor = 0
    for m in _SECTIONING.finditer(body):
        heading = _braced(body, m.end())
        if heading is None:
            continue
        builder.block(plain(body[cursor : m.start()]))
        builder.heading(_LEVELS[m.group(1)], plain(heading))
        cursor = m.end() + len(heading) + 1
    builder.block(plain(body[cursor:]))
    doc = builder.document("latex", plain(title).strip() if title else None)
    doc.encoding = encoding
    return doc


def _braced(text: str, start: int) -> str | None:
    """The text from ``start`` up to the brace that closes the one just before it (nested braces allowed)."""
    depth = 1
    for i in range(start, min(len(text), start + 2000)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None
