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
from rag.models import bundled
from rag.models.decoding import Decoding, DecodingSession, GenerationStats, decode
from rag.models.sources import GeneratorSource, prepare_hub_access

Messages = list[dict[str, str]]


class Generator:
    """A causal LM with its tokenizer and chat template. Loads on first use."""

    def __init__(
        self, source: GeneratorSource, cache_dir: Path, threads: int = 0, backend: str = "auto", precision: str = "auto"
    ) -> None:
        one_of("RAG_GEN_BACKEND", backend, BACKENDS)
        one_of("RAG_GEN_PRECISION", precision, PRECISIONS)
        self.source = source
        self.cache_dir = cache_dir
        self.threads = threads
        self.backend = backend
        self.asked_precision = precision
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

    def _where(self) -> tuple[str, dict[str, Any]]:
        """Where transformers loads from: the converted cache, else the GGUF file or the folder (or hub id)."""
        cache = self.cache_path()
        if cache is not None and (cache / ".complete").is_file():
            self.loaded_from = self.loaded_from or "cache"
            return str(cache), {}
        if cache is not None:
            self.loaded_from = self.loaded_from or "gguf"
            return self.source.location, {"gguf_file": self.source.gguf_file}
        self.loaded_from = self.loaded_from or "folder"
        return self.source.location, {}

    def _timed_load(self, what: Any) -> Any:
        """Call ``what`` (a loader), adding its time to ``load_seconds`` and naming the model when it fails."""
        prepare_hub_access(self.source.local)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        started = time.perf_counter()
        try:
            with _quiet_gguf_conversion():
                return what()
        except (ConfigError, ModelNotFoundError):
            raise
        except Exception as e:  # not a model (a file that is not GGUF, a folder of something else), or damaged
            detail = f"{type(e).__name__}: {e}".splitlines()[0][:160]
            raise ModelNotFoundError(
                f"generator {self.source.name!r} could not be loaded ({detail}); give a causal-LM folder, a .gguf "
                "file or a hub id with --gen-model / RAG_GEN_MODEL"
            ) from None
        finally:
            self.load_seconds = (self.load_seconds or 0.0) + time.perf_counter() - started

    @cached_property
    def model(self) -> Any:
        """The transformers model, loaded on first use: the lean backend needs it only once, to build its cache."""
        import torch
        from transformers import AutoModelForCausalLM

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        converting = self.needs_conversion()
        location, extra = self._where()

        def load() -> Any:
            model = AutoModelForCausalLM.from_pretrained(
                location, local_files_only=self.source.local, dtype="auto", **extra
            )
            model.eval()
            if converting:
                _save_converted(model, self._tokenizer_from(location, extra), self.cache_path())
            return model

        return self._timed_load(load)

    def _tokenizer_from(self, location: str, extra: dict[str, Any]) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(location, local_files_only=self.source.local, **extra)

    @cached_property
    def tokenizer(self) -> Any:
        if self.needs_conversion():
            _ = self.model  # converts the GGUF file once, tokenizer included
        location, extra = self._where()
        return self._timed_load(lambda: self._tokenizer_from(location, extra))

    @cached_property
    def config(self) -> Any:
        """The model's settings (``config.json``), read without loading its weights or transformers' model code
        (whose import alone costs seconds); a hub model's come with the model."""
        if "model" in self.__dict__ or self.needs_conversion():
            return self.model.config
        location, _ = self._where()
        path = Path(location) / "config.json"
        if not path.is_file():
            return self.model.config
        import json
        from types import SimpleNamespace

        try:
            return SimpleNamespace(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            return self.model.config  # reports the damaged folder with the loader's own message

    @cached_property
    def precision(self) -> str:
        """The lean decoder's precision: the one asked for, or for "auto" the bundled tier's own (fp32 for any other
        model)."""
        if self.asked_precision != "auto":
            return self.asked_precision
        tier = bundled.tier(self.source.name)
        return tier.precision if tier is not None else "fp32"

    def lean_path(self) -> Path | None:
        """Where the lean decoder's fused weights are kept (GGUF models: next to the converted weights), one file
        per stored dtype."""
        cache = self.cache_path()
        kind = f"-{self.precision}" if self.precision in ("bf16", "mixed", "int8") else ""
        return None if cache is None else cache.with_name(f"{cache.name}.lean{kind}.pt")

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

        if self.backend == "transformers" or not lean.supports(self.config):
            if self.backend == "lean":
                raise ConfigError(
                    f"RAG_GEN_BACKEND=lean: {self.source.name} is not a plain Llama model; use RAG_GEN_BACKEND=auto"
                )
            from rag.models.hf_session import TransformersSession

            return TransformersSession(self.model)
        return self._lean_session()

    def _lean_session(self) -> DecodingSession:
        """The lean decoder, from its fused weights when a previous process kept them (no transformers model is
        loaded then), else built from the model, and kept for the next process."""
        import torch

        from rag.models import lean

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        path = self.lean_path()
        kept = path if path is not None and path.is_file() else None
        if kept is None:
            _ = self.model  # timed as the model's own load
        started = time.perf_counter()
        try:
            shape, weights = lean.load(kept) if kept is not None else (None, {})
        except Exception:  # a damaged or older file: rebuilt below
            shape, weights = None, {}
        if shape is None:
            shape = lean.Shape.of(self.model.config)
            weights = lean.stored(lean.fuse(self.model.state_dict(), shape), shape, self.precision)
            if path is not None:
                lean.save(path, shape, weights)
        session = lean.PrefixCache(lean.LeanLlama(shape, weights, self.precision))
        # Part of loading: the fused (and quantised) copy is made once per process.
        self.load_seconds = (self.load_seconds or 0.0) + time.perf_counter() - started
        return session

    @property
    def backend_used(self) -> str:
        """The backend that decodes: ``lean-`` and the precision ("lean-fp32", "lean-mixed", ...), "llamacpp" or
        "transformers"."""
        from rag.models.hf_session import TransformersSession

        if isinstance(self.session, TransformersSession):
            return "transformers"
        return "llamacpp" if self.backend == "llamacpp" else f"lean-{self.precision}"

    @property
    def layers(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def context_window(self) -> int:
        return int(getattr(self.config, "max_position_embeddings", 2048) or 2048)

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
        for value in (self._generation_eos, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                eos.add(value)
            elif value:
                eos.update(int(v) for v in value)
        return eos

    @cached_property
    def _generation_eos(self) -> Any:
        # Read once: every answer asks for the end-of-sequence ids.
        if "model" in self.__dict__:
            return getattr(self.model.generation_config, "eos_token_id", None)
        location, _ = self._where()
        path = Path(location) / "generation_config.json"
        if path.is_file():  # the converted cache and local folders; a hub model is loaded anyway
            import json

            return json.loads(path.read_text()).get("eos_token_id")
        return getattr(self.model.generation_config, "eos_token_id", None)

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
