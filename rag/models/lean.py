"""A lean decoder for Llama-architecture models (SmolLM2, Llama, Qwen2, ...): the forward pass in plain torch.

Why: at 135M parameters a decode step does little arithmetic, so per-token overhead decides the speed.
transformers' forward builds masks, position tensors, cache objects and output records on every step, and its
``generate`` adds a processor pipeline around it. Here the weights are fused (q/k/v in one matrix, gate/up in
another), the KV cache is preallocated once per answer (a static cache: no concatenation per token), decode steps
need no mask, and the linear layers can be int8 or bf16 (the residual stream, norms and attention stay fp32):

- "fp32" reproduces transformers' greedy tokens exactly.
- "int8": every layer's matrices in int8 with one scale per output row, and each input quantised per call with
  one scale per token, multiplied by ``torch._int_mm``. It reads a quarter of fp32's bytes per decode step and
  prefills three times faster on an AVX512-VNNI CPU. The weights need no packing, so they are used memory-mapped as
  they lie in the kept file and a later process starts at once (fbgemm's dynamic quantisation packed them for 11 s
  per process for a 1.5B model, and its one scale per activation matrix changed answers). The output projection,
  which picks the token, stays fp32. Greedy answers on the XQuAD tuning half were fp32's 15 times in 16
  (docs/quality.md).
- "mixed": int8 but the MLP's down projection, whose input (SiLU(gate) * up) carries the outlier activations; it
  gave fp32's answer 16 times in 16, at a quarter more time per answer.
- "int8-head": only the output projection in int8, the largest matrix of a small model.
- "bf16": bf16 weights and matrix products. Fast only on a CPU whose bf16 units are (oneDNN's bf16 kernels ran
  five times faster than fp32 on one 2-core machine here and slower than fp32 on another).

When the caller knows which few tokens may come next (a quote), only their rows of the output projection are
computed.

The fused weights are kept in a file per stored type (:func:`save`, :func:`load`, memory-mapped; as int8 or bf16
for those precisions, so nothing is converted at load), so a later process builds the decoder without loading the
transformers model at all: importing its model code alone costs seconds.

Only plain Llama and Qwen2 models qualify (see :func:`supports`); anything else keeps transformers' own forward.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from rag.config import PRECISIONS


def supports(cfg: Any) -> bool:
    """True when a model of this config is one the lean forward reproduces exactly: a Llama (no biases) or a
    Qwen2 (biases on q/k/v only, no sliding window), with default RoPE and SiLU."""
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    kind = getattr(cfg, "model_type", None)
    plain = (
        rope.get("rope_type", "default") == "default"
        and not getattr(cfg, "mlp_bias", False)
        and getattr(cfg, "hidden_act", "silu") == "silu"
    )
    if kind == "llama":
        return plain and not getattr(cfg, "attention_bias", False)
    return kind == "qwen2" and plain and not getattr(cfg, "use_sliding_window", False)


@dataclass(frozen=True)
class Shape:
    """What the forward pass needs to know of a model besides its weights."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    rope_theta: float
    max_positions: int

    @classmethod
    def of(cls, cfg: Any) -> Shape:
        heads = int(cfg.num_attention_heads)
        rope = getattr(cfg, "rope_parameters", None) or {}
        return cls(
            layers=int(cfg.num_hidden_layers),
            heads=heads,
            kv_heads=int(getattr(cfg, "num_key_value_heads", None) or heads),
            head_dim=int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads),
            eps=float(getattr(cfg, "rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta") or getattr(cfg, "rope_theta", 10000.0)),
            max_positions=int(getattr(cfg, "max_position_embeddings", 2048) or 2048),
        )


def fuse(state: dict[str, torch.Tensor], shape: Shape) -> dict[str, torch.Tensor]:
    """A transformers state dict rearranged for the lean forward, fp32: q/k/v in one matrix, gate/up in another.

    ``head`` is absent when the output projection is the (tied) embedding.
    """
    sd = {k: v.detach().float() for k, v in state.items()}
    out = {"embed": sd["model.embed_tokens.weight"], "norm": sd["model.norm.weight"]}
    head = sd.get("lm_head.weight")
    if head is not None and head.data_ptr() != out["embed"].data_ptr() and not torch.equal(head, out["embed"]):
        out["head"] = head
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        out[f"{i}.ln1"] = sd[p + "input_layernorm.weight"]
        out[f"{i}.qkv"] = torch.cat([sd[p + f"self_attn.{n}_proj.weight"] for n in "qkv"])
        biases = [sd.get(p + f"self_attn.{n}_proj.bias") for n in "qkv"]  # Qwen2 has them
        if all(b is not None for b in biases):
            out[f"{i}.qkv_bias"] = torch.cat(biases)  # type: ignore[arg-type]
        out[f"{i}.o"] = sd[p + "self_attn.o_proj.weight"]
        out[f"{i}.ln2"] = sd[p + "post_attention_layernorm.weight"]
        out[f"{i}.gate_up"] = torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]])
        out[f"{i}.down"] = sd[p + "mlp.down_proj.weight"]
    return out


