"""A million chunks on each store: SQLite in the index directory (the baseline) and PostgreSQL on a server this
section starts (initdb into a temporary directory, loopback only).

Text and vectors are synthetic, since the store's side is what is measured: each chunk is 150 words drawn from a
Zipf-distributed vocabulary of 30,000 made-up words (about 1,000 characters, as a 254-token chunk), and each
vector a unit vector near one of 1,000 random centres (so IVF's groups mean something). Writes go through the
real path, ``Store.transaction`` and ``put_document``, 100 documents of 100 chunks per transaction; the final save
trains the IVF index as an ingest would. Searches are ``retrieve`` (dense, BM25, hybrid) with a query vector given,
so no model runs. A cold open is a reader on a fresh cache directory: it rebuilds FAISS from the stored vectors.
Build and searches each run in a fresh process, whose peak RSS is reported.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median, run_process

DIM = 384
WORDS_PER_CHUNK = 150
CHUNKS_PER_DOC = 100
DOCS_PER_COMMIT = 100
VOCABULARY = 30_000
CENTRES = 1_000
QUERIES = 100
SEED = 20261203


def _vocabulary():  # -> list[str]
    import numpy as np

    rng = np.random.default_rng(SEED)
    letters = np.array(list("abcdefghijklmnoprstuvwyz"))
    lengths = rng.integers(3, 10, size=VOCABULARY)
    return ["".join(rng.choice(letters, size=n)) for n in lengths]


def _zipf(rng, n: int):  # -> np.ndarray of word indices
    import numpy as np

    ranks = np.arange(1, VOCABULARY + 1)
    p = 1.0 / ranks
    return rng.choice(VOCABULARY, size=n, p=p / p.sum())


def _centres():  # -> np.ndarray (CENTRES, DIM)
    import numpy as np

    return np.random.default_rng(SEED + 1).normal(size=(CENTRES, DIM)).astype(np.float32)


def _near(rng, centres, n: int):  # -> unit vectors near random centres
    import numpy as np

    v = centres[rng.integers(0, CENTRES, size=n)] + 0.6 * rng.normal(size=(n, DIM)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def worker_build(directory: str, url: str, chunks: int) -> dict[str, Any]:
    """Write ``chunks`` synthetic chunks into a new index; the timings of the writes and of the final save."""
    import numpy as np

    from ingest.records import Chunk, DocumentInfo
    from rag.storage.store import Store

    words = np.array(_vocabulary())
    centres = _centres()
    rng = np.random.default_rng(SEED + 2)
    store = Store.open(Path(directory), create=True, url=url or None)
    store.set_meta({"embedder": {"name": "synthetic", "dim": DIM, "identity": "synthetic"}})
    started = time.perf_counter()
    docs = chunks // CHUNKS_PER_DOC
    with store.writing():
        for first in range(0, docs, DOCS_PER_COMMIT):
            batch = range(first, min(first + DOCS_PER_COMMIT, docs))
            n = len(batch) * CHUNKS_PER_DOC
            picked = words[_zipf(rng, n * WORDS_PER_CHUNK)].reshape(n, WORDS_PER_CHUNK)
            texts = [" ".join(row) for row in picked]
            vectors = _near(rng, centres, n)
            with store.transaction() as tx:
                for j, d in enumerate(batch):
                    part = slice(j * CHUNKS_PER_DOC, (j + 1) * CHUNKS_PER_DOC)
                    info = DocumentInfo(f"/corpus/d{d:07d}.txt", f"h{d}", 1, 1.0, "text", chunker="synthetic")
                    cut = [Chunk(i, t, 0, len(t), WORDS_PER_CHUNK) for i, t in enumerate(texts[part])]
                    tx.put_document(info, cut, vectors[part])
        written = time.perf_counter() - started
        store.save_vectors()  # a flat index crossed the IVF threshold: rebuilt from the database and trained
    total = time.perf_counter() - started
    result = {
        "write_s": written,
        "save_s": total - written,
        "rows_per_s": chunks / written,
        "database_mb": store.database_bytes() / 1e6,
        "faiss_mb": sum(p.stat().st_size for p in Path(directory).glob("vectors-*.faiss")) / 1e6,
        "vectors": store.meta.get("vectors", {}).get("kind"),
    }
    store.close()
    return result


def worker_search(directory: str, url: str) -> dict[str, Any]:
    """A reader on ``directory``: cold open (FAISS rebuilt from the database), then searches, then a warm open."""
    import numpy as np

    from rag.retrieval.retrieve import retrieve
    from rag.storage.store import Store

    started = time.perf_counter()
    store = Store.open(Path(directory), url=url or None)
    _ = store.vectors
    cold = time.perf_counter() - started
    rng = np.random.default_rng(SEED + 3)
    words = _vocabulary()
    # Mid-frequency words: the commonest would match most of the corpus, the rarest almost nothing.
    queries = [
        (" ".join(words[i] for i in rng.integers(200, 10_000, size=5)), v) for v in _near(rng, _centres(), QUERIES)
    ]
    result: dict[str, Any] = {"open_cold_s": cold}
    for mode in ("dense", "bm25", "hybrid"):
        times = []
        for text, vector in queries:
            t = time.perf_counter()
            hits = retrieve(store, None, text, 5, retrieval=mode, query_vector=vector).hits  # type: ignore[arg-type]
            times.append((time.perf_counter() - t) * 1000)
            assert hits, (mode, text)
        times.sort()
        result[f"{mode}_p50_ms"] = median(times)
        result[f"{mode}_p95_ms"] = times[int(0.95 * (len(times) - 1))]
    store.close()
    started = time.perf_counter()
    store = Store.open(Path(directory), url=url or None)
    _ = store.vectors
    result["open_warm_s"] = time.perf_counter() - started
    store.close()
    return result


def _child(args: list[str]) -> tuple[dict[str, Any], float, float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        wall, rss, code, _ = run_process([sys.executable, "-m", "bench", *args, "--out", out.name])
        if code != 0:
            raise RuntimeError(f"bench child {args[0]} exited {code}")
        return json.loads(Path(out.name).read_text()), wall, rss


def run(chunks: int) -> list[dict[str, Any]]:
    from tests import postgres

    rows: list[dict[str, Any]] = []
    stores = ["sqlite"] + ([] if postgres.missing() else ["postgresql"])
    with (
        tempfile.TemporaryDirectory(prefix="rag-bench-store-") as tmp,
        postgres.maybe_running("postgresql" in stores) as server,
    ):
        for name in stores:
            url = ""
            if name == "postgresql" and server is not None:
                server.sql("CREATE DATABASE bench")
                url = server.url("bench")
            writer_dir = Path(tmp) / f"{name}-writer"
            built, build_wall, build_rss = _child(["_store_build", str(writer_dir), url, str(chunks)])
            if name == "sqlite":  # the reader's fresh cache: the same database without the FAISS file
                reader_dir = writer_dir
                for faiss_file in writer_dir.glob("vectors-*.faiss"):
                    faiss_file.unlink()
            else:
                reader_dir = Path(tmp) / f"{name}-reader"
            searched, _, search_rss = _child(["_store_search", str(reader_dir), url])
            rows.append(
                {
                    "store": name,
                    "chunks": chunks,
                    **built,
                    "build_wall_s": build_wall,
                    "build_peak_rss_mb": build_rss,
                    **searched,
                    "reader_peak_rss_mb": search_rss,
                }
            )
            shutil.rmtree(writer_dir, ignore_errors=True)
    base = rows[0]
    for r in rows[1:]:
        r["rows_per_s_vs_sqlite"] = r["rows_per_s"] / base["rows_per_s"]
        r["hybrid_p50_vs_sqlite"] = r["hybrid_p50_ms"] / base["hybrid_p50_ms"]
        r["open_cold_vs_sqlite"] = r["open_cold_s"] / base["open_cold_s"]
    return rows
