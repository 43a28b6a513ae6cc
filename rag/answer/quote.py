"""Grounded decoding: a logits processor that lets a causal LM write only verbatim quotes from its sources.

Matching happens on bytes, not token ids: the same text tokenizes differently at a span start than mid-sentence
(" Paris" vs "Paris", or split differently after punctuation), so a token-id trie over the sources would miss
quotes the model can legitimately produce. Instead every vocabulary entry is mapped to the bytes it decodes to,
and a token is admitted when its bytes continue the quote at some position where the quote so far occurs in the
sources, and end where one of the source's own tokens ends (tokenised once per answer). The answer is therefore
a substring of one source segment whatever tokens the model picks.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

# Segments are joined with a byte no token contains, so a quote never runs from one segment into the next.
_SEPARATOR = b"\x00"
_METASPACE_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _byte_level_table() -> dict[str, int]:
    """GPT-2's printable stand-ins for raw bytes (``Ġ`` is a space), inverted: character -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def token_bytes(tokenizer: Any) -> list[bytes | None]:
    """The bytes each token id stands for; ``None`` for special tokens and ids that decode to nothing.

    Handles byte-level BPE (GPT-2, Llama 3, SmolLM, Qwen...), SentencePiece's ``▁`` word marker with ``<0xNN>``
    byte tokens (Llama 2, Mistral...), and falls back to decoding each id on its own.
    """
    size = len(tokenizer)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    table = _byte_level_table()
    byte_level = sum(1 for p in pieces[:5000] if p and p.startswith("Ġ")) > 50
    metaspace = sum(1 for p in pieces[:5000] if p and p.startswith("▁")) > 50
    out: list[bytes | None] = []
    for i, piece in enumerate(pieces):
        if i in special or not piece:
            out.append(None)
            continue
        data: bytes | None
        if byte_level:
            try:
                data = bytes(table[c] for c in piece)
            except KeyError:  # an added token written in plain text
                data = piece.encode("utf-8")
        elif metaspace:
            m = _METASPACE_BYTE.match(piece)
            data = bytes([int(m.group(1), 16)]) if m else piece.replace("▁", " ").encode("utf-8")
        else:
            text = tokenizer.decode([i])
            data = None if "\ufffd" in text else text.encode("utf-8")
        out.append(data or None)
    return out


class _Vocabulary:
    """Which token ids stand for a given byte string."""

    def __init__(self, tokenizer: Any) -> None:
        self.bytes = token_bytes(tokenizer)
        self.ids: dict[bytes, list[int]] = {}
        for i, data in enumerate(self.bytes):
            if data is not None and _SEPARATOR not in data:
                self.ids.setdefault(data, []).append(i)
        self.longest = max((len(d) for d in self.ids), default=0)

    def spelling(self, text: bytes, start: int, ends: Iterable[int], into: set[int]) -> None:
        """Add to ``into`` every token id whose bytes are ``text[start:end]`` for one of ``ends``."""
        for end in ends:
            into.update(self.ids.get(text[start:end], ()))


@lru_cache(maxsize=4)
def _vocabulary(tokenizer: Any) -> _Vocabulary:
    # A dict over the vocabulary, built once per tokenizer (a tokenizer lives as long as its Generator).
    return _Vocabulary(tokenizer)


def _token_ends(tokenizer: Any, segments: Sequence[str], starts: Sequence[int], text: bytes) -> list[int]:
    """Byte offsets, in the joined segments ``text``, where the tokenizer's own tokens end: of each segment as
    it reads in the source, and of each word a quote may start at (``starts``) as it is written at the start of
    an answer, where it has no leading space and so often splits differently ("Ari" vs " Ari")."""
    ends: set[int] = set()
    base = 0
    for seg in segments:
        ends.update(base + e for e in _char_ends(tokenizer, seg))
        base += len(seg.encode("utf-8")) + len(_SEPARATOR)
    for p in starts:
        ends.update(p + e for e in _char_ends(tokenizer, _word_at(text, p)))
    ends.update(i for i, b in enumerate(text) if b == _SEPARATOR[0])  # each segment's end
    ends.add(len(text))
    return sorted(ends)


def _char_ends(tokenizer: Any, text: str) -> list[int]:
    """Byte offsets in ``text`` where its tokens end (the tokenizer reports characters)."""
    byte_at = [0]
    for ch in text:
        byte_at.append(byte_at[-1] + len(ch.encode("utf-8")))
    spans = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [byte_at[end] for _, end in spans]


def _is_word_byte(b: int) -> bool:
    # Letters, digits and every byte of a multi-byte UTF-8 character (accented letters are part of words).
    return chr(b).isalnum() or b >= 0x80


def _word_at(text: bytes, start: int) -> str:
    end = start
    while end < len(text) and _is_word_byte(text[end]):
        end += 1
    return text[start:end].decode("utf-8", errors="replace")


