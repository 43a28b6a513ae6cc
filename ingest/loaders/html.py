"""HTML as the text a reader sees: blocks separated by blank lines, cut at its h1-h6 headings."""

from __future__ import annotations

import re
from typing import Any

from ingest.loaders.document import LoadedDocument
from ingest.loaders.text import heading_sections

_HTML_DROP = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "button", "form"}
_HTML_BLOCK = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "aside",
    "nav",
    "ul",
    "ol",
    "li",
    "dl",
    "dt",
    "dd",
    "table",
    "tr",
    "blockquote",
    "pre",
    "figure",
    "figcaption",
    "hr",
    "address",
    "details",
    "summary",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "caption",
    "thead",
    "tbody",
    "tfoot",
}
_HEADING_TAGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


def load_html(markup: str) -> LoadedDocument:
    from bs4 import BeautifulSoup
    from bs4.element import NavigableString, PreformattedString, Tag

    soup = BeautifulSoup(markup, "html.parser")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else None
    parts: list[str] = []
    length = 0
    trailing_newlines = 0
    headings: list[tuple[int, int, str]] = []

    def emit(s: str) -> None:
        nonlocal length, trailing_newlines
        parts.append(s)
        length += len(s)
        body = s.rstrip("\n")
        trailing_newlines = trailing_newlines + len(s) if not body else len(s) - len(body)

    def newline(n: int) -> None:
        # Block boundaries collapse: at most n newlines in a row, none at the very start.
        if length and trailing_newlines < n:
            emit("\n" * (n - trailing_newlines))

    # Depth-first over the tree with an explicit stack: a deeply nested page must not exhaust Python's recursion.
    end = object()
    stack: list[tuple[Any, bool, str | None]] = [(iter((soup.body or soup).children), False, None)]
    while stack:
        children, pre, closing = stack[-1]
        child = next(children, end)
        if child is end:
            stack.pop()
            if closing in {"td", "th"}:
                emit(" ")
            if closing in _HTML_BLOCK:
                newline(2 if closing not in {"li", "tr", "dt", "dd"} else 1)
            continue
        if isinstance(child, PreformattedString):  # comments, doctype, CDATA, processing instructions
            continue
        if isinstance(child, NavigableString):
            s = str(child)
            if not pre:
                s = re.sub(r"\s+", " ", s)
                if not length or parts[-1].endswith(("\n", " ")):
                    s = s.lstrip()
            if s:
                emit(s)
            continue
        if not isinstance(child, Tag) or child.name in _HTML_DROP:
            continue
        name = child.name
        if name == "br":
            emit("\n")
            continue
        block = name in _HTML_BLOCK
        if block:
            newline(2 if name not in {"li", "tr", "dt", "dd"} else 1)
        if name in _HEADING_TAGS:
            text = child.get_text(" ", strip=True)
            if text:
                headings.append((length, _HEADING_TAGS[name], text))
                emit(text)
            if block:
                newline(2)
        else:
            stack.append((iter(child.children), pre or name == "pre", name))

    text = "".join(parts)
    if title is None and headings:
        title = headings[0][2]
    return LoadedDocument(text, "html", title=title, sections=heading_sections(text, headings))
