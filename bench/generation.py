"""Generation speed for a fixed ~600-token RAG prompt and 128 new tokens: every backend, the same prompt.

Rows: ``generate`` (bare ``model.generate``, no streaming: the baseline), ``transformers`` (our streaming
transformers path), ``lean-fp32`` / ``lean-int8`` (rag/models/lean.py), ``llamacpp`` (our decode loop over llama.cpp's
forward pass: ``RAG_GEN_BACKEND=llamacpp``) and ``llama.cpp`` (llama-cpp-python's own completion on the same GGUF
file); the last two when llama-cpp-python is installed. End-of-sequence is suppressed so every row decodes exactly
128 tokens.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import median, rag_messages
from rag.models.llamacpp import installed


class _NoEos:
    """A logits processor that forbids end-of-sequence, so every backend writes the same number of tokens."""

    def __init__(self, eos: set[int]) -> None:
        self.eos = sorted(eos)

    def __call__(self, input_ids, scores):  # type: ignore[no-untyped-def]
        scores[:, self.eos] = float("-inf")
        return scores


def _row(name: str, runs: list[tuple[float, float, int]], load_s: float, prompt_tokens: int) -> dict[str, Any]:
    first = median([r[0] for r in runs])
    total = median([r[1] for r in runs])
    new = runs[0][2]
    decode = median([(r[2] - 1) / (r[1] - r[0]) for r in runs if r[1] > r[0]])
    return {
        "backend": name,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new,
        "load_s": round(load_s, 2),
        "first_token_s": first,
        "total_s": total,
        "decode_tok_s": decode,
        "runs": len(runs),
    }


def run(
    backends: list[str],
    repeats: int,
    cache_dir: Path,
    prompt_tokens: int = 600,
    new_tokens: int = 128,
    gen_model: str = "SmolLM2-135M-Instruct",
):
    from rag.models.decoding import Decoding, drain
    from rag.models.generator import Generator
    from rag.models.sources import resolve_generator

    source = resolve_generator(gen_model, cache_dir)
    rows: list[dict[str, Any]] = []
    reference = Generator(source, cache_dir, backend="transformers")
    _question, messages = rag_messages(prompt_tokens, reference.count)
    n_prompt = reference.count(messages)
    decoding = Decoding(max_new_tokens=new_tokens)
    no_eos = _NoEos(reference.eos_ids())
    for name in backends:
        if name == "generate":
            rows.append(_bare_generate(reference, messages, repeats, new_tokens, n_prompt))
        elif name in ("llama.cpp", "llamacpp") and not installed():
            rows.append({"backend": name, "note": "not installed (pip install llama-cpp-python, or .[llamacpp])"})
        elif name == "llama.cpp":
            rows.append(_llama_cpp(source, reference.render(messages), repeats, new_tokens, n_prompt, no_eos.eos))
        else:
            backend, _, precision = name.partition("-")
            started = time.perf_counter()
            gen = Generator(source, cache_dir, backend=backend, precision=precision or "fp32")
            _ = gen.model, gen.session  # load and prepare outside the timed runs
            load_s = time.perf_counter() - started
            runs = []
            for _ in range(repeats):
                if hasattr(
                    gen.session, "ids"
                ):  # no prompt cache between runs: every run pays its prefill, like llama.cpp
                    gen.session.ids = []
                _, st = drain(gen.stream(messages, decoding, logits_processor=[no_eos]))
                runs.append((st.first_token_s, st.seconds, st.new_tokens))
            rows.append(_row(name, runs, load_s, n_prompt))
    return rows


def _bare_generate(gen, messages, repeats: int, new_tokens: int, n_prompt: int) -> dict[str, Any]:
    import torch

    started = time.perf_counter()
    model, tok = gen.model, gen.tokenizer
    load_s = time.perf_counter() - started
    ids = torch.tensor([gen._encode(gen.render(messages))])
    runs = []
    for _ in range(repeats):
        with torch.inference_mode():
            t = time.perf_counter()
            # Time to first token: a 1-token generate is prefill plus one step.
            model.generate(ids, max_new_tokens=1, do_sample=False, pad_token_id=tok.eos_token_id)
            first = time.perf_counter() - t
            t = time.perf_counter()
            out = model.generate(
                ids,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tok.eos_token_id,
            )
            total = time.perf_counter() - t
        runs.append((first, total, int(out.shape[1] - ids.shape[1])))
    return _row("generate", runs, load_s, n_prompt)


def _llama_cpp(source, prompt: str, repeats: int, new_tokens: int, n_prompt: int, eos: list[int]) -> dict[str, Any]:
    if not installed():
        return {"backend": "llama.cpp", "note": "not installed (pip install llama-cpp-python, or .[llamacpp])"}
    import os

    from llama_cpp import Llama

    started = time.perf_counter()
    llm = Llama(
        model_path=str(Path(source.location) / source.gguf_file),
        n_ctx=2048,
        n_threads=os.cpu_count() or 2,
        verbose=False,
    )
    load_s = time.perf_counter() - started
    runs = []
    for _ in range(repeats):
        llm.reset()  # no prompt cache between runs: every run pays its prefill, like the other rows
        t = time.perf_counter()
        first = None
        n = 0
        for _chunk in llm.create_completion(
            prompt, max_tokens=new_tokens, temperature=0.0, stream=True, logit_bias={e: -1e9 for e in eos}
        ):
            if first is None:
                first = time.perf_counter() - t
            n += 1
        total = time.perf_counter() - t
        runs.append((first or total, total, n))
    return _row("llama.cpp", runs, load_s, n_prompt)
