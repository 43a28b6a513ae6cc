"""How tokens are chosen, and the one decode loop every backend (and ``rag explain``) runs.

A backend is a :class:`DecodingSession`: it turns token ids into next-token logits, keeping its own KV cache. The
loop in :func:`decode` does everything else (repetition rules, the caller's logits processors, sampling, stop
strings, streaming text) the same way for all of them. Only beam search goes through transformers' ``generate``
(rag/models/generator.py), because it cannot be streamed token by token.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator as PyGenerator
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rag.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Decoding:
    """How tokens are chosen. The default is greedy: the most likely token each step (best for facts)."""

    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy; > 0: sample from softmax(logits / temperature)
    top_k: int | None = None  # sampling: keep the k most likely tokens
    top_p: float | None = None  # sampling: keep the smallest set whose probability reaches p
    num_beams: int = 1  # > 1: beam search (no token streaming)
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()  # generation ends after any of these strings (which stay in the output)

    def validate(self) -> None:
        """Raise :class:`~rag.errors.ConfigError` naming the flag of the first invalid setting."""

        def bad(flag: str, why: str) -> ConfigError:
            return ConfigError(f"--{flag}: {why}")

        for flag, value in (
            ("temperature", self.temperature),
            ("top-p", self.top_p),
            ("repetition-penalty", self.repetition_penalty),
        ):
            if value is not None and not math.isfinite(value):
                raise bad(flag, f"{value} is not a number")
        if self.max_new_tokens < 1:
            raise bad("max-new-tokens", "must be at least 1")
        if self.temperature < 0:
            raise bad("temperature", "must be >= 0 (0 is greedy)")
        if self.top_k is not None and self.top_k < 1:
            raise bad("top-k", "must be at least 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise bad("top-p", "must be in (0, 1]")
        if (self.top_k is not None or self.top_p is not None) and self.temperature == 0:
            raise bad("top-k/--top-p", "only apply when sampling; add --temperature (e.g. 0.7)")
        if self.num_beams < 1:
            raise bad("num-beams", "must be at least 1")
        if self.num_beams > 1 and self.temperature > 0:
            raise bad("num-beams", "beam search is deterministic; drop --temperature or use --num-beams 1")
        if self.repetition_penalty <= 0:
            raise bad("repetition-penalty", "must be > 0 (1.0 is none)")
        if self.no_repeat_ngram_size < 0:
            raise bad("no-repeat-ngram-size", "must be >= 0")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise bad("seed", f"{self.seed} is out of range; give a whole number from 0 to {2**63 - 1}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def generate_kwargs(self) -> dict[str, Any]:
        """The same settings as keyword arguments of transformers' ``generate``."""
        kw: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "repetition_penalty": self.repetition_penalty,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
        }
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=self.temperature, top_k=self.top_k or 0, top_p=self.top_p or 1.0)
        else:
            # None overrides sampling values a model's generation_config may carry (and the warnings they cause).
            kw.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        return kw


@dataclass(frozen=True)
class GenerationStats:
    """What one decoding run did: its prompt and answer token counts, timings, and the answer's token ids."""

    prompt_tokens: int
    new_tokens: int
    first_token_s: float
    seconds: float
    token_ids: tuple[int, ...] = ()
    kept_tokens: int | None = None  # a quote cut after this many of ``token_ids`` (None: all kept)


class DecodingSession(Protocol):
    """A model's forward pass with its KV cache, one sequence at a time.

    ``only``: the token ids that can be chosen next (a quote's); a backend may compute their logits alone and
    leave the others -inf, or ignore it and compute all.
    """

    def prefill(self, ids: list[int], max_len: int, only: list[int] | None = None) -> torch.Tensor:
        """Logits (vocab,) after the prompt ``ids``; the cache is sized for ``max_len`` positions."""
        ...

    def step(self, token: int, only: list[int] | None = None) -> torch.Tensor:
        """Logits (vocab,) after appending ``token`` to the sequence."""
        ...


def drain(stream: PyGenerator[str, None, Any]) -> tuple[str, Any]:
    """Run a text stream (such as :meth:`Generator.stream`) to its end: all its text, and its return value
    (the :class:`GenerationStats`)."""
    pieces = []
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as stop:
            return "".join(pieces), stop.value


