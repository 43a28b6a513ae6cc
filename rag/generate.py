"""The local decoder model: loading (with a converted-weights cache for GGUF), chat prompts, streaming decode."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from collections.abc import Generator as PyGenerator
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from rag.errors import ConfigError
from rag.models import GeneratorSource, prepare_hub_access

Messages = list[dict[str, str]]

# "lean": our own decode loop over a fused, optionally int8 copy of a Llama model (rag/lean.py); "transformers":
# model.generate; "auto": lean when the model is a plain Llama, else transformers; "llamacpp": the same decode
# loop over llama.cpp's forward pass on the GGUF file (rag/llamacpp.py, optional; never chosen by "auto", whose
# tokens match transformers' exactly).
BACKENDS = ("auto", "lean", "transformers", "llamacpp")
PRECISIONS = ("fp32", "int8-head", "int8")  # of the lean backend's linear layers, see rag/lean.py


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
        def bad(flag: str, why: str) -> ConfigError:
            return ConfigError(f"--{flag}: {why}")

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def generate_kwargs(self) -> dict[str, Any]:
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
    prompt_tokens: int
    new_tokens: int
    first_token_s: float
    seconds: float


def drain(stream: PyGenerator[str, None, Any]) -> tuple[str, Any]:
    """Run a text stream (such as :meth:`Generator.stream`) to its end: all its text, and its return value
    (the :class:`GenerationStats`)."""
    pieces = []
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as stop:
            return "".join(pieces), stop.value


class Generator:
    """A causal LM with its tokenizer and chat template. Loads on first use."""

    def __init__(
        self, source: GeneratorSource, cache_dir: Path, threads: int = 0, backend: str = "auto", precision: str = "fp32"
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"RAG_GEN_BACKEND={backend!r}: use one of {', '.join(BACKENDS)}")
        if precision not in PRECISIONS:
            raise ConfigError(f"RAG_GEN_PRECISION={precision!r}: use one of {', '.join(PRECISIONS)}")
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
        with _quiet_gguf_conversion():
            tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local, **extra)
            model = AutoModelForCausalLM.from_pretrained(location, local_files_only=local, dtype="auto", **extra)
        model.eval()
        if self.loaded_from == "gguf" and cache is not None:
            _save_converted(model, tokenizer, cache)
        self.load_seconds = time.perf_counter() - started
        return model, tokenizer

    @property
    def model(self) -> Any:
        return self._loaded[0]

    @cached_property
    def _session(self) -> Any:
        """The token-by-token decoder: rag.lean.PrefixCache, rag.llamacpp.LlamaCppSession, or None when
        transformers' ``generate`` runs."""
        if self.backend == "transformers":
            return None
        if self.backend == "llamacpp":
            from rag import llamacpp

            started = time.perf_counter()
            session = llamacpp.session(self.source, self.threads, self.context_window)
            self.load_seconds = (self.load_seconds or 0.0) + time.perf_counter() - started
            return session
        from rag import lean

        if not lean.supports(self.model):
            if self.backend == "lean":
                raise ConfigError(
                    f"RAG_GEN_BACKEND=lean: {self.source.name} is not a plain Llama model; use RAG_GEN_BACKEND=auto"
                )
            return None
        started = time.perf_counter()
        cache = lean.PrefixCache(lean.LeanLlama(self.model, self.precision))
        # Part of loading: the fused (and quantised) copy is made once per process.
        self.load_seconds = (self.load_seconds or 0.0) + time.perf_counter() - started
        return cache

    @property
    def backend_used(self) -> str:
        """The backend that decodes: "lean-fp32", "lean-int8-head", "lean-int8", "llamacpp" or "transformers"."""
        if self._session is None:
            return "transformers"
        return "llamacpp" if self.backend == "llamacpp" else f"lean-{self.precision}"

    @property
    def tokenizer(self) -> Any:
        return self._loaded[1]

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
    ) -> PyGenerator[str, None, GenerationStats]:
        """Yield the answer's text as it is decoded; the generator's return value holds the statistics.

        ``logits_processor``: extra ``transformers.LogitsProcessor``-style callables
        ``(input_ids, scores) -> scores``, applied after the repetition settings and before sampling.
        ``stopping_criteria``: callables ``(input_ids, scores) -> bool`` that end the answer when true.
        """
        decoding.validate()
        ids = self._encode(self.render(messages))
        if decoding.num_beams == 1 and self._session is not None:
            return (yield from self._stream_tokens(ids, decoding, logits_processor or [], stopping_criteria or []))
        return (yield from self._stream_generate(ids, decoding, logits_processor or [], stopping_criteria or []))

    def _stream_tokens(
        self, ids: list[int], decoding: Decoding, extra: list[Any], stopping: list[Any]
    ) -> PyGenerator[str, None, GenerationStats]:
        import torch

        from rag.lean import choose, processors

        if decoding.seed is not None:
            torch.manual_seed(decoding.seed)
        chain = processors(decoding, extra)
        eos = self._eos_ids()
        cache = self._session
        started = time.perf_counter()
        logits = cache.prefill(ids, len(ids) + decoding.max_new_tokens)
        seq = torch.tensor([ids])
        new: list[int] = []
        shown = ""
        first: float | None = None
        # Runs in the caller's thread: Ctrl-C lands between two tokens, and a consumer that stops iterating
        # stops the decoding with it.
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
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # a character split across tokens: wait for its other bytes
                if len(text) > len(shown):
                    yield text[len(shown) :]
                shown = text
            if len(new) >= decoding.max_new_tokens or any(stop in text for stop in decoding.stop):
                break  # a stop string stays in the output, as with generate(stop_strings=...)
            with torch.inference_mode():
                if any(bool(stop(seq, scores)) for stop in stopping):
                    break
            logits = cache.step(token)
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        if len(text) > len(shown):
            yield text[len(shown) :]
        elapsed = time.perf_counter() - started
        return GenerationStats(len(ids), len(new), first if first is not None else elapsed, elapsed)

    def _eos_ids(self) -> set[int]:
        eos: set[int] = set()
        for value in (getattr(self.model.generation_config, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(value, int):
                eos.add(value)
            elif value:
                eos.update(int(v) for v in value)
        return eos

    def _stream_generate(
        self, ids: list[int], decoding: Decoding, extra: list[Any], stopping: list[Any]
    ) -> PyGenerator[str, None, GenerationStats]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

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
        if decoding.seed is not None:
            torch.manual_seed(decoding.seed)
        started = time.perf_counter()
        if decoding.num_beams > 1:  # transformers cannot stream beams: the best one is known only at the end
            with torch.inference_mode():
                out = self.model.generate(**kwargs, stopping_criteria=StoppingCriteriaList(stopping))
            new = out[0, len(ids) :]
            yield self.tokenizer.decode(new, skip_special_tokens=True)
            elapsed = time.perf_counter() - started
            return GenerationStats(len(ids), len(new), elapsed, elapsed)

        stop = threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw) -> bool:  # type: ignore[no-untyped-def]
                return stop.is_set()

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                with torch.inference_mode():
                    result["out"] = self.model.generate(
                        **kwargs, streamer=streamer, stopping_criteria=StoppingCriteriaList([*stopping, _Stop()])
                    )
            except BaseException as e:  # re-raised in the caller's thread
                result["error"] = e
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        first: float | None = None
        try:
            for piece in streamer:
                if first is None:
                    first = time.perf_counter() - started
                if piece:
                    yield piece
        finally:
            stop.set()  # the consumer stopped early (or Ctrl-C): end generation at the next token
            thread.join()
        if "error" in result:
            raise result["error"]
        elapsed = time.perf_counter() - started
        new_tokens = int(result["out"].shape[1]) - len(ids)
        return GenerationStats(len(ids), new_tokens, first if first is not None else elapsed, elapsed)


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
