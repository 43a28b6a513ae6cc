"""The embedding model: sentence-transformers for vectors, the model's own tokenizer for counting tokens.

Token counting (for chunking) uses the `tokenizers` library straight from the model folder, which loads in ~0.1 s;
sentence-transformers (and torch) load only when document vectors are needed. Queries and documents go through an
ONNX export of the same model when one is cached (see rag/models/onnx_embedder.py): `rag search` never imports
torch, and ingest embeds faster. The export is made, and checked against sentence-transformers, the first time the
model loads.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from rag.models.sources import EmbedderSource, embedder_max_tokens, prepare_hub_access

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer


# Documents per ONNX run: small batches of similar length pad least (16 beat 32 and 64 on docs-mixed chunks).
DOCUMENT_BATCH = 16


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
        """The export's session for one text at a time (queries, a question's sentences): one thread."""
        return self._onnx_session(threads=1)

    @cached_property
    def _onnx_documents(self):  # -> rag.models.onnx_embedder.OnnxEmbedder | None
        """The export's session for batches of documents: a thread per core. With the export cached, ingest never
        loads torch at all."""
        if self.cache_dir is None or self.runtime != "auto":  # no export will ever exist: keep torch unloaded
            return None
        from rag.models import onnx_embedder as onnx

        if not onnx.onnx_path(self.source, self.cache_dir).is_file():
            _ = self.model  # loading the model makes the export, and checks it against sentence-transformers
        return self._onnx_session(threads=0, max_seq_length=self.max_seq_length)

    def _onnx_session(self, threads: int, max_seq_length: int | None = None):  # -> OnnxEmbedder | None
        if self.cache_dir is None or self.runtime != "auto":
            return None
        from rag.models import onnx_embedder as onnx

        path = onnx.onnx_path(self.source, self.cache_dir)
        if not (path.is_file() and onnx.available()):
            return None
        try:
            return onnx.OnnxEmbedder(path, self.source, max_seq_length, threads=threads)
        except Exception:  # a damaged cache file: the torch path still works
            return None

    @property
    def document_runtime(self) -> str:
        """What embeds documents: "onnx" or "torch" (loads the model)."""
        return "onnx" if self._onnx_documents is not None else "torch"

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
        if "model" not in self.__dict__ and (session := self._onnx_documents) is not None:
            return int(session.embed(["a"]).shape[1])  # no need to load torch for a number
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
        """(n, dim) float32, L2-normalised: through the ONNX export when there is one, else sentence-transformers
        (which the export was checked against)."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if (session := self._onnx_documents) is not None:
            return self._embed_sorted(session, texts, DOCUMENT_BATCH)
        self.calls += len(texts)
        encode = getattr(self.model, "encode_document", self.model.encode)
        vecs = encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vecs, dtype=np.float32)

    def embed_sentences(self, texts: list[str]) -> np.ndarray:
        """(n, dim) like :meth:`embed_documents`, through the one-thread ONNX session when there is one: for
        comparing source sentences with a question while answering, where loading sentence-transformers would
        cost more than the whole embedding."""
        if self._onnx is None or not texts:
            return self.embed_documents(texts)
        return self._embed_sorted(self._onnx, texts, self.batch_size)

    def _embed_sorted(self, session, texts: list[str], batch_size: int) -> np.ndarray:  # session: OnnxEmbedder
        import numpy as np

        self.calls += len(texts)
        # Sorted by length, so each batch pads to similar lengths.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: np.ndarray | None = None  # sized by the first batch: asking self.dim would load torch
        for at in range(0, len(order), batch_size):
            batch = order[at : at + batch_size]
            found = session.embed([texts[i] for i in batch])
            if vectors is None:
                vectors = np.empty((len(texts), found.shape[1]), dtype=np.float32)
            vectors[batch] = found
        assert vectors is not None  # texts is not empty
        return vectors

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalised."""
        import numpy as np

        self.calls += 1
        if self._onnx is not None:
            return self._onnx.embed([text])[0]
        encode = getattr(self.model, "encode_query", self.model.encode)
        vec = encode([text], normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vec, dtype=np.float32)[0]
