"""The embedder as an ONNX graph: queries embedded without importing torch, documents embedded faster.

``rag search`` runs as a fresh process: importing torch and sentence-transformers alone takes seconds, while
onnxruntime, `tokenizers` and numpy load in a fraction of that. Ingest embeds documents through the same graph,
in batches of similar length, because onnxruntime runs this model well ahead of torch on a CPU
(bench/RESULTS.md, "Document embedding"). The transformer is exported once (with torch, at
ingest time, when torch is loaded anyway) into the cache directory, keyed by the embedder's identity, and checked
against sentence-transformers before it is kept. Pooling and normalisation are done here in numpy.

Only models whose sentence-transformers pipeline is Transformer -> mean Pooling [-> Normalize] with no prompts
qualify (the bundled all-MiniLM-L6-v2 does); for anything else, or when onnxruntime is not installed or the
export fails, the torch path stays in use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from rag.models.sources import EmbedderSource

# The exported graph must agree with sentence-transformers to this cosine on the check sentences.
MIN_COSINE = 1 - 1e-4
_CHECK_TEXTS = [
    "What does top-p sampling keep?",
    "Vitamin D deficiency is associated with an increased risk of multiple sclerosis.",
    "a",
    "The KV cache stores keys and values of earlier positions so each new token attends without recomputing them. " * 8,
]


def onnx_path(source: EmbedderSource, cache_dir: Path) -> Path:
    safe = source.identity.replace(":", "-").replace("/", "_")
    return cache_dir / "embedders" / f"{safe}.onnx"


def available() -> bool:
    """onnxruntime can be imported (it is an optional dependency)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def eligible(source: EmbedderSource) -> bool:
    """The model folder is local and its pipeline is Transformer -> mean pooling [-> Normalize]."""
    if not source.local:
        return False
    folder = Path(source.location)
    try:
        modules = json.loads((folder / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if kinds not in (["Transformer", "Pooling", "Normalize"], ["Transformer", "Pooling"]):
            return False
        pooling_dir = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
        pooling = json.loads((folder / pooling_dir / "config.json").read_text())
    except (OSError, ValueError, KeyError, StopIteration):
        return False
    if _prompts(folder) or not (folder / "tokenizer.json").is_file():  # prompts: this graph would not prepend them
        return False
    if "pooling_mode" in pooling:  # sentence-transformers 6 writes one mode by name (a folder it saved, say)
        return pooling["pooling_mode"] == "mean"
    others = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v and k != "pooling_mode_mean_tokens"]
    return bool(pooling.get("pooling_mode_mean_tokens")) and not others


def _prompts(folder: Path) -> bool:
    """Whether the model asks for a text prepended to queries or documents (E5, BGE, ... do)."""
    try:
        config = json.loads((folder / "config_sentence_transformers.json").read_text())
    except (OSError, ValueError):
        return False
    return any(config.get("prompts", {}).values()) or bool(config.get("default_prompt_name"))


def export(model: Any, source: EmbedderSource, cache_dir: Path) -> Path | None:
    """Export ``model`` (a loaded SentenceTransformer) to ONNX once and check it; None when it cannot be used.

    Never raises: the ONNX file is an optimisation, the torch path always works.
    """
    path = onnx_path(source, cache_dir)
    if path.is_file():
        return path
    if not (available() and eligible(source)):
        return None
    import torch

    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}.onnx")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        transformer = model[0].auto_model.eval()
        # sentence-transformers 6 renamed tokenize() to preprocess(); older releases only have tokenize().
        example = getattr(model, "preprocess", model.tokenize)(["an example sentence", "two"])
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in example]
        dynamic = {n: {0: "batch", 1: "tokens"} for n in names}

        class _Hidden(torch.nn.Module):
            def __init__(self, inner: torch.nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, *args: torch.Tensor) -> torch.Tensor:
                return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

        import warnings

        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Hidden(transformer),
                tuple(example[n] for n in names),
                str(tmp),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes={**dynamic, "last_hidden_state": {0: "batch", 1: "tokens"}},
                opset_version=17,
                dynamo=False,
            )
        expected = model.encode(_CHECK_TEXTS, normalize_embeddings=True, convert_to_numpy=True)
        got = OnnxEmbedder(tmp, source).embed(_CHECK_TEXTS)
        if float((expected * got).sum(1).min()) < MIN_COSINE:
            tmp.unlink(missing_ok=True)
            return None
        os.replace(tmp, path)
        return path
    except Exception:  # an exporter gap for some architecture: keep using torch
        tmp.unlink(missing_ok=True)
        return None


class OnnxEmbedder:
    """Runs an exported embedder: `tokenizers` for ids, onnxruntime for the transformer, numpy for pooling."""

    def __init__(self, path: Path, source: EmbedderSource, max_seq_length: int | None = None, threads: int = 1) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        from rag.models.sources import embedder_max_tokens

        options = ort.SessionOptions()
        options.log_severity_level = 3
        # One short query: more threads cost more to start than they save. Documents: 0, onnxruntime's default
        # of one per physical core.
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(Path(source.location) / "tokenizer.json"))
        limit = max_seq_length or embedder_max_tokens(source) or 512
        self.tokenizer.enable_truncation(limit)
        self.tokenizer.enable_padding()

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised, as sentence-transformers computes them."""
        import numpy as np

        encs = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.array([e.type_ids for e in encs], dtype=np.int64)
        (hidden,) = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
