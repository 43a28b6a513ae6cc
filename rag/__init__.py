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
    from ingest.pipeline import IngestReport, Progress
    from ingest.records import SkippedFile
    from rag.answer.pipeline import AnswerStream
    from rag.answer.support import Support
    from rag.api import Index
    from rag.config import Config
    from rag.conversation import Conversation, Turn
    from rag.errors import (
        ConfigError,
        IndexBusyError,
        IndexClosedError,
        IndexFormatError,
        IndexNotFoundError,
        IndexWriteError,
        ModelMismatchError,
        ModelNotFoundError,
        RagError,
        SourceNotFoundError,
        StoreUnavailableError,
    )
    from rag.models.decoding import Decoding
    from rag.models.tuning import TrainSettings
    from rag.retrieval.retrieve import Candidate, Retrieval
    from rag.storage.health import Problem
    from rag.tools.embedding_map import EmbeddingMap, embedding_map
    from rag.tools.evaluate import evaluate
    from rag.tools.explain import Explanation, explain
    from rag.tools.tune import TuneReport, tune
    from rag.types import Answer, Filters, Hit

_EXPORTS = {
    "Answer": "rag.types",
    "AnswerStream": "rag.answer.pipeline",
    "Candidate": "rag.retrieval.retrieve",
    "Config": "rag.config",
    "Conversation": "rag.conversation",
    "ConfigError": "rag.errors",
    "Decoding": "rag.models.decoding",
    "EmbeddingMap": "rag.tools.embedding_map",
    "Explanation": "rag.tools.explain",
    "Filters": "rag.types",
    "Hit": "rag.types",
    "Index": "rag.api",
    "IndexBusyError": "rag.errors",
    "IndexClosedError": "rag.errors",
    "IndexFormatError": "rag.errors",
    "IndexNotFoundError": "rag.errors",
    "IndexWriteError": "rag.errors",
    "IngestReport": "ingest.pipeline",
    "ModelMismatchError": "rag.errors",
    "ModelNotFoundError": "rag.errors",
    "Problem": "rag.storage.health",
    "Progress": "ingest.pipeline",
    "RagError": "rag.errors",
    "Retrieval": "rag.retrieval.retrieve",
    "SkippedFile": "ingest.records",
    "SourceNotFoundError": "rag.errors",
    "StoreUnavailableError": "rag.errors",
    "Support": "rag.answer.support",
    "TrainSettings": "rag.models.tuning",
    "TuneReport": "rag.tools.tune",
    "Turn": "rag.conversation",
    "embedding_map": "rag.tools.embedding_map",
    "evaluate": "rag.tools.evaluate",
    "explain": "rag.tools.explain",
    "tune": "rag.tools.tune",
}
__all__ = [
    "Answer",
    "AnswerStream",
    "Candidate",
    "Config",
    "ConfigError",
    "Conversation",
    "Decoding",
    "EmbeddingMap",
    "Explanation",
    "Filters",
    "Hit",
    "Index",
    "IndexBusyError",
    "IndexClosedError",
    "IndexFormatError",
    "IndexNotFoundError",
    "IndexWriteError",
    "IngestReport",
    "ModelMismatchError",
    "ModelNotFoundError",
    "Problem",
    "Progress",
    "RagError",
    "Retrieval",
    "SkippedFile",
    "SourceNotFoundError",
    "StoreUnavailableError",
    "Support",
    "TrainSettings",
    "TuneReport",
    "Turn",
    "embedding_map",
    "evaluate",
    "explain",
    "tune",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rag' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
