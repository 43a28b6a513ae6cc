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
    # Chunk size in the embedder's own tokens. MiniLM reads at most 256 including [CLS]/[SEP]; 200 leaves room
    # for the splitter's approximate merging, and a hard guard enforces the model's limit anyway.
    chunk_tokens: int = 200
    chunk_overlap: int = 40
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
        from rag.modes import ANSWER_MODES

        if self.answer_mode not in ANSWER_MODES:
            raise ConfigError(f"answer_mode={self.answer_mode!r}: use one of {', '.join(ANSWER_MODES)}")
        if self.context_tokens < 256:
            raise ConfigError(f"context_tokens={self.context_tokens} is too small; use 256 or more")

    def as_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


def _coerce(name: str, value: Any, type_name: Any, source: str) -> Any:
    # Field types are strings under `from __future__ import annotations`.
    kind = str(type_name)
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
