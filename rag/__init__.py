"""Ask questions about a folder of documents with a local model, offline, with sources.

    from rag import Index
    index = Index.open(".rag", create=True)
    index.ingest("sample_docs")
    answer = index.ask("What does top-p sampling keep?")
    print(answer.text, [hit.path for hit in answer.sources])

Importing this package loads no torch, transformers or faiss; models load on first use.
"""

from ingest.pipeline import IngestReport, Progress, SkippedFile
from rag.api import AnswerStream, Index
from rag.config import Config
from rag.errors import (
    ConfigError,
    IndexFormatError,
    IndexNotFoundError,
    ModelMismatchError,
    ModelNotFoundError,
    RagError,
    SourceNotFoundError,
)
from rag.generate import Decoding
from rag.types import Answer, Hit

__all__ = [
    "Answer",
    "AnswerStream",
    "Config",
    "ConfigError",
    "Decoding",
    "Hit",
    "Index",
    "IndexFormatError",
    "IndexNotFoundError",
    "IngestReport",
    "ModelMismatchError",
    "ModelNotFoundError",
    "Progress",
    "RagError",
    "SkippedFile",
    "SourceNotFoundError",
]
