"""The optional llama.cpp decoding backend (``pip install 'rag-local[llamacpp]'``, ``RAG_GEN_BACKEND=llamacpp``).

llama.cpp decodes the GGUF file's own 4-bit weights with hand-written CPU kernels: about 5x the tokens per second
of torch's fp32 path here (bench/RESULTS.md). Only the forward pass is llama.cpp's. Token ids come from the same
tokenizer as the other backends, and the logits go through the same processors, quote constraint, sampling and
stop rules in :meth:`rag.models.generator.Generator.stream`. So every answer mode works unchanged. Its tokens can differ
from the fp32 path's, because the weights are quantised.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def installed() -> bool:
    """True when ``llama_cpp`` can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


class LlamaCppSession:
    """A llama.cpp context over a GGUF file, with the same ``prefill``/``step``/``ids`` interface as
    :class:`rag.models.lean.PrefixCache`: consecutive prompts reuse their common prefix's keys and values."""

    def __init__(self, gguf: Path, threads: int, n_ctx: int) -> None:
        import llama_cpp

        self._lib = llama_cpp
        # llama-cpp-python's own default is half the cores: one thread here, at half the speed.
        threads = threads or os.cpu_count() or 1
        self.llm = llama_cpp.Llama(
            model_path=str(gguf),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=False,
            verbose=False,
        )
        self.ids: list[int] = []

    def _eval(self, ids: list[int]) -> torch.Tensor:
        import numpy as np
        import torch

        self.llm.eval(ids)
        # The logits of the last evaluated token (llama-cpp-python no longer copies them out itself).
        row = self._lib.llama_get_logits_ith(self.llm.ctx, -1)
        return torch.from_numpy(np.ctypeslib.as_array(row, shape=(self.llm.n_vocab(),)).copy())

    def prefill(self, ids: list[int], max_len: int, only: list[int] | None = None) -> torch.Tensor:
        """Logits after ``ids``, evaluating only what follows the prefix the context already holds."""
        if max_len > self.llm.n_ctx():
            raise ValueError(f"{max_len} positions do not fit llama.cpp's {self.llm.n_ctx()}-token context")
        same = 0
        for a, b in zip(self.ids, ids[:-1], strict=False):  # at least the last token is always evaluated again
            if a != b:
                break
            same += 1
        self.llm.n_tokens = same  # eval() drops the cache beyond n_tokens first
        logits = self._eval(ids[same:])
        self.ids = list(ids)
        return logits

    def step(self, token: int, only: list[int] | None = None) -> torch.Tensor:
        logits = self._eval([token])
        self.ids.append(token)
        return logits


def session(source: Any, threads: int, n_ctx: int) -> LlamaCppSession:
    """A session for a generator source that is a GGUF file; a clear error otherwise."""
    from rag.errors import ConfigError

    if not installed():
        raise ConfigError(
            "RAG_GEN_BACKEND=llamacpp: llama-cpp-python is not installed; pip install 'rag-local[llamacpp]' "
            "(builds from source, several minutes) or use RAG_GEN_BACKEND=auto"
        )
    if not source.gguf_file:
        raise ConfigError(f"RAG_GEN_BACKEND=llamacpp: {source.name} is not a GGUF file; use RAG_GEN_BACKEND=auto")
    return LlamaCppSession(Path(source.location) / source.gguf_file, threads, n_ctx)
