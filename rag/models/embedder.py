"""The embedding model: sentence-transformers for vectors, the model's own tokenizer for counting tokens.

Token counting (for chunking) uses the `tokenizers` library straight from the model folder, which loads in ~0.1 s;
sentence-transformers (and torch) load only when document vectors are needed. Queries go through an ONNX export
of the same model when one is cached (see rag/models/onnx_embedder.py), so `rag search` never imports torch.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from rag.models.sources import EmbedderSource, embedder_max_tokens, prepare_hub_access

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer


class Embedder:
    """Vectors are float32 and L2-normalised, so inner product is cosine similarity."""

    def __init__(
        self, source: EmbedderSource, batch_size: int = 32, cache_dir: Path | None = None, runtime: str = "auto"
    ) -> None:
        self.source = source
        self.batch_size = batch_size
        # Where the ONNX export lives; None: no export, queries use torch.
        self.cache_dir = cache_dir
        # "auto": queries through ONNX when an export is cached and onnxruntime is installed; "torch": never.
        self.runtime = runtime
        self.calls = 0  # texts embedded so far (documents and queries)

    @cached_property
    def model(self) -> SentenceTransformer:
        prepare_hub_access(self.source.local)
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model = SentenceTransformer(self.source.location, device="cpu", local_files_only=self.source.local)
        if self.cache_dir is not None and self.runtime == "auto":
            from rag.models import onnx_embedder as onnx

            onnx.export(model, self.source, self.cache_dir)  # once per model; later calls find the file
        return model

    @cached_property
    def _onnx(self):  # -> rag.models.onnx_embedder.OnnxEmbedder | None
        if self.cache_dir is None or self.runtime != "auto":
            return None
        from rag.models import onnx_embedder as onnx

        path = onnx.onnx_path(self.source, self.cache_dir)
        if not (path.is_file() and onnx.available()):
            return None
        try:
            return onnx.OnnxEmbedder(path, self.source)
        except Exception:  # a damaged cache file: the torch path still works
            return None

    @property
    def query_runtime(self) -> str:
        """What embeds queries: "onnx" or "torch"."""
        return "onnx" if self._onnx is not None else "torch"

    @cached_property
    def _tokenizer(self):  # -> tokenizers.Tokenizer
        path = Path(self.source.location) / "tokenizer.json"
        if self.source.local and path.is_file():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(path))
        else:
            tok = self.model.tokenizer.backend_tokenizer.__copy__()
        # The saved tokenizer may carry a truncation length; counting must see every token.
        tok.no_truncation()
        tok.no_padding()
        return tok

    @cached_property
    def max_seq_length(self) -> int:
        return embedder_max_tokens(self.source) or int(self.model.max_seq_length)

    @cached_property
    def max_tokens(self) -> int:
        """Content tokens per text before the model would truncate (its limit minus [CLS]/[SEP] etc.)."""
        return self.max_seq_length - self._tokenizer.num_special_tokens_to_add(False)

    @cached_property
    def dim(self) -> int:
        model = self.model
        # sentence-transformers 6 renamed the method; older releases only have the long name.
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise ValueError(f"embedding model {self.source.name} does not report a dimension")
        return int(dim)

    def tokenize(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of each token of ``text``, special tokens excluded."""
        return self._tokenizer.encode(text, add_special_tokens=False).offsets

    def encode(self, text: str):  # -> tokenizers.Encoding
        """``text`` as the model sees it, special tokens included: tokens, ids, offsets, special-tokens mask."""
        return self._tokenizer.encode(text)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.calls += len(texts)
        encode = getattr(self.model, "encode_document", self.model.encode)
        vecs = encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vecs, dtype=np.float32)

    def embed_sentences(self, texts: list[str]) -> np.ndarray:
        """(n, dim) like :meth:`embed_documents`, through the ONNX export when there is one: for comparing source
        sentences with a question while answering, where loading sentence-transformers would cost more than the
        whole embedding. Stored vectors always come from :meth:`embed_documents`."""
        if self._onnx is None or not texts:
            return self.embed_documents(texts)
        import numpy as np

        self.calls += len(texts)
        # Sorted by length, so each batch pads to similar lengths.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: list[np.ndarray] = [np.empty(0)] * len(texts)
        for at in range(0, len(order), self.batch_size):
            batch = order[at : at + self.batch_size]
            for i, vector in zip(batch, self._onnx.embed([texts[i] for i in batch]), strict=True):
                vectors[i] = vector
        return np.stack(vectors)

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalised."""
        import numpy as np

        self.calls += 1
        if self._onnx is not None:
            return self._onnx.embed([text])[0]
        encode = getattr(self.model, "encode_query", self.model.encode)
        vec = encode([text], normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vec, dtype=np.float32)[0]
