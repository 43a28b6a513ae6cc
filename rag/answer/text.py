"""Text rules the answer path shares: where sentences end, what a citation marker looks like, and SQuAD's
normalisation. One copy of each, so the prompt, the quote, the support check and the scores agree."""

from __future__ import annotations

import re
import string

# A sentence ends after . ! ? and white space, or at a blank line.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
# A citation marker: [1] or [1, 3].
CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_CITATION_AND_SPACE = re.compile(r"\s*" + CITATION.pattern)

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, stripped; pieces of one character or less are left out."""
    return [s.strip() for s in SENTENCE_END.split(text) if len(s.strip()) > 1]


def without_citations(text: str) -> str:
    """``text`` with its [n] markers and the spaces before them removed."""
    return _CITATION_AND_SPACE.sub("", text)


def citations(text: str, n_sources: int) -> list[int]:
    """Source numbers cited as [n] or [n, m] in ``text``, in order of first mention, valid ones only."""
    out: list[int] = []
    for m in CITATION.finditer(text):
        for part in m.group(1).split(","):
            n = int(part)
            if 1 <= n <= n_sources and n not in out:
                out.append(n)
    return out


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, remove punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


# Words are compared piece by piece: "384" is in "384-dimensional" (a hyphen, dash or slash splits a word).
_PIECE = re.compile(r"[^\s\-‐‑–—/]+")


def _pieces(text: str) -> list[tuple[str, re.Match[str]]]:
    # Pieces that normalise to nothing (an article, a lone symbol) are skipped on both sides alike.
    return [(norm, m) for m in _PIECE.finditer(text) if (norm := normalize_answer(m.group()))]


def find_words(words: str, text: str) -> tuple[int, int] | None:
    """Character offsets of the first place ``text`` holds ``words`` one after another, compared after SQuAD
    normalisation (so case, punctuation and articles may differ); None when it does not, or ``words`` is empty."""
    wanted = [norm for norm, _ in _pieces(words)]
    n = len(wanted)
    if not n:
        return None
    pieces = _pieces(text)
    for i in range(len(pieces) - n + 1):
        if [norm for norm, _ in pieces[i : i + n]] == wanted:
            return pieces[i][1].start(), pieces[i + n - 1][1].end()
    return None
