"""Optional cross-encoder reranking (sentence-transformers ``CrossEncoder``), off unless a model is configured.

No reranker is bundled: configure a local model folder (``--reranker DIR`` / ``RAG_RERANKER``), or a hub id, which
is the only case that may reach the network.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from rag.errors import ModelNotFoundError
from rag.models.sources import looks_like_hub_id, prepare_hub_access

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder


class Reranker:
    """Scores (query, passage) pairs with a cross-encoder; higher is more relevant."""

    def __init__(self, spec: str) -> None:
        path = Path(spec).expanduser()
        if path.is_dir():
            self.location, self.local = str(path.resolve()), True
        elif looks_like_hub_id(spec) and not path.exists():
            self.location, self.local = spec, False
        else:
            raise ModelNotFoundError(
                f"reranker {spec!r} is not a folder; give a cross-encoder model folder (or a hub id, org/name), "
                "or unset --reranker / RAG_RERANKER"
            )
        self.spec = spec

    @cached_property
    def model(self) -> CrossEncoder:
        prepare_hub_access(self.local)
        from sentence_transformers import CrossEncoder

        try:
            return CrossEncoder(self.location, device="cpu", local_files_only=self.local)
        except (OSError, ValueError) as e:  # not a model folder, or a hub id that is not available offline
            raise ModelNotFoundError(
                f"reranker {self.spec!r} could not be loaded ({e.__class__.__name__}); give a local "
                "cross-encoder folder, or unset --reranker / RAG_RERANKER"
            ) from None

    def score(self, query: str, texts: list[str]) -> list[float]:
        if not texts:
            return []
        return [float(s) for s in self.model.predict([(query, t) for t in texts], convert_to_numpy=True)]
