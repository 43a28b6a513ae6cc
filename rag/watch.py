"""Keep an index in step with a folder: file events (watchdog) collected, debounced, and turned into syncs.

A burst of events (a `git checkout` touching a thousand files, an editor's write-rename dance) becomes one sync:
a sync starts only once the folder has been quiet for ``quiet_s`` (or events have kept coming for ``max_wait_s``).
Each sync is an ordinary :meth:`Index.ingest`, so renames are detected by content and stay renames, and a crash
or a stop leaves the index as after its last committed batch.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.pipeline import IngestReport, Progress
from rag.api import Index
from rag.errors import IndexBusyError, SourceNotFoundError

# Quiet time before a sync, and the longest a stream of events may hold one back.
QUIET_S = 1.0
MAX_WAIT_S = 10.0
# A writer holding the index (another `rag ingest`): try again after this long.
BUSY_RETRY_S = 5.0


@dataclass(frozen=True)
class Sync:
    """One sync of a watch: how many file events it folded together, and what the ingest did."""

    number: int  # 0 is the sync a watch starts with
    events: int
    report: IngestReport

    def as_dict(self) -> dict[str, Any]:
        return {"sync": self.number, "events": self.events, **self.report.as_dict()}


class _Events:
    """Counts relevant file events and wakes the waiting loop; runs on watchdog's thread."""

    def __init__(self, folder: Path, ignored: list[Path]) -> None:
        self.folder = folder
        self.ignored = ignored
        self.count = 0
        self.arrived = threading.Event()
        self._lock = threading.Lock()

    def dispatch(self, event: Any) -> None:  # watchdog's handler interface
        if event.event_type in ("opened", "closed_no_write"):  # reads change nothing
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if not any(p and self._relevant(Path(str(p))) for p in paths):
            return
        with self._lock:
            self.count += 1
        self.arrived.set()

    def _relevant(self, path: Path) -> bool:
        """Outside the index's own folder, and not hidden (the walk leaves hidden files out too)."""
        if any(path.is_relative_to(d) for d in self.ignored):
            return False
        try:
            parts = path.relative_to(self.folder).parts
        except ValueError:
            return False
        return not any(part.startswith(".") for part in parts)

    def take(self) -> int:
        with self._lock:
            n, self.count = self.count, 0
        return n


def watch(
    index: Index,
    folder: str | Path,
    *,
    on_sync: Callable[[Sync], None],
    stop: threading.Event,
    quiet_s: float = QUIET_S,
    max_wait_s: float = MAX_WAIT_S,
    delete: bool = True,
    progress: Callable[[Progress], None] | None = None,
    on_busy: Callable[[str], None] | None = None,
) -> int:
    """Sync ``folder`` now, then again after each burst of changes, until ``stop`` is set; returns the syncs run.

    ``stop`` is also checked between the batches of a running sync, so a stop never waits for a long ingest to
    finish. When another process holds the writer lock, the sync is retried (``on_busy`` is told why).
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise SourceNotFoundError(f"{folder} {what}; give the folder of documents to watch")
    events = _Events(folder, [index.store.directory.resolve()])
    observer = _start_observer(folder, events)
    syncs = 0
    try:
        pending = 1  # the first sync catches up with whatever changed while nobody watched
        while not stop.is_set():
            if not pending:
                if not events.arrived.wait(0.2):
                    continue
                _settle(events, stop, quiet_s, max_wait_s)
                pending = events.take()
                if not pending or stop.is_set():
                    continue
            try:
                report = index.ingest(folder, delete=delete, progress=progress, cancelled=stop.is_set)
            except IndexBusyError as e:
                if on_busy:
                    on_busy(str(e))
                stop.wait(BUSY_RETRY_S)
                continue
            on_sync(Sync(syncs, pending if syncs else 0, report))
            syncs += 1
            pending = 0
    finally:
        observer.stop()
        observer.join(timeout=5)
    return syncs


def _settle(events: _Events, stop: threading.Event, quiet_s: float, max_wait_s: float) -> None:
    """Wait until no event has come for ``quiet_s`` (at most ``max_wait_s`` in all)."""
    deadline = time.monotonic() + max_wait_s
    while not stop.is_set():
        events.arrived.clear()
        left = deadline - time.monotonic()
        if left <= 0 or not events.arrived.wait(min(quiet_s, left)):
            return


def _start_observer(folder: Path, events: _Events) -> Any:
    """A running inotify (or the platform's) observer on ``folder``; a polling one when the kernel's limit on
    watches is reached (a very large tree), which is slower to notice but sees the same changes."""
    from watchdog.observers import Observer
    from watchdog.observers.polling import PollingObserver

    observer = Observer()
    observer.schedule(events, str(folder), recursive=True)
    try:
        observer.start()
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EMFILE):
            raise
        observer = PollingObserver()
        observer.schedule(events, str(folder), recursive=True)
        observer.start()
    return observer
