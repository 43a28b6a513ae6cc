"""Which shape of answer a question asks for, from its wording alone.

A fact ("who", "when", "how many") is answered in a few words snapped to a source; a question that asks for a
reason, a process, a comparison or a description is answered in a few cited sentences (``sentences`` mode).
The router's hits and misses on the tuning questions are in docs/answers.md.
"""

from __future__ import annotations

import re

# Where a clause starts: the question's start, after a comma or colon ("In the sampling code, why ..."), or
# after a polite opening ("can you explain ...").
_START = r"(?:^|[,;:]\s*|\b(?:and|but|so|please|can you|could you|would you|i want to know)\s+)"
# "how" asks for a process unless a measure follows it ("how many", "how long", "how old").
_HOW = re.compile(
    _START + r"how\b(?!\s+(?:many|much|long|old|large|big|small|far|tall|high|deep|wide|heavy|fast|often|soon|early"
    r"|late|recent|recently|frequently)\b)"
)
_VERB = re.compile(_START + r"(?:explain|describe|compare|contrast|summari[sz]e|list|outline|discuss)\b")
_ANYWHERE = re.compile(
    r"\bwhy\b|\bsummary\b|\boverview\b|\bdifferences?\b(?! between \w+ and \w+ (?:is|was)\b)"
    r"|^what(?: is|'s| are| was| were) the (?:role|roles|purpose|function|functions|effect|effects|impact"
    r"|significance|advantages?|disadvantages?|benefits?|drawbacks?|reasons?|causes?|steps|idea|point)\b"
    r"|^what (?:happens|happened|causes|caused|makes|made)\b|\bin what way\b|\btell me about\b"
)


def wants_explanation(question: str) -> bool:
    """True when ``question`` asks why or how something happens, to explain, describe, compare or list: a few
    sentences answer it, not a few words."""
    q = " ".join(question.lower().split())
    return bool(_ANYWHERE.search(q) or _HOW.search(q) or _VERB.search(q))
