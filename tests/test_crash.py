"""Crash safety and concurrency with real processes, on each store: SIGKILL mid-ingest, readers during a write, and
two machines (two index directories) sharing one PostgreSQL store."""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rag import Index
from tests.postgres import Server
from tests.stores import Backend, Location

N_FILES = 24
# A PostgreSQL trial copies a database (CREATE DATABASE ... TEMPLATE): fewer of them keep the suite short.
TRIALS = {"sqlite": 20, "postgresql": 10}

# The real CLI, with small batches so that a run makes many commits for the kills to fall between and inside.
HARNESS = textwrap.dedent(
    """
    import sys
    import ingest.pipeline as pipeline
    pipeline.BATCH_FILES = 3
    pipeline.SAVE_EVERY_S = 1.0
    from rag.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)

# The same, forked from one warm process per trial: torch and sentence-transformers are imported once (6 s here)
# instead of once per trial, so the kills fall in the ingest itself. Nothing has run on torch before the fork.
ZYGOTE = textwrap.dedent(
    """
    import os
    import sys
    import ingest.pipeline as pipeline
    pipeline.BATCH_FILES = 3
    pipeline.SAVE_EVERY_S = 1.0
    import sentence_transformers
    from rag.cli import main
    print("ready", flush=True)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            code = 1
            try:
                code = main(line.rstrip("\\n").split("\\t"))
            finally:
                os._exit(code)
        print(pid, flush=True)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
    """
)

TOPICS = ["rivers", "glaciers", "volcanoes", "deserts", "forests", "reefs", "caves", "tundra"]


def _text(n: int, version: str) -> str:
    topic = TOPICS[n % len(TOPICS)]
    paragraphs = [
        f"Field notes {n} on {topic}. Version marker {version}MARK{n}. "
        + " ".join(f"Observation {i} about {topic} recorded at station {n}-{i} in season {i % 4}." for i in range(12))
        for _ in range(3)
    ]
    return "\n\n".join(paragraphs) + "\n"


def _write_corpus(folder: Path, version: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(N_FILES):
        (folder / f"notes{n:02d}.txt").write_text(_text(n, version))
    if version == "OLD":
        (folder / "gone.txt").write_text(_text(99, "OLD"))
    else:
        (folder / "gone.txt").unlink(missing_ok=True)
        (folder / "extra.txt").write_text(_text(98, "NEW"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class _Zygote:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        assert self.proc.stdout and self.proc.stdout.readline().strip() == "ready"

    def run(self, location: Location, folder: Path, kill_after: float | None = None) -> int:
        """Ingest in a forked child; SIGKILL it after ``kill_after`` s. Returns its exit code (-9 when killed)."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("\t".join([*location.args(), "ingest", str(folder), "--quiet"]) + "\n")
        pid = int(self.proc.stdout.readline())
        if kill_after is not None and not select.select([self.proc.stdout], [], [], kill_after)[0]:
            os.kill(pid, signal.SIGKILL)
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _check_old_or_new(index: Index, folder: Path) -> tuple[int, int]:
    """Every document is wholly its old or wholly its new version; returns (old, new) counts."""
    assert index.doctor() == [], index.doctor()
    counts = [0, 0]
    docs = {d.path: d for d in index.store.documents()}
    for n in range(N_FILES):
        path = str(folder / f"notes{n:02d}.txt")
        assert path in docs, f"{path} lost"
        chunks = index.store.document_chunks(path)
        assert [c.ordinal for c in chunks] == list(range(len(chunks)))
        text = " ".join(c.text for c in chunks)
        is_new = docs[path].content_hash == _digest(_text(n, "NEW"))
        assert is_new or docs[path].content_hash == _digest(_text(n, "OLD"))
        assert (f"NEWMARK{n}" in text) == is_new and (f"OLDMARK{n}" in text) != is_new
        counts[is_new] += 1
    extra, gone = str(folder / "extra.txt"), str(folder / "gone.txt")
    if extra in docs:
        assert "NEWMARK98" in " ".join(c.text for c in index.store.document_chunks(extra))
    if gone not in docs:  # removals come last, in one transaction, after every new version is in
        assert counts[0] == 0 and extra in docs
    assert index.search("field notes on glaciers", k=3)
    return counts[0], counts[1]


@pytest.fixture(scope="module")
def old_index(tmp_path_factory: pytest.TempPathFactory, sample_index: Index, backend: Backend) -> tuple[Location, Path]:
    """An index of the OLD corpus (built in-process), and the folder it indexes, now holding the NEW corpus."""
    root = tmp_path_factory.mktemp("crash")
    folder = root / "docs"
    _write_corpus(folder, "OLD")
    location = backend.new(root / "old-index")
    with _open(location, sample_index, create=True) as index:
        index.ingest(folder)
    _write_corpus(folder, "NEW")
    return location, folder


def _open(location: Location, sample_index: Index, create: bool = False) -> Index:
    index = Index.open(config=location.config(sample_index.config.cache_dir), create=create)
    index.embedder = sample_index.embedder
    return index


def test_sigkill_at_random_points_leaves_old_or_new_never_both(
    old_index: tuple[Location, Path], sample_index: Index, tmp_path: Path, backend: Backend
) -> None:
    old, folder = old_index
    zygote = _Zygote()
    try:
        # One undisturbed run sets the time scale for the kills.
        full = backend.copy(old, tmp_path / "full")
        started = time.monotonic()
        assert zygote.run(full, folder) == 0
        duration = time.monotonic() - started
        with _open(full, sample_index) as index:
            assert _check_old_or_new(index, folder) == (0, N_FILES)

        rng = random.Random(20261122)
        outcomes = []
        for trial in range(TRIALS[backend.name]):
            target = backend.copy(old, tmp_path / f"trial{trial}")
            kill_after = rng.uniform(0.0, duration)
            code = zygote.run(target, folder, kill_after)
            assert code in (0, -signal.SIGKILL)
            with _open(target, sample_index) as index:
                outcomes.append((round(kill_after, 2), code, _check_old_or_new(index, folder)))
    finally:
        zygote.close()
    # The last interrupted run resumes: what was committed is not embedded again.
    with _open(target, sample_index) as index:
        before_new = outcomes[-1][2][1]
        report = index.ingest(folder)
        assert report.updated == N_FILES - before_new
        assert _check_old_or_new(index, folder) == (0, N_FILES)
    print(f"full run {duration:.1f} s; (kill at s, exit code, (old, new) documents):", outcomes)
    partial = [o for o in outcomes if 0 < o[2][1] < N_FILES]
    assert len(partial) >= 3, "too few kills landed between commits for the trial to prove anything"


def test_readers_see_committed_state_while_a_writer_runs(
    old_index: tuple[Location, Path], sample_index: Index, tmp_path: Path, backend: Backend
) -> None:
    old, folder = old_index
    target = backend.copy(old, tmp_path / "live")
    writer = subprocess.Popen(
        [sys.executable, "-c", HARNESS, *target.args(), "ingest", str(folder), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    long_lived = _open(target, sample_index)
    errors: list[str] = []
    generations: set[int] = set()
    searches = 0
    while writer.poll() is None:
        try:
            assert long_lived.search("field notes on volcanoes", k=3)
            generations.add(long_lived.store.meta["generation"])
            with _open(target, sample_index) as fresh:  # a new reader each time, as `rag search` would be
                hits = fresh.search("observation about reefs", k=3)
                assert hits and all(h.text for h in hits)
            searches += 1
        except Exception as e:  # any failure at all counts: "database is locked", a missing FAISS file, ...
            errors.append(f"{type(e).__name__}: {e}")
    assert writer.returncode == 0, writer.stderr.read().decode() if writer.stderr else ""
    long_lived.close()
    assert errors == []
    assert searches > 3 and len(generations) > 1, (searches, generations)  # it really ran during commits


def test_two_machines_share_one_postgres_store(postgres: Server, sample_index: Index, tmp_path: Path) -> None:
    """Machine A syncs a folder into PostgreSQL, machine B (its own index directory and FAISS cache) searches all
    along and sees each commit; A is killed -9 in the middle of a sync, and both go on."""
    folder = tmp_path / "docs"
    _write_corpus(folder, "OLD")
    machine_a = Backend("postgresql", postgres).new(tmp_path / "machine-a")
    machine_b = machine_a.elsewhere(tmp_path / "machine-b")

    def sync() -> subprocess.Popen[bytes]:
        args = [sys.executable, "-c", HARNESS, *machine_a.args(), "ingest", str(folder), "--quiet"]
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    errors: list[str] = []
    seen: list[int] = []

    def search_while(writer: subprocess.Popen[bytes], reader: Index, after_s: float = 0.0, stop_at: int = 0) -> None:
        """Search until the writer exits (and ``after_s`` more), or until B has seen generation ``stop_at``."""
        until = None
        while until is None or time.monotonic() < until:
            if until is None and (writer.poll() is not None or (stop_at and seen and seen[-1] >= stop_at)):
                until = time.monotonic() + after_s
            try:
                # Words of every document: whatever batch is committed, its chunks match.
                hits = reader.search("field notes: observation recorded at station", k=3)
                assert len(hits) == 3 and all("Observation" in h.text for h in hits), hits
                if not seen or seen[-1] != reader.store.meta["generation"]:
                    seen.append(reader.store.meta["generation"])
            except Exception as e:  # any failure at all counts
                errors.append(f"{type(e).__name__}: {e}")

    writer = sync()
    while True:  # B opens as soon as A's first batch is committed
        try:
            reader = _open(machine_b, sample_index)
            if reader.store.counts()[1]:  # the embedder is recorded before the first batch commits
                break
            reader.close()
        except Exception as e:
            assert "no index in the store" in str(e), e
        assert writer.poll() is None, "the first sync ended before machine B saw anything"
        time.sleep(0.05)
    search_while(writer, reader)
    assert writer.returncode == 0, writer.stderr.read().decode() if writer.stderr else ""
    assert errors == []
    search_while(writer, reader)  # once more, after the last commit
    first_run = list(seen)
    # B followed the commits as they came (one per batch of 3 files; two may fall between two searches) up to
    # the last one A made.
    assert len(first_run) >= 5 and first_run == sorted(set(first_run)), first_run
    assert first_run[-1] == int(postgres.sql("SELECT value FROM meta WHERE key = 'generation'", machine_a.database))

    _write_corpus(folder, "NEW")
    writer = sync()
    search_while(writer, reader, stop_at=first_run[-1] + 2)  # two batches of the new corpus are in
    os.kill(writer.pid, signal.SIGKILL)
    assert writer.wait() == -signal.SIGKILL, "the sync ended before it could be killed"
    search_while(writer, reader, after_s=1.0)
    assert errors == []
    killed_at = seen[-1]
    assert killed_at >= first_run[-1] + 2

    # Both machines go on: A's next sync finishes what was killed, and B sees all of it.
    with _open(machine_a, sample_index) as index:
        assert index.doctor() == []
    writer = sync()
    search_while(writer, reader)
    assert writer.returncode == 0, writer.stderr.read().decode() if writer.stderr else ""
    assert errors == []
    assert _check_old_or_new(reader, folder) == (0, N_FILES)
    assert sorted(p.name for p in machine_b.directory.iterdir() if p.suffix == ".faiss") == [
        f"vectors-{reader.store.meta['generation']}.faiss"
    ]
    reader.close()
