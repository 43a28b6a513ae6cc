"""`rag watch`: a real watcher process follows a folder; each change shows in search within seconds, a burst of
writes becomes a few syncs, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rag import Config, Index

from .conftest import ROOT

SETTLE_S = "0.5"
WAIT_S = 60.0  # generous: a loaded CI machine embeds slowly; a working watcher shows changes in a few seconds


class Watcher:
    """``rag watch --json`` in a child process; its JSON lines (one per sync) collected on a thread."""

    def __init__(self, folder: Path, index_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rag.cli",
                "--index",
                str(index_dir),
                "watch",
                str(folder),
                "--json",
                "--settle",
                SETTLE_S,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.syncs: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.syncs.put(json.loads(line))

    def next_sync(self, timeout: float = WAIT_S) -> dict:
        try:
            return self.syncs.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no sync within {timeout} s; stderr: {self._stderr()}") from None

    def drain(self) -> list[dict]:
        out = []
        while not self.syncs.empty():
            out.append(self.syncs.get())
        return out

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err


def _until(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{what}: not seen within {timeout} s")


@pytest.fixture
def watched(tmp_path: Path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "start.md").write_text("# Start\nThe watched folder begins with this note about harbour tides.\n")
    index_dir = tmp_path / "idx"
    watcher = Watcher(folder, index_dir)
    yield folder, index_dir, watcher
    if watcher.proc.poll() is None:
        watcher.proc.kill()
        watcher.proc.wait()


def test_watch_follows_creates_edits_renames_and_deletes(watched, sample_index: Index) -> None:
    folder, index_dir, watcher = watched
    first = watcher.next_sync()
    assert (first["sync"], first["added"]) == (0, 1)
    index = Index.open(config=Config.load(index=index_dir))
    index.embedder = sample_index.embedder

    def top(query: str) -> tuple[str, str] | None:
        hits = index.search(query, k=1, retrieval="bm25")
        return (Path(hits[0].path).name, hits[0].text) if hits else None

    note = folder / "ferries.md"
    note.write_text("# Ferries\nThe Quennell ferry crosses to Sark island twice a day.\n")
    _until(lambda: (top("Quennell ferry") or ("", ""))[0] == "ferries.md", "a created file")

    note.write_text("# Ferries\nThe Quennell ferry now crosses to Herm island at noon.\n")
    _until(lambda: "Herm" in (top("Quennell ferry") or ("", ""))[1], "an edited file")

    note.rename(folder / "boats.md")
    _until(lambda: (top("Quennell ferry") or ("", ""))[0] == "boats.md", "a renamed file")
    syncs = watcher.drain()
    assert any(s["moved"] == 1 and s["chunks_embedded"] == 0 for s in syncs), syncs  # a rename, not a re-embed

    (folder / "boats.md").unlink()
    _until(lambda: top("Quennell ferry") is None, "a deleted file")
    assert index.counts()[0] == 1

    code, err = watcher.stop()
    assert code == 0 and "stopped" in err, err
    index.close()


def test_a_burst_of_500_writes_is_a_few_syncs(watched, sample_index: Index) -> None:
    folder, index_dir, watcher = watched
    watcher.next_sync()
    for i in range(500):
        (folder / f"log-{i:03d}.txt").write_text(f"Entry {i}: the gauge at station {i} read {i * 7} millimetres.\n")
    index = Index.open(config=Config.load(index=index_dir))
    _until(lambda: index.counts()[0] == 501, "500 new files indexed")
    time.sleep(float(SETTLE_S) * 3)  # a late sync would show up now
    syncs = watcher.drain()
    assert 1 <= len(syncs) <= 3, [s["events"] for s in syncs]
    assert sum(s["added"] for s in syncs) == 500
    index.close()
    code, _ = watcher.stop()
    assert code == 0


def test_watch_refuses_a_missing_folder(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rag.cli", "--index", str(tmp_path / "idx"), "watch", str(tmp_path / "nowhere")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=60,
    )
    assert result.returncode == 1
    assert "does not exist" in result.stderr and len(result.stderr.strip().splitlines()) == 1
