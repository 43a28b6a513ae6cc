"""Ask questions about a folder of documents with a local model, offline, with sources.

    from rag import Index
    index = Index.open(".rag", create=True)
    index.ingest("sample_docs")
    answer = index.ask("Who introduced nucleus (top-p) sampling?")
    print(answer.text, [hit.path for hit in answer.sources])

Importing this package loads nothing heavy (no torch, transformers, faiss, not even SQLAlchemy): names are
imported on first use, so `rag --help` stays instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest.pipeline import IngestReport, Progress, SkippedFile
    from rag.api import AnswerStream, Index
    from rag.config import Config
    from rag.embedmap import EmbeddingMap, embedding_map
    from rag.errors import (
        ConfigError,
        IndexBusyError,
        IndexFormatError,
        IndexNotFoundError,
        ModelMismatchError,
        ModelNotFoundError,
        RagError,
        SourceNotFoundError,
    )
    from rag.explain import Explanation, explain
    from rag.generate import Decoding
    from rag.store import Problem
    from rag.types import Answer, Hit

_EXPORTS = {
    "Answer": "rag.types",
    "AnswerStream": "rag.api",
    "Config": "rag.config",
    "ConfigError": "rag.errors",
    "Decoding": "rag.generate",
    "EmbeddingMap": "rag.embedmap",
    "Explanation": "rag.explain",
    "Hit": "rag.types",
    "Index": "rag.api",
    "IndexBusyError": "rag.errors",
    "IndexFormatError": "rag.errors",
    "IndexNotFoundError": "rag.errors",
    "IngestReport": "ingest.pipeline",
    "Problem": "rag.store",
    "ModelMismatchError": "rag.errors",
    "ModelNotFoundError": "rag.errors",
    "Progress": "ingest.pipeline",
    "RagError": "rag.errors",
    "SkippedFile": "ingest.pipeline",
    "SourceNotFoundError": "rag.errors",
    "embedding_map": "rag.embedmap",
    "explain": "rag.explain",
}
__all__ = [
    "Answer",
    "AnswerStream",
    "Config",
    "ConfigError",
    "Decoding",
    "EmbeddingMap",
    "Explanation",
    "Hit",
    "Index",
    "IndexBusyError",
    "IndexFormatError",
    "IndexNotFoundError",
    "IngestReport",
    "ModelMismatchError",
    "ModelNotFoundError",
    "Problem",
    "Progress",
    "RagError",
    "SkippedFile",
    "SourceNotFoundError",
    "embedding_map",
    "explain",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rag' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