@dataclass
class QuoteConstraint:
    """A ``transformers`` logits processor: generation may only copy a span of ``segments``, starting at a word.

    The model's own likelihood chooses which span; it ends with the end-of-sequence token, which is admitted
    only where the quote ends on a word boundary (so it never stops mid-word), and forced when the quote
    cannot continue. Use ``QuoteConstraint.build(tokenizer, segments)``.
    """

    vocab: _Vocabulary
    text: bytes  # the segments, UTF-8, separated by _SEPARATOR
    starts: list[int]  # byte offsets where a quote may begin: the start of each word
    ends: list[int]  # byte offsets where the tokenizer's own tokens end (see _token_ends), ascending
    eos_ids: list[int]
    prompt_length: int | None = None
    # Per step: the end-of-sequence logit minus the best other admitted logit (None where the quote may not end);
    # the cut (best_step) is where this margin is highest.
    trace: list[float | None] = field(default_factory=list)
    written: list[int] | None = None  # the quote's tokens as of the last step (row 0)
    _memo: tuple[tuple[int, ...], set[int], bool] | None = None  # the last allowed() answer

    @classmethod
    def build(
        cls,
        tokenizer: Any,
        segments: Sequence[str],
        avoid: Collection[str] = (),
        start: Callable[[str], bool] | None = None,
    ) -> QuoteConstraint:
        """``avoid``: lower-case words a quote may not start with (the question's own words: an answer that
        begins by restating the question is long and scores badly; it may still contain them). ``start``: a
        test the first word must pass (e.g. "is a number" for "how many" questions). Either is dropped when
        no word of the segments would be left to start at."""
        text = _SEPARATOR.join(s.encode("utf-8") for s in segments)
        words = [i for i, b in enumerate(text) if _is_word_byte(b) and (i == 0 or not _is_word_byte(text[i - 1]))]
        words = words or [i for i, b in enumerate(text) if b != 0 and not chr(b).isspace()][:1]
        banned = {w.lower() for w in avoid}
        starts = [i for i in words if _word_at(text, i).lower() not in banned] or words
        if start is not None:
            starts = [i for i in starts if start(_word_at(text, i))] or starts
        eos = tokenizer.eos_token_id
        eos_ids = list(eos) if isinstance(eos, list | tuple) else [eos] if eos is not None else []
        ends = _token_ends(tokenizer, segments, starts, text)
        return cls(_vocabulary(tokenizer), text, starts, ends, eos_ids)

    def positions(self, new_tokens: Sequence[int]) -> list[int]:
        """Byte offsets just past each occurrence of the quote written so far (``new_tokens``)."""
        at = self.starts
        text = self.text
        for tok in new_tokens:
            data = self.vocab.bytes[tok] if 0 <= tok < len(self.vocab.bytes) else None
            if data is None:  # end of sequence (or padding after it): nothing more to match
                return []
            n = len(data)
            at = [p + n for p in at if text[p : p + n] == data]
        return at

    def allowed(self, new_tokens: Sequence[int]) -> tuple[set[int], bool]:
        """The token ids that continue the quote, and whether it may end here.

        Only tokens that end where one of the source's own tokens ends: a byte fragment (" ", "C", "urious") also
        spells the quote, but the model would never write it, so its score means little. When no token ends on
        such a boundary, any token that continues the quote is admitted.
        """
        key = tuple(new_tokens)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1], self._memo[2]
        at = self.positions(new_tokens)
        ids: set[int] = set()
        text, ends, longest = self.text, self.ends, self.vocab.longest
        for p in at:
            self.vocab.spelling(text, p, ends[bisect_right(ends, p) : bisect_right(ends, p + longest)], ids)
        if not ids:
            for p in at:
                self.vocab.spelling(text, p, range(p + 1, min(p + longest, len(text)) + 1), ids)
        may_end = bool(new_tokens) and any(p >= len(text) or not _is_word_byte(text[p]) for p in at)
        self._memo = (key, ids, may_end or not ids)
        return ids, may_end or not ids

    def candidates(self, input_ids: Any) -> list[int]:
        """The token ids that may come next after ``input_ids`` (1, length), end of sequence included: the
        decoder needs the logits of these alone."""
        if self.prompt_length is None:
            self.prompt_length = int(input_ids.shape[1])
        ids, may_end = self.allowed(input_ids[0, self.prompt_length :].tolist())
        return sorted(ids | set(self.eos_ids)) if may_end else sorted(ids)

    def best_step(self) -> int:
        """How many written tokens the quote keeps: the step with the highest end-of-sequence margin. A greedy
        run that ended by itself ends there."""
        trace, written = self.trace, self.written or []
        best: tuple[float, int] | None = None
        for step in range(1, min(len(trace), len(written) + 1)):
            margin = trace[step]
            if margin is not None and (best is None or margin > best[0]):
                best = (margin, step)
        return best[1] if best else len(written)

    def best_end(self) -> str:
        """The quote cut where the model most wanted to end it: the first :meth:`best_step` tokens, as text."""
        tokens = (self.written or [])[: self.best_step()]
        data = b"".join(self.vocab.bytes[t] or b"" for t in tokens)
        return data.decode("utf-8", errors="ignore").strip()

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.prompt_length is None:  # first call: everything so far is the prompt
            self.prompt_length = int(input_ids.shape[1])
        mask = torch.full_like(scores, float("-inf"))
        for row in range(input_ids.shape[0]):
            new = input_ids[row, self.prompt_length :].tolist()
            if row == 0:
                self.written = new
            ids, may_end = self.allowed(new)
            keep = [i for i in ids if i < scores.shape[1]]
            if keep:
                mask[row, keep] = 0.0
            if may_end and self.eos_ids:
                mask[row, self.eos_ids] = 0.0
                if row == 0:
                    best_other = float(scores[row, keep].max()) if keep else float("-inf")
                    self.trace.append(float(scores[row, self.eos_ids].max()) - best_other)
            elif row == 0:
                self.trace.append(None)
        return scores + mask
