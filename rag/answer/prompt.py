"""Turn a question and retrieved chunks into chat messages that fit the generator's context budget.

Token counts and sentence similarities come in as functions (the generator's tokenizer with its chat template,
the embedder), so this module knows nothing of models.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag.answer.text import sentences
from rag.types import Hit

Messages = list[dict[str, str]]
# (question, sentences) -> one similarity per sentence
Similarity = Callable[[str, list[str]], Sequence[float]]

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources provided. "
    "Answer in one or two short sentences, stating the fact from the sources, and cite the source number "
    'like [1]. If the sources do not contain the answer, say "I don\'t know."'
)


@dataclass(frozen=True)
class PackedPrompt:
    messages: Messages
    sources: list[Hit]  # in prompt order: source [n] is sources[n - 1]
    excerpts: list[str]  # the text of each source as the prompt shows it
    dropped: list[Hit]  # retrieved but left out: nothing relevant in them, or they did not fit the budget
    tokens: int  # the whole prompt, chat template included
    unfocused: list[Hit] = field(default_factory=list)  # the dropped whose excerpt was empty (no focus sentence)


def source_label(hit: Hit) -> str:
    """``file (location)``: the header of a source block, as inert as its text (names and headings are the
    document's words too)."""
    return defuse(f"{Path(hit.path).name} ({hit.location()})".replace("\n", " ").replace("\r", " "))


# Chat-template control tokens (<|im_start|>, <|endoftext|>, [INST], <<SYS>>, ...) written inside a document
# would otherwise be tokenized as real control tokens and could open a new system or assistant turn.
_CONTROL = re.compile(r"<\|([^<>|\n]{1,40})\|>|\[(/?INST)\]|<<(/?SYS)>>|</?s>")
# A line that looks like one of our own source headers ("[2] file.txt (...)") could pass a document's text off
# as another source.
_HEADER = re.compile(r"^\[(\d+)\]", re.MULTILINE)


def defuse(text: str) -> str:
    """Document-derived text made inert (body, heading, file name, page label): it stays readable but cannot act
    as prompt structure. Everything from a document passes through here on its way into a prompt."""
    text = _CONTROL.sub(lambda m: "(" + next(g for g in m.groups() if g) + ")" if any(m.groups()) else "(s)", text)
    return _HEADER.sub(r"(\1)", text)


def build_messages(
    question: str, sources: Sequence[Hit], excerpts: Sequence[str] | None = None, system: str = SYSTEM_PROMPT
) -> Messages:
    texts = excerpts if excerpts is not None else [h.text for h in sources]
    blocks = [
        f"[{n}] {source_label(h)}\n{defuse(t.strip())}"
        for n, (h, t) in enumerate(zip(sources, texts, strict=True), start=1)
    ]
    # The question comes first as well as last: a small model reads the sources knowing what to look for.
    user = f"Question: {question.strip()}\n\nSources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question.strip()}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def focus(question: str, hits: Sequence[Hit], similarity: Similarity, keep: int) -> list[str]:
    """Each hit's text cut down to its sentences among the ``keep`` most similar to the question overall.

    Sentences stay in their original order inside a hit; a hit with none of them gets "" (and is left out of the
    prompt). Small models copy facts far more reliably from a short, relevant context than from whole chunks.
    """
    split = [sentences(h.text) for h in hits]
    flat = [(i, j) for i, ss in enumerate(split) for j in range(len(ss))]
    if not flat:
        return ["" for _ in hits]
    scores = similarity(question, [split[i][j] for i, j in flat])
    best = sorted(range(len(flat)), key=lambda n: -float(scores[n]))[:keep]
    chosen: list[list[int]] = [[] for _ in hits]
    for n in best:
        chosen[flat[n][0]].append(flat[n][1])
    return [" ".join(split[i][j] for j in sorted(js)) for i, js in enumerate(chosen)]


def pack(
    question: str,
    hits: Sequence[Hit],
    count: Callable[[Messages], int],
    budget: int,
    excerpts: Sequence[str] | None = None,
    system: str = SYSTEM_PROMPT,
) -> PackedPrompt:
    """Add ``hits`` (with their ``excerpts``, default their whole text) in rank order while the prompt stays
    within ``budget`` tokens.

    A hit that does not fit is dropped and later (shorter) ones are still tried; if not even the best one fits,
    it is cut to fit, so a question always gets its best source. Hits with an empty excerpt are dropped.
    ``system`` is the system prompt (each answer mode has its own).
    """
    texts = list(excerpts) if excerpts is not None else [h.text for h in hits]
    chosen: list[Hit] = []
    shown: list[str] = []
    dropped: list[Hit] = []
    unfocused: list[Hit] = []

    def messages(sources: Sequence[Hit], shown: Sequence[str] | None = None) -> Messages:
        return build_messages(question, sources, shown, system)

    tokens = count(messages([]))
    for hit, text in zip(hits, texts, strict=True):
        if not text.strip():
            dropped.append(hit)
            unfocused.append(hit)
            continue
        n = count(messages([*chosen, hit], [*shown, text]))
        if n <= budget:
            chosen.append(hit)
            shown.append(text)
            tokens = n
            continue
        cut = _cut_to_fit(hit, text, count, budget, messages) if not chosen else ""
        if cut:
            chosen.append(hit)
            shown.append(cut)
            tokens = count(messages(chosen, shown))
        else:
            dropped.append(hit)
    return PackedPrompt(messages(chosen, shown), chosen, shown, dropped, tokens, unfocused)


def _cut_to_fit(
    hit: Hit,
    text: str,
    count: Callable[[Messages], int],
    budget: int,
    messages: Callable[[Sequence[Hit], Sequence[str]], Messages],
) -> str:
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits
        mid = (lo + hi + 1) // 2
        if count(messages([hit], [text[:mid]])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]
