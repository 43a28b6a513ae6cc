"""How much one file may cost to parse: memory, time, and what its loader may produce.

A small file can inflate to gigabytes (a zip bomb's XML part, a TIFF of a thousand full-page frames), and a
parser can spin. Each limit is a setting (``RAG_<NAME>``, rag/config.py); a file that reaches one is skipped
with a reason whose detail names the setting that raises it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 1536  # address space of a parser process (RLIMIT_AS)
    seconds: int = 300  # wall clock and CPU time of one file's parse
    unzipped_mb: int = 512  # what a zip-based file's members may inflate to, in all
    zip_ratio: int = 100  # inflated / compressed size of one member larger than a megabyte
    pages: int = 2000  # pages of a PDF
    frames: int = 200  # frames of a picture (a multi-page TIFF), each read by OCR
    rows: int = 200_000  # spreadsheet rows of one file
    depth: int = 3  # messages nested in messages
    chars: int = 64 << 20  # characters of text one file yields (at most loaders.document.MAX_TEXT_CHARS)


def setting(name: str) -> str:
    """The environment variable that sets the limit ``name`` (a field of :class:`Limits`)."""
    return {
        "memory_mb": "RAG_PARSE_MEMORY_MB",
        "seconds": "RAG_PARSE_SECONDS",
        "unzipped_mb": "RAG_MAX_UNZIPPED_MB",
        "zip_ratio": "RAG_MAX_ZIP_RATIO",
        "pages": "RAG_MAX_PAGES",
        "frames": "RAG_MAX_FRAMES",
        "rows": "RAG_MAX_ROWS",
        "depth": "RAG_MAX_DEPTH",
        "chars": "RAG_MAX_CHARS",
    }.get(name, name)
