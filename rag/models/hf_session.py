"""transformers' own forward pass as a :class:`~rag.models.decoding.DecodingSession`.

It serves models the lean decoder does not cover, and ``rag explain``, which asks it to record what each decoding
step attended to: with ``record=True`` every logits it returns comes with the attention of the query that produced
them (mean over heads, per layer) and, for the first steps, the raw logits themselves.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch


class TransformersSession:
    """One sequence through ``model`` with transformers' KV cache."""

    def __init__(self, model: Any, *, record: bool = False, keep_logits: int = 0) -> None:
        self.model = model
        self.record = record
        self.keep_logits = keep_logits
        self._past: Any = None
        # With ``record``: [layers, positions] attention per returned logits, and the first raw logits.
        self.attention: list[np.ndarray] = []
        self.logits: list[torch.Tensor] = []

    def prefill(self, ids: list[int], max_len: int, only: list[int] | None = None) -> torch.Tensor:
        self.attention, self.logits, self._past = [], [], None
        if not self.record:
            return self._forward(ids)
        # Attention is recorded for the last prompt token only: all of the prompt's rows would be
        # layers x heads x prompt x prompt floats.
        if len(ids) > 1:
            self._forward(ids[:-1], record=False)
        return self._forward(ids[-1:])

    def step(self, token: int, only: list[int] | None = None) -> torch.Tensor:
        return self._forward([token])

    def _forward(self, ids: list[int], record: bool | None = None) -> torch.Tensor:
        import torch

        record = self.record if record is None else record
        # transformers is renaming ``past_key_values``; its warning would interleave with our output on stderr.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            out = self.model(
                input_ids=torch.tensor([ids]),
                past_key_values=self._past,
                use_cache=True,
                output_attentions=record,
                logits_to_keep=1,  # the next token's only: a whole prompt's would be prompt x vocabulary floats
            )
        self._past = out.past_key_values
        logits = out.logits[0, -1].float()
        if record:
            # [layers, heads, 1, positions] -> [layers, positions], mean over heads
            self.attention.append(torch.stack([a[0, :, -1, :] for a in out.attentions]).float().mean(dim=1).numpy())
            if len(self.logits) < self.keep_logits:
                self.logits.append(logits.clone())
        return logits


@contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Switch the loaded model to eager attention (the only kind that returns weights) and back."""
    before = getattr(model.config, "_attn_implementation", None)
    if before == "eager" or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)
