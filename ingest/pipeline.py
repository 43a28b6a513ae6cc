"""Sync a folder into the index: walk, skip what is unchanged, load, chunk, embed in batches, write in batches.

Embedding is a function handed in, so this module never loads a model itself. Each batch of files is one store
transaction: an interrupted run keeps every finished batch and nothing of the unfinished one.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ingest.chunking import Chunker
from ingest.limits import Limits, setting
from ingest.loaders import MAX_FILE_BYTES, LoadedDocument, kind_of
from ingest.ocr import Ocr
from ingest.records import Chunk, DocumentInfo, SkipFile, SkippedFile
from ingest.sandbox import Parsed, Parser
from ingest.walk import Listing, check, list_folder, read

if TYPE_CHECKING:
    import numpy as np

Embed = Callable[[list[str]], "np.ndarray"]


class Writes(Protocol):
    """One atomic write to the index (rag.storage.transaction.Transaction)."""

    def put_document(self, info: DocumentInfo, chunks: list[Chunk], vectors: np.ndarray) -> int: ...
    def copy_document(self, source_path: str, info: DocumentInfo) -> tuple[int, int]: ...
    def move_document(self, old_path: str, info: DocumentInfo) -> int: ...
    def remove_document(self, path: str) -> int: ...


class Catalog(Protocol):
    """What a sync needs of the index (rag.storage.store.Store): the records it holds, and atomic writes."""

    def document(self, path: str) -> DocumentInfo | None: ...
    def documents(self, under: str | None = None) -> list[DocumentInfo]: ...
    def documents_with_hash(self, content_hash: str) -> list[DocumentInfo]: ...
    def touch_document(self, path: str, mtime: float) -> None: ...
    def transaction(self) -> AbstractContextManager[Writes]: ...
    def save_vectors(self) -> None: ...


# A batch is embedded and committed when it holds this many chunks (or files): large enough for efficient
# embedding, small enough that an interrupted run loses little. A single huge file is embedded in slices of
# BATCH_CHUNKS (memory stays bounded) but committed whole, so no reader ever sees half a document.
BATCH_CHUNKS = 256
BATCH_FILES = 64
# Readers load the FAISS file of the last saved generation (else rebuild it from SQLite): during a long ingest,
# save it this often so they stay fast.
SAVE_EVERY_S = 30.0


@dataclass
class IngestReport:
    """What one ingest run did."""

    folder: str
    files_seen: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    moved: int = 0  # renamed or moved: the stored chunks and vectors now answer to the new path
    copied: int = 0  # same bytes as a document already indexed: its chunks and vectors were copied
    removed: int = 0
    chunks_added: int = 0
    chunks_embedded: int = 0  # chunks_added minus those reused from moved or copied files
    chunks_removed: int = 0
    reembedded: int = 0  # stored chunks embedded again because the index switched to another embedding model
    ocr_pages: int = 0  # page images read by OCR in this run
    ocr_cached: int = 0  # page images whose OCR text was already cached
    ocr_seconds: float = 0.0
    interrupted: bool = False  # stopped between batches on request: what was committed stays
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def indexed(self) -> int:
        return self.added + self.updated + self.moved + self.copied

    def skipped_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.skipped:
            out[s.reason] = out.get(s.reason, 0) + 1
        return dict(sorted(out.items()))

    def as_dict(self) -> dict[str, Any]:
        """Every field, plus ``indexed`` and ``skipped_by_reason`` (what `ingest --json` prints)."""
        return {**asdict(self), "indexed": self.indexed, "skipped_by_reason": self.skipped_by_reason()}


@dataclass(frozen=True)
class Progress:
    files_done: int
    files_total: int
    chunks: int  # chunks embedded so far
    elapsed: float
    path: str | None = None


@dataclass
class _Pending:
    info: DocumentInfo
    chunks: list[Chunk]
    existed: bool
    reuse_from: str | None = None  # path of a stored document with the same bytes
    move: bool = False  # ... which is gone from disk: take its rows over instead of copying them


@dataclass
class _Parsing:
    """A file handed to the parser, waiting for its document."""

    key: str
    future: Future[Parsed]
    digest: str
    size: int
    mtime: float
    existed: bool


def sync(
    folder: Path,
    store: Catalog,
    chunker: Chunker,
    embed: Embed,
    *,
    delete: bool = True,
    ocr: Ocr | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    limits: Limits | None = None,
    workers: int = 1,
) -> IngestReport:
    """Bring the index in line with ``folder``: add new files, replace changed ones, drop vanished ones.

    A file is unchanged (and neither read nor embedded) when its size, mtime and chunker settings match what the
    index recorded, or, after a touch, its sha256. A file whose bytes are already indexed under another path
    (renamed, moved, copied) reuses those chunks and vectors. Scanned pages and pictures are read with ``ocr``.
    An e-mail's supported attachments are documents of their own, at ``<mail path>/<attachment name>``; they
    live and go with the message.

    Files are parsed by ``workers`` processes under ``limits`` (ingest.sandbox), a few files ahead of the
    batch being embedded; ``workers=0`` parses in this process.

    ``cancelled`` is asked after each committed batch; when it says True the run stops there (nothing is
    removed: the walk is unfinished) and the report says ``interrupted``.
    """
    limits = limits or Limits()
    with Parser(limits, ocr, workers) as parser:
        return _sync(folder, store, chunker, embed, parser, delete, progress, cancelled)


def _sync(
    folder: Path,
    store: Catalog,
    chunker: Chunker,
    embed: Embed,
    parser: Parser,
    delete: bool,
    progress: Callable[[Progress], None] | None,
    cancelled: Callable[[], bool] | None,
) -> IngestReport:
    started = time.monotonic()
    folder = folder.resolve()
    report = IngestReport(folder=str(folder))
    settings_key = chunker.settings.key()
    listing = list_folder(folder)
    files = listing.files
    report.skipped.extend(listing.skipped)
    seen: set[str] = set()
    outside: list[str] = []  # files that now link out of the folder: their old text is dropped
    pending: list[_Pending] = []
    moved_to: dict[str, str] = {}  # old path -> new path, for twins found again later in this run
    last_save = time.monotonic()
    done = 0

    def tick(path: str | None = None) -> None:
        if progress:
            progress(Progress(done, len(files), report.chunks_embedded, time.monotonic() - started, path))

    inflight: deque[_Parsing] = deque()  # parsing while the batch before is embedded, oldest first
    ahead = max(1, parser.workers) + 1

    def count_ocr(parsed: Parsed) -> None:
        report.ocr_pages += parsed.ocr_pages
        report.ocr_cached += parsed.ocr_cached
        report.ocr_seconds += parsed.ocr_seconds

    def parsed(key: str, future: Future[Parsed]) -> tuple[LoadedDocument, list[Chunk]]:
        result = parser.result(future)
        count_ocr(result)
        return result.document, _chunks(result.document, chunker)

    def keep_attachments(key: str) -> None:
        """The attachments stored for a message that is not read again stay (they go with the message)."""
        seen.update(d.path for d in store.documents(under=key))

    def add_attachments(key: str, doc: LoadedDocument, mtime: float, depth: int = 1) -> None:
        """The supported attachments of ``doc`` as documents of their own, and theirs (an attached message's),
        down to the depth limit."""
        report.skipped.extend(replace(d, path=f"{key}/{d.path}") for d in doc.dropped)
        for item in doc.attachments:
            child = f"{key}/{item.name}"
            seen.add(child)
            try:
                if depth >= parser.limits.depth and kind_of(Path(item.name)) == "email":
                    detail = f"a message nested {depth + 1} deep > {parser.limits.depth}"
                    raise SkipFile("too-deep", f"{detail} ({setting('depth')} raises it)")
                child_doc, chunks = parsed(child, parser.submit(Path(item.name), item.data))
            except SkipFile as e:
                report.skipped.append(SkippedFile(child, e.reason, e.detail))
                continue
            digest = hashlib.sha256(item.data).hexdigest()
            info = DocumentInfo(
                child, digest, len(item.data), mtime, child_doc.kind, child_doc.title, child_doc.encoding, settings_key
            )  # fmt: skip
            pending.append(_Pending(info, chunks, store.document(child) is not None))
            add_attachments(child, child_doc, mtime, depth + 1)

    def embed_all(texts: list[str]) -> np.ndarray:
        import numpy as np

        parts = []
        for i in range(0, len(texts), BATCH_CHUNKS):
            parts.append(embed(texts[i : i + BATCH_CHUNKS]))
            report.chunks_embedded += len(parts[-1])
            tick()
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def flush() -> None:
        nonlocal last_save
        if not pending:
            return
        vectors = embed_all([c.text for p in pending if p.reuse_from is None for c in p.chunks])
        offset = 0
        with store.transaction() as tx:
            for p in pending:
                if p.reuse_from is None:
                    n = len(p.chunks)
                    report.chunks_removed += tx.put_document(p.info, p.chunks, vectors[offset : offset + n])
                    offset += n
                elif p.move:
                    report.chunks_removed += tx.move_document(p.reuse_from, p.info)
                else:
                    removed, copied = tx.copy_document(p.reuse_from, p.info)
                    report.chunks_removed += removed
                    report.chunks_added += copied
        for p in pending:
            report.chunks_added += len(p.chunks)
            if p.reuse_from is not None:
                report.moved += p.move
                report.copied += not p.move
            elif p.existed:
                report.updated += 1
            else:
                report.added += 1
        pending.clear()
        if time.monotonic() - last_save > SAVE_EVERY_S:
            store.save_vectors()
            last_save = time.monotonic()

    def twin(digest: str, key: str) -> _Pending | None:
        """A stored document with these bytes and chunker settings, to reuse instead of embedding again."""
        for other in store.documents_with_hash(digest):
            if other.chunker != settings_key or other.path == key:
                continue
            if other.path in moved_to:  # moved earlier in this run: copy from where it went
                return _Pending(other, [], False, moved_to[other.path], move=False)
            # An attachment's path lies inside its message's file: never on disk, and never "moved" away.
            gone = not os.path.lexists(other.path) and not _inside_file(other.path)
            if gone:
                moved_to[other.path] = key
            return _Pending(other, [], False, other.path, move=gone)
        return None

    def batch_full() -> bool:
        return len(pending) >= BATCH_FILES or sum(len(p.chunks) for p in pending if not p.reuse_from) >= BATCH_CHUNKS

    def commit_if_full() -> bool:
        """Commit the batch when it is full; True when the caller asked to stop after it."""
        if not batch_full():
            return False
        flush()
        return cancelled is not None and cancelled()

    def settle(room: int) -> bool:
        """Take parsed files in order until at most ``room`` are still parsing; True when asked to stop."""
        while len(inflight) > room:
            job = inflight.popleft()
            try:
                doc, chunks = parsed(job.key, job.future)
            except SkipFile as e:
                # What was indexed for this file before stays: a file that became unreadable keeps its old text.
                report.skipped.append(SkippedFile(job.key, e.reason, e.detail))
                keep_attachments(job.key)
                continue
            info = DocumentInfo(
                job.key, job.digest, job.size, job.mtime, doc.kind, doc.title, doc.encoding, settings_key
            )
            pending.append(_Pending(info, chunks, job.existed))
            add_attachments(job.key, doc, job.mtime)
            if commit_if_full():
                return True
        return False

    for path in files:
        report.files_seen += 1
        key = str(path)
        seen.add(key)
        tick(key)
        done += 1
        try:
            st = check(path, folder)
        except SkipFile as e:
            report.skipped.append(SkippedFile(key, e.reason, e.detail))
            if e.reason == "outside-folder" and store.document(key) is not None:
                outside.append(key)
            continue
        if (kind := kind_of(path)) is None:
            report.skipped.append(SkippedFile(key, "unsupported", path.suffix or "no extension"))
            continue
        if st.st_size > MAX_FILE_BYTES:
            report.skipped.append(SkippedFile(key, "too-large", f"{st.st_size} bytes > {MAX_FILE_BYTES}"))
            continue
        old = store.document(key)
        same_settings = old is not None and old.chunker == settings_key
        if old and same_settings and old.size == st.st_size and old.mtime == st.st_mtime:
            report.unchanged += 1
            keep_attachments(key)
            continue
        try:
            data = read(path, MAX_FILE_BYTES)
        except SkipFile as e:
            report.skipped.append(SkippedFile(key, e.reason, e.detail))
            keep_attachments(key)
            continue
        digest = hashlib.sha256(data).hexdigest()
        if old and same_settings and old.content_hash == digest:  # touched, not changed
            store.touch_document(key, st.st_mtime)
            report.unchanged += 1
            keep_attachments(key)
            continue
        # A message is always read again: its attachments are documents of their own that a twin would not bring.
        if kind != "email" and (found := twin(digest, key)) is not None:
            info = replace(found.info, path=key, size=st.st_size, mtime=st.st_mtime)
            pending.append(replace(found, info=info, existed=old is not None))
            stop = commit_if_full()
        else:
            future = parser.submit(path, data)
            inflight.append(_Parsing(key, future, digest, st.st_size, st.st_mtime, old is not None))
            stop = settle(ahead)
        if stop:
            report.interrupted = True
            break
    if not report.interrupted and settle(0):
        report.interrupted = True
    for job in inflight:  # stopped early: what is still parsing is not needed
        job.future.cancel()
    flush()

    if delete and not report.interrupted:
        gone = [*outside, *(d.path for d in store.documents(under=str(folder)) if _gone(d.path, seen, listing))]
        if gone:
            with store.transaction() as tx:
                for path_str in gone:
                    report.chunks_removed += tx.remove_document(path_str)
            report.removed = len(gone)
    tick()
    report.seconds = time.monotonic() - started
    return report


def _chunks(doc: LoadedDocument, chunker: Chunker) -> list[Chunk]:
    """The chunks of ``doc``; :class:`SkipFile` when there are none, or the splitter fails on it."""
    try:
        chunks = chunker.split(doc)
    except Exception as e:  # a splitter bug on one odd file must not end the run for all the others
        raise SkipFile("error", f"{type(e).__name__}: {e}"[:200]) from None
    if not chunks:
        raise SkipFile("empty", "no chunks")
    return chunks


def _inside_file(path: str) -> bool:
    return os.path.isfile(os.path.dirname(path))


def _gone(path: str, seen: set[str], listing: Listing) -> bool:
    """A document's file is gone only when the walk did not meet it, it is not under a folder that could not be
    listed, and nothing exists at its path (a hidden or symlinked folder's files, indexed as folders of their
    own, are still there)."""
    return path not in seen and not listing.covers_unlisted(path) and not os.path.lexists(path)
