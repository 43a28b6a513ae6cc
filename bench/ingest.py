"""Ingest throughput and memory: the pipeline's chunks/s against the bare encode rate on the same chunks.

Each measurement runs in a fresh process (``python -m bench _ingest`` / ``_encode``) so peak RSS is its own.
The ceiling is ``SentenceTransformer.encode`` over the very chunk texts the pipeline stored, same batch size.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import EVAL, XQUAD, run_process

CORPORA = {
    "xquad-docs": XQUAD / "docs",
    "docs-mixed": EVAL / "docs-mixed",
}
# "docs-mixed-sample": every SAMPLE_EVERY-th file of docs-mixed (sorted paths), linked into a temporary folder: a
# fixed, mixed-format subset that ingests in minutes where the whole folder takes an hour on a busy machine.
SAMPLE_EVERY = 30


def _sample_folder(tmp: Path) -> Path:
    root = EVAL / "docs-mixed"
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "MANIFEST.tsv")
    folder = tmp / "docs-mixed-sample"
    for i, path in enumerate(files[::SAMPLE_EVERY]):
        link = folder / f"{i:03d}-{path.name}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    return folder


def worker_ingest(folder: str, index_dir: str) -> dict[str, Any]:
    """Runs in the child: ingest ``folder`` into a new index at ``index_dir``."""
    from bench.common import peak_rss_mb
    from rag import Config, Index

    config = Config.load(index=Path(index_dir))
    with Index.open(config=config, create=True) as index:
        _ = index.embedder.model  # model load is not ingest throughput: measured apart
        started = time.perf_counter()
        report = index.ingest(folder)
        seconds = time.perf_counter() - started
    return {"chunks": report.chunks_added, "files": report.indexed, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def worker_encode(index_dir: str) -> dict[str, Any]:
    """Runs in the child: encode the index's stored chunk texts with bare sentence-transformers."""
    import sqlite3

    from bench.common import peak_rss_mb
    from rag.models.embedder import Embedder
    from rag.models.sources import resolve_embedder

    with sqlite3.connect(Path(index_dir) / "index.db") as db:
        texts = [row[0] for row in db.execute("SELECT text FROM chunks ORDER BY id")]
    model = Embedder(resolve_embedder("all-MiniLM-L6-v2")).model
    started = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    seconds = time.perf_counter() - started
    return {"chunks": len(texts), "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def _child(args: list[str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        _wall, _rss, code, _cpu = run_process([sys.executable, "-m", "bench", *args, "--out", out.name])
        if code != 0:
            return {"error": f"exit {code}"}
        return json.loads(Path(out.name).read_text())


def run(corpora: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in corpora:
        with tempfile.TemporaryDirectory() as tmp:
            folder = _sample_folder(Path(tmp)) if name == "docs-mixed-sample" else CORPORA[name]
            ing = _child(["_ingest", str(folder), str(Path(tmp) / "idx")])
            if "error" in ing:
                rows.append({"corpus": name, **ing})
                continue
            enc = _child(["_encode", str(Path(tmp) / "idx")])
        pipeline_rate = ing["chunks"] / ing["seconds"] if ing["seconds"] else 0.0
        encode_rate = enc["chunks"] / enc["seconds"] if enc.get("seconds") else 0.0
        rows.append(
            {
                "corpus": name,
                "files": ing["files"],
                "chunks": ing["chunks"],
                "pipeline_chunks_s": pipeline_rate,
                "encode_chunks_s": encode_rate,
                "ratio": pipeline_rate / encode_rate if encode_rate else float("nan"),
                "pipeline_peak_rss_mb": ing["peak_rss_mb"],
                "encode_peak_rss_mb": enc.get("peak_rss_mb"),
            }
        )
    return rows
