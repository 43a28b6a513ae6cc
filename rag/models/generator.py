"""The local decoder model: loading (with a converted-weights cache for GGUF), chat prompts, streaming decode.

Decoding itself is :func:`rag.models.decoding.decode` over the backend's session (lean, transformers or
llama.cpp); only beam search runs transformers' ``generate``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Generator as PyGenerator
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from rag.config import BACKENDS, PRECISIONS, one_of
from rag.errors import ConfigError, ModelNotFoundError
from rag.models.decoding import Decoding, DecodingSession, GenerationStats, decode
from rag.models.sources import GeneratorSource, prepare_hub_access

Messages = list[dict[str, str]]


class Generator:
    """A causal LM with its tokenizer and chat template. Loads on first use."""

    def __init__(
        self, source: GeneratorSource, cache_dir: Path, threads: int = 0, backend: str = "auto", precision: str = "fp32"
    ) -> None:
        one_of("RAG_GEN_BACKEND", backend, BACKENDS)
        one_of("RAG_GEN_PRECISION", precision, PRECISIONS)
        self.source = source
        self.cache_dir = cache_dir
        self.threads = threads
        self.backend = backend
        self.precision = precision
        self.load_seconds: float | None = None
        self.loaded_from: str | None = None  # "cache", "gguf" or "folder"

    # --- loading ----------------------------------------------------------------------------------------------

    def cache_path(self) -> Path | None:
        """Where the GGUF's converted weights live (None for non-GGUF models)."""
        if not self.source.gguf_file:
            return None
        gguf = Path(self.source.location) / self.source.gguf_file
        st = gguf.stat()
        key = hashlib.sha256(f"{gguf.name}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
        return self.cache_dir / "generators" / f"{gguf.stem}-{key}"

    def needs_conversion(self) -> bool:
        """True when loading will first convert a GGUF file (slow, once; later loads use the cache)."""
        cache = self.cache_path()
        return cache is not None and not (cache / ".complete").is_file()

    @cached_property
    def _loaded(self) -> tuple[Any, Any]:
        prepare_hub_access(self.source.local)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        started = time.perf_counter()
        cache = self.cache_path()
        if cache is not None and (cache / ".complete").is_file():
            location, extra, self.loaded_from = str(cache), {}, "cache"
        elif cache is not None:
            location, extra, self.loaded_from = (
                self.source.location,
                {"gguf_file": self.source.gguf_file},
                "gguf",
            )
        else:
            location, extra, self.loaded_from = self.source.location, {}, "folder"
        local = self.source.local
        try:
            with _quiet_gguf_conversion():
                tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local, **extra)
                model = AutoModelForCausalLM.from_pretrained(location, local_files_only=local, dtype="auto", **extra)
        except Exception as e:  # not a model (a file that is not GGUF, a folder of something else), or damaged
            detail = f"{type(e).__name__}: {e}".splitlines()[0][:160]
            raise ModelNotFoundError(
                f"generator {self.source.name!r} could not be loaded ({detail}); give a causal-LM folder, a .gguf "
                "file or a hub id with --gen-model / RAG_GEN_MODEL"
            ) from None
        model.eval()
        if self.loaded_from == "gguf" and cache is not None:
            _save_converted(model, tokenizer, cache)
        self.load_seconds = time.perf_counter() - started
        return model, tokenizer

    @property
    def model(self) -> Any:
        return self._loaded[0]

    @cached_property
    def session(self) -> DecodingSession:
        """The backend's token-by-token forward pass: lean, llama.cpp, or transformers' own."""
        if self.backend == "llamacpp":
            from rag.models import llamacpp

            started = time.perf_counter()
            session = llamacpp.session(self.source, self.threads, self.context_window)
            self.load_seconds = (self.load_seconds or 0.0) + time.perf_counter() - started
            return session
        from rag.models import lean

        if self.backend == "transformers" or not lean.supports(self.model):
            if self.backend == "lean":
                raise ConfigError(
                    f"RAG_GEN_BACKEND=lean: {self.source.name} is not a plain Llama model; use RAG_GEN_BACKEND=auto"
                )
            from rag.models.hf_session import TransformersSession

            return TransformersSession(self.model)
        started = time.perf_counter()
        cache = lean.PrefixCache(lean.LeanLlama(self.model, self.precision))
        # Part of loading: the fused (and quantised) copy is made once per process.
        self.load_seconds = (self.load_seconds or 0.0) + time.perf_counter() - started
        return cache

    @property
    def backend_used(self) -> str:
        """The backend that decodes: "lean-fp32", "lean-int8-head", "lean-int8", "llamacpp" or "transformers"."""
        from rag.models.hf_session import TransformersSession

        if isinstance(self.session, TransformersSession):
            return "transformers"
        return "llamacpp" if self.backend == "llamacpp" else f"lean-{self.precision}"

    @property
    def tokenizer(self) -> Any:
        return self._loaded[1]

    @property
    def layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)

    # --- prompts ----------------------------------------------------------------------------------------------

    def render(self, messages: Messages) -> str:
        """The prompt text exactly as the model reads it, chat template applied."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # Base models without a template: plain concatenation.
        return "\n\n".join(m["content"] for m in messages) + "\n\nAnswer:"

    def count(self, messages: Messages) -> int:
        return len(self._encode(self.render(messages)))

    def _encode(self, prompt: str) -> list[int]:
        # The template already holds any special tokens the model expects.
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    # --- decoding ---------------------------------------------------------------------------------------------

    def stream(
        self,
        messages: Messages,
        decoding: Decoding,
        logits_processor: list[Any] | None = None,
        stopping_criteria: list[Any] | None = None,
        session: DecodingSession | None = None,
    ) -> PyGenerator[str, None, GenerationStats]:
        """Yield the answer's text as it is decoded; the generator's return value holds the statistics.

        ``logits_processor``: extra ``transformers.LogitsProcessor``-style callables
        ``(input_ids, scores) -> scores``, applied after the repetition settings and before sampling.
        ``stopping_criteria``: callables ``(input_ids, scores) -> bool`` that end the answer when true.
        ``session``: decode through this session instead of the backend's (``rag explain`` records attention).
        """
        decoding.validate()
        ids = self._encode(self.render(messages))
        extra, stopping = logits_processor or [], stopping_criteria or []
        if decoding.num_beams > 1 and session is None:
            return (yield from self._beam_search(ids, decoding, extra, stopping))
        return (
            yield from decode(session or self.session, ids, decoding, self.tokenizer, self.eos_ids(), extra, stopping)
        )

    def eos_ids(self) -> set[int]:
        """Token ids that end an answer: the generation config's and the tokenizer's end-of-sequence."""
        eos: set[int] = set()
        for value in (getattr(self.model.generation_config, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(value, int):
                eos.add(value)
            elif value:
                eos.update(int(v) for v in value)
        return eos

    def _beam_search(
        self, ids: list[int], decoding: Decoding, extra: list[Any], stopping: list[Any]
    ) -> PyGenerator[str, None, GenerationStats]:
        """transformers' beam search: the best beam is known only at the end, so it is yielded as one piece."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        input_ids = torch.tensor([ids])
        kwargs = decoding.generate_kwargs()
        kwargs.update(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        if extra:
            kwargs["logits_processor"] = LogitsProcessorList(extra)
        if decoding.stop:
            kwargs.update(stop_strings=list(decoding.stop), tokenizer=self.tokenizer)
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**kwargs, stopping_criteria=StoppingCriteriaList(stopping))
        new = out[0, len(ids) :].tolist()
        yield self.tokenizer.decode(new, skip_special_tokens=True)
        elapsed = time.perf_counter() - started
        return GenerationStats(len(ids), len(new), elapsed, elapsed, tuple(new))


@contextmanager
def _quiet_gguf_conversion() -> Iterator[None]:
    """The GGUF converter draws its own tqdm bar, which no transformers setting turns off; silence it."""
    from functools import partial

    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # no gguf support in this transformers: nothing to silence
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def _save_converted(model: Any, tokenizer: Any, cache: Path) -> None:
    """Save GGUF-dequantised weights as safetensors so the next load skips the ~20 s conversion.

    transformers refuses to save a model it still marks as GGUF-quantised; the weights are already plain
    tensors, so the marks are dropped (the reloaded weights are bit-identical).
    """
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / ".complete").touch()
    try:
        os.rename(tmp, cache)
    except OSError:  # another process finished first; its copy is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