def processors(decoding: Decoding, extra: Sequence[Any]) -> list[Any]:
    """The score transforms ``model.generate`` would apply for ``decoding``, in its order: repetition rules, the
    caller's processors, then temperature, top-k and top-p when sampling. transformers' own classes, so the loop
    here and ``generate`` treat scores identically."""
    if decoding.repetition_penalty == 1.0 and decoding.no_repeat_ngram_size == 0 and decoding.temperature == 0:
        return [*extra]  # greedy and plain: no need to import transformers' generation machinery
    from transformers import generation as g

    chain: list[Any] = []
    if decoding.repetition_penalty != 1.0:
        chain.append(g.RepetitionPenaltyLogitsProcessor(decoding.repetition_penalty))
    if decoding.no_repeat_ngram_size > 0:
        chain.append(g.NoRepeatNGramLogitsProcessor(decoding.no_repeat_ngram_size))
    chain.extend(extra)
    if decoding.temperature > 0:
        if decoding.temperature != 1.0:
            chain.append(g.TemperatureLogitsWarper(decoding.temperature))
        if decoding.top_k:
            chain.append(g.TopKLogitsWarper(decoding.top_k))
        if decoding.top_p is not None and decoding.top_p < 1.0:
            chain.append(g.TopPLogitsWarper(decoding.top_p))
    return chain


def _candidates(extra: Sequence[Any], seq: torch.Tensor) -> list[int] | None:
    """The token ids the caller's processors admit next, when one of them can say (a quote constraint can)."""
    for proc in extra:
        admit = getattr(proc, "candidates", None)
        if admit is not None:
            return admit(seq)
    return None


def choose(scores: torch.Tensor, sample: bool) -> int:
    """The next token from (1, vocab) scores: the most likely one, or a draw from their softmax."""
    import torch

    if sample:
        return int(torch.multinomial(torch.softmax(scores.float(), -1), 1)[0, 0])
    return int(scores.argmax(-1)[0])


def decode(
    session: DecodingSession,
    ids: list[int],
    decoding: Decoding,
    tokenizer: Any,
    eos: set[int],
    extra: Sequence[Any] = (),
    stopping: Sequence[Any] = (),
) -> PyGenerator[str, None, GenerationStats]:
    """Decode after the prompt ``ids``, yielding text as it forms; the return value holds the statistics.

    ``extra``: logits processors ``(input_ids, scores) -> scores`` applied after the repetition rules and before
    sampling; ``stopping``: callables ``(input_ids, scores) -> bool`` that end the answer when true. It runs in the
    caller's thread: Ctrl-C lands between two tokens, and a consumer that stops iterating stops the decoding.
    """
    import torch

    if decoding.seed is not None:
        torch.manual_seed(decoding.seed)
    chain = processors(decoding, extra)
    started = time.perf_counter()
    seq = torch.tensor([ids])
    logits = session.prefill(ids, len(ids) + decoding.max_new_tokens, _candidates(extra, seq))
    new: list[int] = []
    shown = ""
    first: float | None = None
    while True:
        with torch.inference_mode():  # processors may write into the scores (inference tensors) in place
            scores = logits[None, :]
            for proc in chain:
                scores = proc(seq, scores)
            token = choose(scores, decoding.temperature > 0)
        if first is None:
            first = time.perf_counter() - started
        if token in eos:
            break
        new.append(token)
        seq = torch.cat([seq, torch.tensor([[token]])], 1)
        text = tokenizer.decode(new, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # a character split across tokens: wait for its other bytes
            if len(text) > len(shown):
                yield text[len(shown) :]
            shown = text
        if len(new) >= decoding.max_new_tokens or any(stop in text for stop in decoding.stop):
            break  # a stop string stays in the output, as with generate(stop_strings=...)
        with torch.inference_mode():
            if any(bool(stop(seq, scores)) for stop in stopping):
                break
        logits = session.step(token, _candidates(extra, seq))
    text = tokenizer.decode(new, skip_special_tokens=True)
    if len(text) > len(shown):
        yield text[len(shown) :]
    elapsed = time.perf_counter() - started
    return GenerationStats(len(ids), len(new), first if first is not None else elapsed, elapsed, tuple(new))
