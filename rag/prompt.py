"""Turn a question and retrieved chunks into chat messages that fit the generator's context budget.

Token counts come from a function handed in (the generator's tokenizer with its chat template), so this module
knows nothing of models.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from rag.types import Hit

Messages = list[dict[str, str]]

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources provided. "
    "Answer in one or two short sentences, stating the fact from the sources, and cite the source number "
    "like [1]. If the sources do not contain the answer, say \"I don't know.\""
)


@dataclass(frozen=True)
class PackedPrompt:
    messages: Messages
    sources: list[Hit]  # in prompt order: source [n] is sources[n - 1]
    dropped: list[Hit]  # retrieved but left out: they did not fit the budget
    tokens: int  # the whole prompt, chat template included


def source_label(hit: Hit) -> str:
    return f"{Path(hit.path).name} ({hit.location()})"


def build_messages(question: str, sources: list[Hit]) -> Messages:
    blocks = [f"[{n}] {source_label(h)}\n{h.text.strip()}" for n, h in enumerate(sources, start=1)]
    user = "Sources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question.strip()}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def pack(question: str, hits: list[Hit], count: Callable[[Messages], int], budget: int) -> PackedPrompt:
    """Add ``hits`` in rank order while the prompt stays within ``budget`` tokens.

    A hit that does not fit is dropped and later (shorter) ones are still tried; if not even the best hit fits,
    it is cut to fit, so a question always gets its best source.
    """
    chosen: list[Hit] = []
    dropped: list[Hit] = []
    tokens = count(build_messages(question, []))
    for hit in hits:
        n = count(build_messages(question, [*chosen, hit]))
        if n <= budget:
            chosen.append(hit)
            tokens = n
        elif not chosen:
            cut = _cut_to_fit(question, hit, count, budget)
            if cut is None:
                dropped.append(hit)
            else:
                chosen.append(cut)
                tokens = count(build_messages(question, chosen))
        else:
            dropped.append(hit)
    return PackedPrompt(build_messages(question, chosen), chosen, dropped, tokens)


def _cut_to_fit(question: str, hit: Hit, count: Callable[[Messages], int], budget: int) -> Hit | None:
    lo, hi = 0, len(hit.text)
    while lo < hi:  # longest prefix that fits
        mid = (lo + hi + 1) // 2
        if count(build_messages(question, [replace(hit, text=hit.text[:mid])])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        return None
    return replace(hit, text=hit.text[:lo], end=hit.start + lo)


_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def citations(text: str, n_sources: int) -> list[int]:
    """Source numbers cited as [n] or [n, m] in ``text``, in order of first mention, valid ones only."""
    out: list[int] = []
    for m in _CITATION.finditer(text):
        for part in m.group(1).split(","):
            n = int(part)
            if 1 <= n <= n_sources and n not in out:
                out.append(n)
    return out
