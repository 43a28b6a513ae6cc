"""All settings in one frozen dataclass.

Precedence: explicit argument (CLI flag) > environment variable (``RAG_<NAME>``) > default. Every default works
offline with the bundled models.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import ConfigError

BUNDLED_EMBEDDER = "all-MiniLM-L6-v2"
BUNDLED_GENERATOR = "SmolLM2-135M-Instruct"
ENV_PREFIX = "RAG_"
RETRIEVAL_MODES = ("dense", "bm25", "hybrid")


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag"


@dataclass(frozen=True)
class Config:
    """Effective settings. Build it with :meth:`Config.load` to apply the environment."""

    # Where the index lives: SQLite database plus FAISS vectors.
    index: Path = Path(".rag")
    # Bundled name, a sentence-transformers folder, or a hub id (the only case that touches the network).
    embed_model: str = BUNDLED_EMBEDDER
    # Bundled name, a causal-LM folder, a .gguf file, or a hub id.
    gen_model: str = BUNDLED_GENERATOR
    # Chunk size in the embedder's own tokens: MiniLM's whole window (256 minus [CLS]/[SEP]), so each vector sees
    # as much context as the model can read (SciFact: see README, rag eval). A hard guard re-cuts any chunk the
    # splitter's approximate merging leaves above the limit.
    chunk_tokens: int = 254
    chunk_overlap: int = 32
    # Sources retrieved for `ask` and hits shown by `search`.
    top_k: int = 5
    # Cosine below which a chunk is not considered relevant (MiniLM: unrelated text scores ~0.0-0.15).
    min_score: float = 0.2
    # Sentences (most similar to the question, across the retrieved chunks) the prompt shows; 0 shows whole
    # chunks. A 135M model states the fact far more often from a few relevant sentences than from five chunks.
    focus_sentences: int = 6
    # How `ask` answers: quote, auto, generate or extract (rag.modes). quote won on the XQuAD tuning half: the
    # best F1 of the modes within the time budget, and verbatim, so always supported (README has the numbers).
    answer_mode: str = "quote"
    # Prompt + answer token budget for the generator; smaller is faster on a CPU.
    context_tokens: int = 2048
    # Converted generator weights are cached here (GGUF dequantisation is slow, safetensors reload is fast).
    cache_dir: Path = field(default_factory=_default_cache_dir)
    # torch threads; 0 keeps torch's default (one per core).
    threads: int = 0
    # Retrieval for `search` and `ask`: dense (embeddings), bm25 (SQLite FTS5) or hybrid (both, fused by
    # weighted reciprocal rank fusion). Fusion settings were chosen on SciFact's train split (README: rag eval).
    retrieval_mode: str = "hybrid"
    # Plain RRF (k 60, equal weights). On SciFact train a BM25 weight of 1.5 scored ~0.01 nDCG@10 higher, and
    # rrf_k 10-80 and 50-400 candidates stayed within ~0.003 (scripts/tune_fusion.py); but with 1.5 the bundled
    # 135M generator stated fewer facts from the sources it was given (sample_docs easy questions: 6 of 10
    # instead of 7+), so `ask` keeps equal weights. Retrieval-only use can set RAG_BM25_WEIGHT=1.5.
    rrf_k: float = 60.0
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
    # How many chunks each retriever proposes before fusion, threshold and MMR.
    candidates: int = 100
    # Cross-encoder folder (or hub id) that reorders the top `rerank_candidates`; none is bundled.
    reranker: str | None = None
    rerank_candidates: int = 30
    # Maximal marginal relevance lambda (1: relevance only, lower: more diverse); unset: no MMR.
    mmr: float | None = None
    # Query embedding: "auto" runs an ONNX export of the embedder (made once at ingest, cached under cache_dir,
    # checked against sentence-transformers) when onnxruntime is installed, so `rag search` never loads torch;
    # "torch" always uses sentence-transformers.
    embed_runtime: str = "auto"
    # Generator backend: "auto" (the lean decoder for Llama models, else transformers), "lean", "transformers",
    # or "llamacpp" (optional, GGUF models; see rag/generate.py).
    gen_backend: str = "auto"
    # The lean decoder's linear layers (see rag/lean.py): "fp32" (transformers' exact numbers), "int8-head" (the
    # output projection in int8) or "int8" (all; fastest, but answers got worse: bench/RESULTS.md).
    gen_precision: str = "fp32"

    @classmethod
    def load(cls, **overrides: Any) -> Config:
        """Defaults, then ``RAG_*`` environment variables, then ``overrides`` (``None`` values are ignored).

        Raises :class:`ConfigError` for an unknown ``RAG_*`` variable or override, or a value of the wrong type.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in os.environ.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key[len(ENV_PREFIX) :].lower()
            if name not in fields:
                known = ", ".join(ENV_PREFIX + n.upper() for n in fields)
                raise ConfigError(f"unknown environment variable {key}; known: {known}")
            values[name] = _coerce(name, raw, fields[name].type, source=key)
        for name, value in overrides.items():
            if name not in fields:
                raise ConfigError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = _coerce(name, value, fields[name].type, source=f"--{name.replace('_', '-')}")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if self.chunk_tokens < 16:
            raise ConfigError(f"chunk_tokens={self.chunk_tokens} is too small; use 16 or more")
        if not 0 <= self.chunk_overlap < self.chunk_tokens:
            raise ConfigError(
                f"chunk_overlap={self.chunk_overlap} must be >= 0 and below chunk_tokens={self.chunk_tokens}"
            )
        if self.top_k < 1:
            raise ConfigError(f"top_k={self.top_k} must be at least 1")
        if self.focus_sentences < 0:
            raise ConfigError(f"focus_sentences={self.focus_sentences} must be >= 0 (0: whole chunks)")
        if self.embed_runtime not in ("auto", "torch"):
            raise ConfigError(f"embed_runtime={self.embed_runtime!r}: use auto or torch")
        from rag.generate import BACKENDS, PRECISIONS
        from rag.modes import ANSWER_MODES

        if self.gen_backend not in BACKENDS:
            raise ConfigError(f"gen_backend={self.gen_backend!r}: use one of {', '.join(BACKENDS)}")
        if self.gen_precision not in PRECISIONS:
            raise ConfigError(f"gen_precision={self.gen_precision!r}: use one of {', '.join(PRECISIONS)}")

        if self.answer_mode not in ANSWER_MODES:
            raise ConfigError(f"answer_mode={self.answer_mode!r}: use one of {', '.join(ANSWER_MODES)}")
        if self.context_tokens < 256:
            raise ConfigError(f"context_tokens={self.context_tokens} is too small; use 256 or more")
        if self.retrieval_mode not in RETRIEVAL_MODES:
            raise ConfigError(f"retrieval_mode={self.retrieval_mode!r} is not one of {', '.join(RETRIEVAL_MODES)}")
        if self.rrf_k < 0:
            raise ConfigError(f"rrf_k={self.rrf_k} must be >= 0 (60 is the usual choice)")
        if self.dense_weight < 0 or self.bm25_weight < 0 or self.dense_weight + self.bm25_weight == 0:
            raise ConfigError(
                f"dense_weight={self.dense_weight} and bm25_weight={self.bm25_weight} must be >= 0, not both 0"
            )
        if self.candidates < 1 or self.rerank_candidates < 1:
            raise ConfigError(
                f"candidates={self.candidates} and rerank_candidates={self.rerank_candidates} must be at least 1"
            )
        if self.mmr is not None and not 0.0 <= self.mmr <= 1.0:
            raise ConfigError(f"mmr={self.mmr} must be between 0 and 1 (1: relevance only, 0: diversity only)")

    def as_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


def _coerce(name: str, value: Any, type_name: Any, source: str) -> Any:
    # Field types are strings under `from __future__ import annotations`.
    kind = str(type_name)
    if kind.endswith(" | None"):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        kind = kind[: -len(" | None")]
    try:
        if kind == "Path":
            return Path(value).expanduser()
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {value!r} is not a valid {kind} for {name}") from None
