"""Typed errors of the library. The CLI turns each into one line on stderr and exit code 1."""


class RagError(Exception):
    """Base class: an expected failure whose message says what went wrong and what to do."""


class ConfigError(RagError):
    """A setting (flag, environment variable) has an unknown name or an invalid value."""


class IndexNotFoundError(RagError):
    """The index directory holds no index."""


class IndexFormatError(RagError):
    """The index was written by an incompatible version of this tool, or is damaged."""


class ModelMismatchError(RagError):
    """The configured embedding model is not the one the index was built with."""


class ModelNotFoundError(RagError):
    """A configured model cannot be found locally (and is not a hub id we may fetch)."""


class SourceNotFoundError(RagError):
    """A folder or file given to ingest does not exist or cannot be read."""


class IndexBusyError(RagError):
    """Another process is writing to the index (one writer at a time; readers are never blocked)."""


class IndexWriteError(RagError):
    """The index cannot be written: the disk is full, or its directory is read-only or not a directory."""


class IndexClosedError(RagError):
    """The :class:`~rag.api.Index` was closed; open it again with ``Index.open``."""


class StoreUnavailableError(RagError):
    """The configured PostgreSQL store cannot be reached, or refused the connection."""
