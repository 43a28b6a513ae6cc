"""Sync a folder into the index: walk, skip what is unchanged, load, chunk, embed in batches, write in batches.

Embedding is a function handed in, so this module never loads a model itself. Each batch of files is one store
transaction: an interrupted run keeps every finished batch and nothing of the unfinished one.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.chunking import Chunk, Chunker
from ingest.loaders import MAX_FILE_BYTES, SkipFile, kind_of, load
from rag.store import DocumentInfo

if TYPE_CHECKING:
    import numpy as np

    from rag.store import Store

Embed = Callable[[list[str]], "np.ndarray"]

# A batch is embedded and committed when it holds this many chunks (or files): large enough for efficient
# embedding, small enough that an interrupted run loses little.
BATCH_CHUNKS = 256
BATCH_FILES = 64


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str  # short stable label: binary, empty, unsupported, pdf-encrypted, ...
    detail: str = ""


@dataclass
class IngestReport:
    """What one ingest run did."""

    folder: str
    files_seen: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def indexed(self) -> int:
        return self.added + self.updated

    def skipped_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.skipped:
            out[s.reason] = out.get(s.reason, 0) + 1
        return dict(sorted(out.items()))


@dataclass(frozen=True)
class Progress:
    files_done: int
    files_total: int
    chunks: int  # chunks embedded so far
    elapsed: float
    path: str | None = None


def walk(folder: Path) -> Iterator[Path]:
    """Files below ``folder`` in a stable order; hidden files and folders (.git, .rag, ...) are left out.

    Symlinked folders are not followed (no loops); symlinked files are yielded and resolved by the reader.
    """
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


@dataclass
class _Pending:
    info: DocumentInfo
    chunks: list[Chunk]
    existed: bool


def sync(
    folder: Path,
    store: Store,
    chunker: Chunker,
    embed: Embed,
    *,
    delete: bool = True,
    progress: Callable[[Progress], None] | None = None,
) -> IngestReport:
    """Bring the index in line with ``folder``: add new files, replace changed ones, drop vanished ones."""
    started = time.monotonic()
    folder = folder.resolve()
    report = IngestReport(folder=str(folder))
    files = list(walk(folder))
    seen: set[str] = set()
    pending: list[_Pending] = []
    chunks_done = 0

    def flush() -> None:
        nonlocal chunks_done
        if not pending:
            return
        texts = [c.text for p in pending for c in p.chunks]
        vectors = embed(texts)
        offset = 0
        with store.transaction() as tx:
            for p in pending:
                n = len(p.chunks)
                report.chunks_removed += tx.put_document(p.info, p.chunks, vectors[offset : offset + n])
                offset += n
        for p in pending:
            report.chunks_added += len(p.chunks)
            if p.existed:
                report.updated += 1
            else:
                report.added += 1
        chunks_done += len(texts)
        pending.clear()

    for i, path in enumerate(files):
        report.files_seen += 1
        key = str(path)
        seen.add(key)
        if progress:
            progress(Progress(i, len(files), chunks_done, time.monotonic() - started, key))
        try:
            st = path.stat()  # follows symlinks
        except OSError as e:
            reason = "broken-symlink" if path.is_symlink() else "unreadable"
            report.skipped.append(SkippedFile(key, reason, e.strerror or ""))
            continue
        if not stat.S_ISREG(st.st_mode):
            report.skipped.append(SkippedFile(key, "special-file"))
            continue
        if kind_of(path) is None:
            report.skipped.append(SkippedFile(key, "unsupported", path.suffix or "no extension"))
            continue
        if st.st_size > MAX_FILE_BYTES:
            report.skipped.append(SkippedFile(key, "too-large", f"{st.st_size} bytes > {MAX_FILE_BYTES}"))
            continue
        old = store.document(key)
        if old and old.size == st.st_size and old.mtime == st.st_mtime:
            report.unchanged += 1
            continue
        try:
            data = path.read_bytes()
        except OSError as e:
            reason = "permission-denied" if isinstance(e, PermissionError) else "unreadable"
            report.skipped.append(SkippedFile(key, reason, e.strerror or ""))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if old and old.content_hash == digest:  # touched, not changed
            store.touch_document(key, st.st_mtime)
            report.unchanged += 1
            continue
        try:
            doc = load(path, data)
            chunks = chunker.split(doc)
        except SkipFile as e:
            # What was indexed for this file before stays: a file that became unreadable keeps its old text.
            report.skipped.append(SkippedFile(key, e.reason, e.detail))
            continue
        except Exception as e:  # a parser bug on one odd file must not end the run for all the others
            report.skipped.append(SkippedFile(key, "error", f"{type(e).__name__}: {e}"[:200]))
            continue
        if not chunks:
            report.skipped.append(SkippedFile(key, "empty", "no chunks"))
            continue
        info = DocumentInfo(key, digest, st.st_size, st.st_mtime, doc.kind, doc.title, doc.encoding)
        pending.append(_Pending(info, chunks, old is not None))
        if len(pending) >= BATCH_FILES or sum(len(p.chunks) for p in pending) >= BATCH_CHUNKS:
            flush()
    flush()

    if delete:
        gone = [d.path for d in store.documents(under=str(folder)) if d.path not in seen]
        if gone:
            with store.transaction() as tx:
                for path_str in gone:
                    report.chunks_removed += tx.remove_document(path_str)
            report.removed = len(gone)
    if progress:
        progress(Progress(len(files), len(files), chunks_done, time.monotonic() - started))
    report.seconds = time.monotonic() - started
    return report
