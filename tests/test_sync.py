"""`rag ingest` as a sync: add, change, delete, rename, copy, several folders, settings changes, bad input (tests
taking `any_index` or `location` run on each store)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from rag import Config, Index, IndexBusyError, ModelMismatchError, SourceNotFoundError
from rag.cli import main as cli
from rag.storage import health
from tests.stores import Location

from .test_cli import run

MARKER = "The archive keeper's codeword is QUOKKA-SEVENTEEN."


def _paths(index: Index) -> set[str]:
    return {d.path for d in index.store.documents()}


def _marker_paths(index: Index) -> set[str]:
    """Files whose retrieved chunks hold the marker, searching for the marker sentence itself."""
    return {h.path for h in index.search(MARKER, k=5) if "QUOKKA" in h.text}


def _no_duplicates(index: Index) -> None:
    _, chunks = index.store.counts()
    per_doc = [index.store.document_chunks(d.path) for d in index.store.documents()]
    assert sum(len(c) for c in per_doc) == chunks
    for cs in per_doc:
        assert [c.ordinal for c in cs] == list(range(len(cs)))
    assert sorted(index.store.vectors.ids().tolist()) == index.store.chunk_ids()


def test_sync_add_change_delete_rename_copy(any_index: Index, docs_copy: Path) -> None:
    index = any_index
    first = index.ingest(docs_copy)
    assert first.added >= 10 and first.chunks_embedded == first.chunks_added > 0
    _no_duplicates(index)

    calls = index.embedder.calls
    again = index.ingest(docs_copy)
    assert (again.added, again.updated, again.removed, again.chunks_embedded) == (0, 0, 0, 0)
    assert again.unchanged == first.indexed
    assert index.embedder.calls == calls  # nothing embedded, not even re-read

    # Changed: the new text is found, the old text is gone.
    changed = docs_copy / "decoding" / "sampling.html"
    old_text = changed.read_text()
    new_text = re.sub("nucleus", "kernel-of-probability", old_text, flags=re.IGNORECASE)
    changed.write_text(new_text.replace("</body>", f"<p>{MARKER}</p></body>"))
    report = index.ingest(docs_copy)
    assert (report.updated, report.added, report.removed) == (1, 0, 0)
    assert 0 < report.chunks_embedded <= len(index.store.document_chunks(str(changed)))
    assert _marker_paths(index) == {str(changed)}
    assert not any("nucleus" in c.text.lower() for c in index.store.document_chunks(str(changed)))

    # Renamed: same rows under the new path, nothing embedded.
    chunk_ids = [c.chunk_id for c in index.store.document_chunks(str(changed))]
    renamed = docs_copy / "moved-here" / "sampling-renamed.html"
    renamed.parent.mkdir()
    changed.rename(renamed)
    report = index.ingest(docs_copy)
    assert (report.moved, report.added, report.removed, report.chunks_embedded) == (1, 0, 0, 0)
    assert [c.chunk_id for c in index.store.document_chunks(str(renamed))] == chunk_ids
    assert str(changed) not in _paths(index)
    assert _marker_paths(index) == {str(renamed)}

    # Copied: reuses the vectors, nothing embedded.
    shutil.copy(renamed, docs_copy / "copy.html")
    report = index.ingest(docs_copy)
    assert (report.copied, report.chunks_embedded) == (1, 0)
    assert len(index.store.document_chunks(str(docs_copy / "copy.html"))) == len(chunk_ids)

    # Deleted: gone from the index and from every search.
    renamed.unlink()
    (docs_copy / "copy.html").unlink()
    report = index.ingest(docs_copy)
    assert report.removed == 2
    assert _marker_paths(index) == set()
    _no_duplicates(index)


def test_touched_file_is_not_embedded_again(fresh_index: Index, docs_copy: Path) -> None:
    fresh_index.ingest(docs_copy)
    calls = fresh_index.embedder.calls
    target = docs_copy / "decoding" / "sampling.html"
    os.utime(target, (1_000_000, 1_000_000))
    report = fresh_index.ingest(docs_copy)
    assert report.chunks_embedded == 0 and fresh_index.embedder.calls == calls
    assert fresh_index.store.document(str(target)).mtime == 1_000_000  # next time: skipped without hashing


def test_several_folders_share_one_index_and_remove(fresh_index: Index, docs_copy: Path) -> None:
    index = fresh_index
    a, b = docs_copy / "decoding", docs_copy / "attention"
    index.ingest(a)
    index.ingest(b)  # syncing b must not delete a's documents
    in_a = {p for p in _paths(index) if p.startswith(str(a))}
    in_b = {p for p in _paths(index) if p.startswith(str(b))}
    assert in_a and in_b and len(_paths(index)) == len(in_a) + len(in_b)

    one = sorted(in_b)[0]
    assert index.remove([one]) == 1
    assert index.remove([a]) == len(in_a)
    assert _paths(index) == in_b - {one}
    with pytest.raises(SourceNotFoundError, match="matches no indexed document"):
        index.remove([docs_copy / "nope.txt"])
    _no_duplicates(index)


def test_cli_remove_and_unchanged_message(fresh_index: Index, docs_copy: Path, capsys) -> None:
    index_dir = str(fresh_index.store.directory)
    assert cli(["ingest", str(docs_copy / "decoding"), "--index", index_dir, "-q"]) == 0
    capsys.readouterr()
    assert cli(["ingest", str(docs_copy / "decoding"), "--index", index_dir, "-q"]) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert cli(["remove", str(docs_copy / "decoding"), "--index", index_dir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["index"]["documents"] == 0
    assert cli(["remove", str(docs_copy / "decoding"), "--index", index_dir]) == 1
    assert "matches no indexed document" in capsys.readouterr().err


def test_changed_chunker_settings_rechunk_everything(sample_index: Index, tmp_path: Path, docs_copy: Path) -> None:
    folder = docs_copy / "decoding"
    config = Config.load(index=tmp_path / "idx", cache_dir=sample_index.config.cache_dir)
    with Index.open(config=config, create=True) as index:
        index.embedder = sample_index.embedder
        first = index.ingest(folder)
    smaller = Config.load(index=tmp_path / "idx", cache_dir=sample_index.config.cache_dir, chunk_tokens=80)
    with Index.open(config=smaller) as index:
        index.embedder = sample_index.embedder
        report = index.ingest(folder)
        assert report.updated == first.added and report.chunks_embedded > first.chunks_added
        assert index.store.meta["chunker"]["chunk_tokens"] == 80
        assert {d.chunker for d in index.store.documents()} == {f"t80-o{smaller.chunk_overlap}-m254-v1"}
        assert max(c.token_count for d in index.store.documents() for c in index.store.document_chunks(d.path)) <= 80
        _no_duplicates(index)


def test_doctor_finds_and_repairs_a_stale_and_damaged_faiss_file(
    any_index: Index, location: Location, docs_copy: Path
) -> None:
    index = any_index
    index.ingest(docs_copy / "decoding")
    assert index.doctor() == []
    faiss_file = next(index.store.directory.glob("vectors-*.faiss"))
    faiss_file.write_bytes(b"not a faiss index")
    problems = health.check(index.store)
    assert [p.kind for p in problems] == ["faiss-unreadable"]
    assert index.doctor(repair=True) == []
    assert cli(["doctor", *location.args()]) == 0
    faiss_file = next(index.store.directory.glob("vectors-*.faiss"))
    faiss_file.unlink()
    assert [p.kind for p in health.check(index.store)] == ["faiss-stale"]
    assert cli(["reindex", *location.args(), "--json"]) == 0
    assert health.check(index.store) == []


def test_second_writer_is_refused_at_once(any_index: Index, location: Location, docs_copy: Path) -> None:
    any_index.ingest(docs_copy / "decoding")
    # SQLite's lock file names the pid; PostgreSQL names the holder's connection (pid and host).
    holder = "another process (pid {pid})" if location.url is None else "rag pid {pid} on "
    with any_index.store.writing():  # as if an ingest were running
        other = Index.open(config=any_index.config)
        here = "another Index object in this process" if location.url is None else holder.format(pid=os.getpid())
        with pytest.raises(IndexBusyError, match=f"being written by {re.escape(here)}"):
            other.ingest(docs_copy / "decoding")
        assert other.search("top-p sampling", k=1)  # readers are never blocked
        other.close()
        result = run("ingest", str(docs_copy / "decoding"), *location.args())
        assert result.returncode == 1
        assert f"being written by {holder.format(pid=os.getpid())}" in result.stderr


def test_new_embedding_model_is_switched_in_without_a_wipe(
    sample_index: Index, other_embedder_dir: Path, location: Location, docs_copy: Path
) -> None:
    folder = docs_copy / "decoding"
    base = location.config(sample_index.config.cache_dir)
    with Index.open(config=base, create=True) as index:
        index.embedder = sample_index.embedder
        index.ingest(folder)
        chunk_ids = index.store.chunk_ids()
    other = location.config(sample_index.config.cache_dir, embed_model=str(other_embedder_dir))
    with Index.open(config=other) as index:
        with pytest.raises(ModelMismatchError, match="rag ingest"):
            index.search("beam search")
        report = index.ingest(folder)
        assert report.reembedded == len(chunk_ids) and report.chunks_embedded == 0
        assert index.store.chunk_ids() == chunk_ids  # same chunks, new vectors
        assert index.store.dim == 64 and index.doctor() == []
        assert index.search("beam search", k=1)[0].path.endswith(".html")
    with Index.open(config=base) as index, pytest.raises(ModelMismatchError):
        index.search("beam search")


def test_bad_files_are_skipped_with_reasons_and_never_abort(fresh_index: Index, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "good one.md").write_text("# Good\n\nSpaces in names are fine.\n")
    (folder / "ünïcödé 文件.txt").write_text("Unicode names are fine too.\n")
    (folder / "new\nline.txt").write_text("A newline in a file name.\n")
    (folder / "blank.txt").write_text("   \n\t\n")
    (folder / "empty.md").write_bytes(b"")
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02binary\x00" * 100)
    (folder / "loop.txt").symlink_to(folder / "loop.txt")
    (folder / "dangling.txt").symlink_to(folder / "missing.txt")
    os.mkfifo(folder / "pipe.txt")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (folder / "archive.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    report = fresh_index.ingest(folder)
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert reasons == {
        "blank.txt": "empty",
        "empty.md": "empty",
        "binary.txt": "binary",
        "loop.txt": "symlink-loop",
        "dangling.txt": "broken-symlink",
        "pipe.txt": "special-file",
        "broken.pdf": "pdf-broken",
        "archive.zip": "unsupported",
    }
    assert report.added == 3
    assert report.files_seen == report.indexed + report.unchanged + len(report.skipped)
    assert cli(["ingest", str(folder), "--index", str(fresh_index.store.directory), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {Path(s["path"]).name for s in out["skipped"]} == set(reasons)


def test_a_file_that_turns_bad_keeps_what_was_indexed(fresh_index: Index, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    target = folder / "notes.txt"
    target.write_text(f"Some notes. {MARKER}\n")
    fresh_index.ingest(folder)
    target.write_bytes(b"\x00\x00garbage\x00" * 10)
    report = fresh_index.ingest(folder)
    assert [s.reason for s in report.skipped] == ["binary"] and report.removed == 0
    assert _marker_paths(fresh_index) == {str(target)}
