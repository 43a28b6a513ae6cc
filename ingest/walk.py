"""Which files a folder holds, and reading one of them without ever leaving the folder.

The walk never follows a symlinked folder (no loops, no escape) and reports it; a symlinked file is read only when
its target lies inside the folder. A folder that cannot be listed is reported, and the documents indexed under it
are kept: a listing error must never look like deleted files. Reads open the file once, check that it is a
regular file of a plausible size, and read at most the size limit.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ingest.records import SkipFile, SkippedFile


@dataclass
class Listing:
    """What a walk found: candidate files in a stable order, what it passed over, and the folders it could not
    list (the documents under those are kept)."""

    files: list[Path] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)

    def covers_unlisted(self, path: str) -> bool:
        return any(path == d or path.startswith(d.rstrip("/") + "/") for d in self.unlisted)


def shown(path: str | os.PathLike[str]) -> str:
    """``path`` as text that can always be printed and stored: bytes that are not UTF-8 become U+FFFD."""
    return os.fsencode(path).decode("utf-8", errors="replace")


def _valid_name(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes of a name that is not UTF-8
        return False
    return True


def list_folder(folder: Path) -> Listing:
    """Files below ``folder`` (resolved); hidden files and folders (.git, .rag, ...) are left out."""
    listing = Listing()

    def failed(error: OSError) -> None:
        where = str(error.filename or folder)
        listing.unlisted.append(where)
        listing.skipped.append(SkippedFile(shown(where), "unreadable-folder", error.strerror or ""))

    for root, dirs, files in os.walk(folder, onerror=failed, followlinks=False):
        kept = []
        for name in sorted(dirs):
            if name.startswith("."):
                continue
            if os.path.islink(os.path.join(root, name)):
                listing.skipped.append(SkippedFile(shown(os.path.join(root, name)), "symlinked-folder", "not followed"))
                continue
            kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.join(root, name)
            if not _valid_name(path):
                listing.skipped.append(SkippedFile(shown(path), "bad-file-name", "not valid UTF-8; rename the file"))
                continue
            listing.files.append(Path(path))
    return listing


def check(path: Path, folder: Path) -> os.stat_result:
    """The file's status, after checking that it may be read: inside ``folder``, a regular file."""
    if path.is_symlink():
        try:
            target = path.resolve(strict=False)
        except (OSError, RuntimeError) as e:  # Python reports a link cycle as RuntimeError
            raise SkipFile("symlink-loop", str(e)[:120]) from None
        if not target.is_relative_to(folder):
            raise SkipFile("outside-folder", f"links to {shown(target)}, outside {shown(folder)}")
    try:
        st = path.stat()
    except OSError as e:
        reason = "broken-symlink" if path.is_symlink() else "unreadable"
        raise SkipFile("symlink-loop" if e.errno == errno.ELOOP else reason, e.strerror or "") from None
    if not stat.S_ISREG(st.st_mode):
        raise SkipFile("special-file", "not a regular file")
    return st


def read(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of the regular file at ``path`` (:class:`SkipFile` when it holds more).

    Opened without blocking and checked again on the open descriptor, so a file swapped for a pipe or device
    between :func:`check` and the read is never waited on.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError as e:
        raise SkipFile("permission-denied", e.strerror or "") from None
    except OSError as e:
        raise SkipFile("unreadable", e.strerror or "") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SkipFile("special-file", "not a regular file")
        if st.st_size > limit:
            raise SkipFile("too-large", f"{st.st_size} bytes > {limit}")
        parts, size = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            parts.append(chunk)
            size += len(chunk)
            if size > limit:  # grew since it was checked
                raise SkipFile("too-large", f"more than {limit} bytes")
        return b"".join(parts)
    except OSError as e:
        raise SkipFile("unreadable", e.strerror or "") from None
    finally:
        os.close(fd)
