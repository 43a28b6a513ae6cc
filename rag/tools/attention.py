"""Attention over sources: how much each answer token attended to each source block of the prompt.

For answer token t, the attention weights of the query that produced t (averaged over heads, and layers unless one
layer is asked for) are summed over the prompt tokens of each source block (``[n] file (location)`` line and its
text). A source's *share* is that sum divided by the sum over all source blocks, so shares sum to 1 over the
sources; the rest of the attention (system prompt, question, chat template, the answer so far) is reported next to
it as ``other_prompt`` and ``answer_so_far``, never hidden in the shares.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Attention:
    """Attention of each answer token over the sources; see the module docstring for the definitions."""

    layers: int
    heads: int
    answer_tokens: list[str]
    shares: list[list[float]]  # [answer token][source], mean over layers and heads; each row sums to 1
    source_mass: list[float]  # per answer token: raw attention on all source blocks together
    other_prompt: list[float]  # per answer token: raw attention on prompt tokens outside the sources
    answer_so_far: list[float]  # per answer token: raw attention on the answer generated before it
    answer_share: list[float]  # per source over the whole answer: mean of the rows of ``shares``
    layer_answer_share: list[list[float]]  # [layer][source], the same for each layer alone
    # [layer, answer token, position] attention (mean over heads) for heatmaps; not part of the JSON.
    weights: np.ndarray | None = field(default=None, repr=False)
    prompt_tokens: int = 0
    # Prompt token positions of each source block, and those tokens' text (heatmap labels).
    source_positions: list[list[int]] = field(default_factory=list, repr=False)
    context_tokens: list[list[str]] = field(default_factory=list, repr=False)

    def layer_shares(self, layer: int) -> list[list[float]]:
        """[answer token][source] shares from layer ``layer`` (0-based) alone."""
        return _shares(self.weights[layer], self.source_positions)[0].tolist()

    def context(self, source: int, layer: int | None = None) -> np.ndarray:
        """[answer token, token of source ``source`` (1-based)] attention, mean over layers unless ``layer``."""
        w = self.weights.mean(axis=0) if layer is None else self.weights[layer]
        return w[:, self.source_positions[source - 1]]

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("weights", "source_positions", "context_tokens")}
        return d


def weights_matrix(rows: list[np.ndarray], prompt_tokens: int, layers: int) -> np.ndarray:
    """[layer, answer token, position] from one [layer, positions] row per answer token (each row one longer)."""
    import numpy as np

    weights = np.zeros((layers, len(rows), prompt_tokens + len(rows)), dtype=np.float32)
    for t, row in enumerate(rows):
        weights[:, t, : row.shape[1]] = row
    return weights


def positions(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[list[int]]:
    """The token positions inside each character span: a token belongs to the block its first character lies in
    (byte-level BPE tokens carry the leading space)."""
    out: list[list[int]] = [[] for _ in spans]
    for i, (s, e) in enumerate(offsets):
        if e <= s:
            continue
        for n, (a, b) in enumerate(spans):
            if a <= s < b:
                out[n].append(i)
                break
    return out


def _shares(weights: np.ndarray, positions: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """[answer token, source] shares (rows sum to 1) and the raw mass on all sources, from [token, position]."""
    import numpy as np

    if not positions:
        return np.zeros((len(weights), 0)), np.zeros(len(weights))
    mass = np.stack([weights[:, p].sum(axis=1) for p in positions], axis=1)
    total = mass.sum(axis=1)
    shares = np.divide(mass, total[:, None], out=np.zeros_like(mass), where=total[:, None] > 0)
    return shares, total


def attention_over_sources(
    weights: np.ndarray, positions: list[list[int]], prompt_tokens: int, answer_tokens: list[str], heads: int
) -> Attention:
    mean = weights.mean(axis=0)
    shares, source_mass = _shares(mean, positions)
    in_sources = sorted({p for ps in positions for p in ps})
    layer_answer = [_shares(w, positions)[0].mean(axis=0).tolist() if len(w) else [] for w in weights]
    return Attention(
        layers=int(weights.shape[0]),
        heads=heads,
        answer_tokens=answer_tokens,
        shares=shares.tolist(),
        source_mass=source_mass.tolist(),
        other_prompt=(mean[:, :prompt_tokens].sum(axis=1) - mean[:, in_sources].sum(axis=1)).tolist(),
        answer_so_far=mean[:, prompt_tokens:].sum(axis=1).tolist(),
        answer_share=shares.mean(axis=0).tolist() if len(shares) else [0.0] * len(positions),
        layer_answer_share=layer_answer,
        weights=weights,
        prompt_tokens=prompt_tokens,
        source_positions=positions,
    )
