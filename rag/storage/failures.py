"""What SQLite and the disk say when they fail, as typed errors whose one line says what to do.

A full disk, a damaged database and an unwritable directory reach the user as the messages below, never as a
driver traceback; the index is left as it was before the write that failed.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from rag.errors import IndexFormatError, IndexWriteError, RagError


def disk_full(directory: Path) -> IndexWriteError:
    return IndexWriteError(
        f"the disk holding the index {directory} is full; free some space and run the command again "
        "(the index is as it was before this write)"
    )


def damaged(directory: Path, detail: str) -> IndexFormatError:
    return IndexFormatError(
        f"{directory / 'index.db'} is damaged ({detail}); `rag doctor` says more. Recover by moving {directory} "
        "away and running `rag ingest FOLDER` again for each folder it held"
    )


def read_only(directory: Path, detail: str) -> IndexWriteError:
    return IndexWriteError(
        f"cannot write to the index at {directory} ({detail}); make the directory writable, or pass another --index"
    )


def no_space(directory: Path) -> bool:
    try:
        return os.statvfs(directory).f_bavail == 0
    except OSError:
        return False


def translate(directory: Path, error: BaseException) -> RagError | None:
    """The typed error for a database or file-system failure, or None when it is something else."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return disk_full(directory)
    if no_space(directory):  # SQLite says "disk I/O error" or "readonly" when it cannot create its WAL files
        return disk_full(directory)
    if isinstance(error, OSError) and error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return read_only(directory, error.strerror or str(error))
    text = str(error).lower()
    if "disk is full" in text or "no space left" in text or "file too large" in text:
        return disk_full(directory)
    # Every text column is written from str: bytes that are not UTF-8 can only be damage.
    if "malformed" in text or "file is not a database" in text or "could not decode to utf-8" in text:
        return damaged(directory, str(error).splitlines()[0][:120])
    if "readonly database" in text or "read-only" in text or "unable to open database" in text:
        return read_only(directory, str(error).splitlines()[0][:120])
    return None
