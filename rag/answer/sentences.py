"""The ``sentences`` answer: a few sentences written by the generator, each kept only when the sources back it.

The model is asked to end each sentence with its source number, but a small model cites at random; the markers
it wrote are replaced by the sources the support check found for the sentence. A sentence with a claim no
source backs is dropped (or, with ``unsupported="mark"``, kept and marked). When nothing survives, the best
supported sentences of the sources stand in; when the model says the sources do not answer, the answer says so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rag.answer.support import Embed, Support, check, claims, content_words
from rag.answer.text import sentences, without_citations
from rag.types import Hit

# The model's own "the sources do not answer" in the words small models use for it.
_DECLINES = re.compile(
    r"\b(?:i don'?t know|i do not know|not in the (?:provided )?sources|(?:sources|documents|context|text)s? "
    r"(?:do(?:es)? not|don'?t) (?:contain|provide|mention|say|answer|include|specify|explain|give)"
    r"|(?:is|are) not (?:mentioned|provided|given|stated|specified|discussed|explained|covered) in"
    r"|no (?:information|mention) (?:about|of|on|in)|cannot be (?:determined|answered|found))"
)
_END = re.compile(r"([.!?]+)$")
# A citation the token budget cut off ("... softmax [1").
_OPEN_CITATION = re.compile(r"\s*\[[\d,\s]*$")
UNSUPPORTED_MARK = "(unsupported)"
# A written sentence with fewer content words than this is a fragment ("this set is"), not a claim.
MIN_WORDS = 4


def declines(text: str) -> bool:
    """True when the model said, in any sentence, that its sources do not answer."""
    return bool(_DECLINES.search(" ".join(text.lower().replace("’", "'").split())))


@dataclass(frozen=True)
class Checked:
    """One sentence of the answer and what backs each of its claims."""

    text: str  # citation markers removed
    supports: list[Support]

    @property
    def supported(self) -> bool:
        return bool(self.supports) and all(s.supported for s in self.supports)

    def cited(self, marked: bool = False) -> str:
        """The sentence ending in the markers of the sources that support it (``marked``: and flagged when a
        claim of it is unsupported)."""
        sources = list(dict.fromkeys(s.source for s in self.supports if s.supported and s.source))
        body, end = _split_end(self.text)
        cite = f" [{', '.join(map(str, sources))}]" if sources else ""
        flag = f" {UNSUPPORTED_MARK}" if marked and not self.supported else ""
        return f"{body}{cite}{flag}{end}"


def whole_sentences(text: str) -> list[str]:
    """The whole sentences of generated ``text``, citation markers removed: a last one the token budget cut
    short (no closing . ! ?) and fragments of fewer than :data:`MIN_WORDS` content words are left out."""
    said = [" ".join(without_citations(x).split()) for x in sentences(_OPEN_CITATION.sub("", text.strip()))]
    if said and not _END.search(said[-1]):
        said.pop()
    return [s for s in said if len(content_words(s)) >= MIN_WORDS]


def check_sentences(
    said: Sequence[str], sources: Sequence[Hit], embed: Embed, question: str, restates: bool = True
) -> list[Checked]:
    """Each sentence with the support check's verdict on its claims (one check for all of them).
    ``restates``: as for :func:`rag.answer.support.check`."""
    said = [" ".join(s.split()) for s in said]
    # Claims split at line breaks too, so the joined sentences yield each sentence's claims in turn.
    supports = check("\n".join(said), sources, embed, question, restates) if said else []
    out, at = [], 0
    for sentence in said:
        n = len(claims(sentence))
        out.append(Checked(sentence, supports[at : at + n]))
        at += n
    return out


def compose(checked: Sequence[Checked], unsupported: str = "drop") -> tuple[str, list[Support]]:
    """The answer's text from its checked sentences and the supports it keeps. ``unsupported``: "drop" leaves
    out a sentence with an unsupported claim, "mark" keeps it flagged."""
    keep = [c for c in checked if c.supported or (unsupported == "mark" and c.supports)]
    text = " ".join(c.cited(marked=unsupported == "mark") for c in keep)
    return text, [s for c in keep for s in c.supports]


def fallback(best: Sequence[str], sources: Sequence[Hit], embed: Embed, question: str) -> list[Checked]:
    """The best source sentences, checked (each is its own citation): the answer when nothing written survives."""
    return [c for c in check_sentences(best, sources, embed, question, restates=False) if c.supported]


def _split_end(sentence: str) -> tuple[str, str]:
    m = _END.search(sentence)
    return (sentence[: m.start()].rstrip(), m.group(1)) if m else (sentence.rstrip(), ".")
