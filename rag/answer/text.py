"""Text rules the answer path shares: where sentences end, what a citation marker looks like, and SQuAD's
normalisation. One copy of each, so the prompt, the quote, the support check and the scores agree."""

from __future__ import annotations

import re
import string

# A sentence ends after . ! ? and white space, or at a blank line.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
# A citation marker: [1] or [1, 3].
CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, stripped; pieces of one character or less are left out."""
    return [s.strip() for s in SENTENCE_END.split(text) if len(s.strip()) > 1]


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