def _matrices(shape: Shape, precision: str) -> list[str]:
    """The fused matrices a decoder of ``precision`` keeps in int8 (int8-head quantises its one at load)."""
    kinds = {"int8": ("qkv", "o", "gate_up", "down"), "mixed": ("qkv", "o", "gate_up")}.get(precision, ())
    return [f"{i}.{kind}" for i in range(shape.layers) for kind in kinds]


def stored(weights: dict[str, torch.Tensor], shape: Shape, precision: str) -> dict[str, torch.Tensor]:
    """Fused weights as a decoder of ``precision`` keeps them, so that loading converts nothing: bf16 matrices
    for bf16 (vectors stay fp32); int8 matrices with their ``.scale`` rows for int8 and mixed; else fp32."""
    if precision == "bf16":
        return {k: v.to(torch.bfloat16) if v.dim() == 2 else v for k, v in weights.items()}
    out = dict(weights)
    for key in _matrices(shape, precision):
        out[key], out[f"{key}.scale"] = quantize(out[key])
    return out


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per output row: ``(int8 matrix, fp32 scales)``."""
    w = weight.float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def save(path: Path, shape: Shape, weights: dict[str, torch.Tensor]) -> None:
    """Write fused weights so that a later process skips loading the transformers model (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        torch.save({"shape": asdict(shape), "weights": {k: v.contiguous() for k, v in weights.items()}}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load(path: Path) -> tuple[Shape, dict[str, torch.Tensor]]:
    """Fused weights written by :func:`save`, memory-mapped (no copy is read until a layer needs it)."""
    data = torch.load(path, mmap=True, weights_only=True)
    return Shape(**data["shape"]), data["weights"]


class _Bf16Linear(nn.Module):
    """A linear layer with bf16 weights: its input is rounded to bf16 and its output returned in fp32, so the
    residual stream, the norms and the attention keep fp32 while the matrix products (nearly all of the work)
    run in bf16."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = weight.to(torch.bfloat16).contiguous()
        self.bias = None if bias is None else bias.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.to(torch.bfloat16), self.weight).float()
        return y if self.bias is None else y + self.bias


class _Int8Linear(nn.Module):
    """A linear layer with int8 weights (one scale per output row) whose input is quantised per call, one scale
    per token: an int8 matrix product (``torch._int_mm``, no weight packing, so a memory-mapped matrix is used as
    it lies on disk), rescaled to fp32."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight_t = weight.t()  # (in, out): the layout _int_mm reads without a copy
        self.scale = scale.float()
        self.bias = None if bias is None else bias.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_scale = (x.abs().amax(dim=-1, keepdim=True) / 127).clamp(min=torch.finfo(torch.float32).tiny)
        xq = torch.round(x / x_scale).to(torch.int8)
        y = torch._int_mm(xq, self.weight_t).float() * (x_scale * self.scale)
        return y if self.bias is None else y + self.bias


def _linear(
    weight: torch.Tensor, precision: str, bias: torch.Tensor | None = None, scale: torch.Tensor | None = None
) -> nn.Module:
    """A linear layer of ``precision`` ("fp32", "bf16" or "int8"); an int8 ``weight`` comes with its ``scale``."""
    if precision == "bf16":
        return _Bf16Linear(weight, bias)
    if precision == "int8":
        if scale is None:
            weight, scale = quantize(weight)
        return _Int8Linear(weight, scale, bias)
    # On the meta device: nn.Linear would otherwise fill a fresh matrix with random numbers only to be replaced.
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    layer.weight = nn.Parameter(weight.float().contiguous(), requires_grad=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias.float().contiguous(), requires_grad=False)
    return layer


class LeanLlama:
    """The model's weights rearranged for decoding one sequence, plus its preallocated KV cache."""

    def __init__(self, shape: Shape, weights: dict[str, torch.Tensor], precision: str = "fp32") -> None:
        if precision not in PRECISIONS or precision == "auto":
            raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.n_heads, self.n_kv, self.head_dim = shape.heads, shape.kv_heads, shape.head_dim
        self.eps = shape.eps
        self.max_positions = shape.max_positions
        self.embed = weights["embed"]
        self.norm = weights["norm"].float()
        # The output projection, for the logits of a few tokens (see forward's ``only``): fp32, or bf16 in bf16.
        self.head_weight = weights.get("head", self.embed)
        # The output projection chooses the token: it stays fp32 but in int8-head (and bf16).
        head = {"int8-head": "int8", "bf16": "bf16"}.get(precision, "fp32")
        body = {"int8-head": "fp32", "mixed": "int8"}.get(precision, precision)
        down = "fp32" if precision == "mixed" else body

        def linear(key: str, kind: str, bias: torch.Tensor | None = None) -> nn.Module:
            return _linear(weights[key], kind, bias, weights.get(f"{key}.scale"))

        def layer(i: int) -> tuple[Any, ...]:
            return (
                weights[f"{i}.ln1"].float(),
                linear(f"{i}.qkv", body, weights.get(f"{i}.qkv_bias")),
                linear(f"{i}.o", body),
                weights[f"{i}.ln2"].float(),
                linear(f"{i}.gate_up", body),
                linear(f"{i}.down", down),
            )

        self.lm_head = _linear(self.head_weight, head)
        self.layers = [layer(i) for i in range(shape.layers)]
        half = self.head_dim // 2
        self.inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, half, dtype=torch.float32) / half))
        self.cache_k: torch.Tensor | None = None
        self.cache_v: torch.Tensor | None = None

    @classmethod
    def from_model(cls, model: Any, precision: str = "fp32") -> LeanLlama:
        """The lean copy of a loaded transformers model."""
        shape = Shape.of(model.config)
        return cls(shape, fuse(model.state_dict(), shape), precision)

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * weight

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], -1)  # (t, head_dim), HF's layout: halves, not interleaved pairs
        return emb.cos(), emb.sin()

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def reset(self, max_len: int) -> None:
        """Allocate (or reuse) a cache for ``max_len`` positions."""
        shape = (len(self.layers), self.n_kv, max_len, self.head_dim)
        if self.cache_k is None or self.cache_k.shape[2] < max_len:
            self.cache_k = torch.zeros(shape)
            self.cache_v = torch.zeros(shape)

    @torch.inference_mode()
    def forward(self, ids: list[int], start: int, only: list[int] | None = None) -> torch.Tensor:
        """Logits (vocab,) for the position after ``ids``, which sit at positions ``start``.. of the sequence.

        Positions before ``start`` must already be in the cache (from earlier calls). ``only``: compute the
        logits of these token ids alone (the rest are -inf); a quote admits a handful of tokens per step, and the
        full output projection is the largest matrix of a small model.
        """
        assert self.cache_k is not None and self.cache_v is not None, "call reset() first"
        t = len(ids)
        end = start + t
        h = self.embed[torch.tensor(ids)].float()  # (t, hidden)
        cos, sin = self._rope(torch.arange(start, end))
        nh, nkv, hd = self.n_heads, self.n_kv, self.head_dim
        scale = 1.0 / math.sqrt(hd)
        for i, (ln1, qkv, o, ln2, gate_up, down) in enumerate(self.layers):
            x = qkv(self._rms(h, ln1))
            q = x[:, : nh * hd].view(t, nh, hd).transpose(0, 1)
            k = x[:, nh * hd : (nh + nkv) * hd].view(t, nkv, hd).transpose(0, 1)
            v = x[:, (nh + nkv) * hd :].view(t, nkv, hd).transpose(0, 1)
            q = self._rotate(q, cos, sin)
            self.cache_k[i, :, start:end] = self._rotate(k, cos, sin)
            self.cache_v[i, :, start:end] = v
            # With a batch dimension torch takes its fused CPU attention kernel; without one, the unfused
            # fallback, several times slower (bench/RESULTS.md).
            q, keys, values = q[None], self.cache_k[i, None, :, :end], self.cache_v[i, None, :, :end]
            # One new token sees every cached position: no mask. A prompt block needs the causal one, offset by
            # what the cache already holds.
            if t == 1:
                a = F.scaled_dot_product_attention(q, keys, values, scale=scale, enable_gqa=True)
            elif start == 0:
                a = F.scaled_dot_product_attention(q, keys, values, is_causal=True, scale=scale, enable_gqa=True)
            else:
                mask = torch.ones(t, end, dtype=torch.bool).tril(diagonal=start)
                a = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale, enable_gqa=True)
            h = h + o(a[0].transpose(0, 1).reshape(t, nh * hd))
            gu = gate_up(self._rms(h, ln2))
            g, u = gu.chunk(2, dim=-1)
            h = h + down(F.silu(g) * u)
        last = self._rms(h[-1:], self.norm)
        if only is None:
            return self.lm_head(last)[0]
        logits = torch.full((self.head_weight.shape[0],), float("-inf"))
        index = torch.tensor(only, dtype=torch.long)
        logits[index] = (self.head_weight[index] @ last[0].to(self.head_weight.dtype)).float()
        return logits


class PrefixCache:
    """A :class:`LeanLlama` plus the token ids whose keys and values its cache holds.

    Consecutive prompts share their start (the system prompt, the question's template): only the part after the
    longest common prefix is computed again.
    """

    def __init__(self, lean: LeanLlama) -> None:
        self.lean = lean
        self.ids: list[int] = []

    def prefill(self, ids: list[int], max_len: int, only: list[int] | None = None) -> torch.Tensor:
        """Logits after ``ids``, computing only what the cache does not already hold."""
        if self.lean.cache_k is None or self.lean.cache_k.shape[2] < max_len:
            self.lean.reset(max_len)
            self.ids = []
        same = 0
        for a, b in zip(self.ids, ids[:-1], strict=False):  # at least the last token is always recomputed
            if a != b:
                break
            same += 1
        logits = self.lean.forward(ids[same:], same, only)
        self.ids = list(ids)
        return logits

    def step(self, token: int, only: list[int] | None = None) -> torch.Tensor:
        logits = self.lean.forward([token], len(self.ids), only)
        self.ids.append(token)
        return logits
