"""Ingest throughput and memory: the pipeline's chunks/s, and rag's document embedding, against the bare
sentence-transformers encode rate on the same chunks.

Each measurement runs in a fresh process (``python -m bench _ingest`` / ``_encode`` / ``_embed``) so peak RSS is
its own. The baseline is ``SentenceTransformer.encode`` over the very chunk texts the pipeline stored (batch 32);
``_embed`` runs ``Embedder.embed_documents`` (the ONNX export, length-sorted batches) over the same texts in the
pipeline's slices, and reports how far its vectors are from the baseline's.
"""

from __future__ import annotations

import json
import shutil
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
        # Copies, not symlinks: ingest never follows a link out of the folder it indexes.
        copy = folder / f"{i:03d}-{path.name}"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    return folder


def worker_ingest(folder: str, index_dir: str, parse_workers: int = 1) -> dict[str, Any]:
    """Runs in the child: ingest ``folder`` into a new index at ``index_dir``, parsing in ``parse_workers``
    sandboxed processes (0: in this process, as before the sandbox)."""
    from bench.common import peak_rss_mb
    from rag import Config, Index

    config = Config.load(index=Path(index_dir), parse_workers=parse_workers)
    with Index.open(config=config, create=True) as index:
        _ = index.embedder.model  # model load is not ingest throughput: measured apart
        started = time.perf_counter()
        report = index.ingest(folder)
        seconds = time.perf_counter() - started
    return {"chunks": report.chunks_added, "files": report.indexed, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def worker_encode(index_dir: str, runtime: str) -> dict[str, Any]:
    """Runs in the child: embed the index's stored chunk texts with bare sentence-transformers (``torch``) or
    with rag's document path (``onnx``), and compare with the vectors the index holds."""
    import sqlite3

    import numpy as np

    from bench.common import peak_rss_mb
    from ingest.pipeline import BATCH_CHUNKS
    from rag import Config
    from rag.models.embedder import Embedder
    from rag.models.sources import resolve_embedder

    with sqlite3.connect(Path(index_dir) / "index.db") as db:
        texts = [row[0] for row in db.execute("SELECT text FROM chunks ORDER BY id")]
    embedder = Embedder(resolve_embedder("all-MiniLM-L6-v2"), cache_dir=Config.load().cache_dir)
    model = embedder.model  # loading is not throughput
    if runtime == "onnx" and embedder.document_runtime != "onnx":
        return {"error": "no ONNX export"}
    started = time.perf_counter()
    if runtime == "torch":
        vectors = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    else:
        vectors = np.concatenate(
            [embedder.embed_documents(texts[i : i + BATCH_CHUNKS]) for i in range(0, len(texts), BATCH_CHUNKS)]
        )
    seconds = time.perf_counter() - started
    reference = model.encode(texts[:200], batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    cosine = float((reference * vectors[:200]).sum(1).min())
    return {"chunks": len(texts), "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "min_cosine": cosine}


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
            ing = _child(["_ingest", str(folder), str(Path(tmp) / "idx"), "1"])
            if "error" in ing:
                rows.append({"corpus": name, **ing})
                continue
            unboxed = _child(["_ingest", str(folder), str(Path(tmp) / "idx-in-process"), "0"])
            enc = _child(["_encode", str(Path(tmp) / "idx")])
            emb = _child(["_embed", str(Path(tmp) / "idx")])
        pipeline_rate = ing["chunks"] / ing["seconds"] if ing["seconds"] else 0.0
        in_process_rate = unboxed["chunks"] / unboxed["seconds"] if unboxed.get("seconds") else 0.0
        encode_rate = enc["chunks"] / enc["seconds"] if enc.get("seconds") else 0.0
        embed_rate = emb["chunks"] / emb["seconds"] if emb.get("seconds") else 0.0
        rows.append(
            {
                "corpus": name,
                "files": ing["files"],
                "chunks": ing["chunks"],
                "pipeline_chunks_s": pipeline_rate,
                "in_process_chunks_s": in_process_rate,
                "sandbox_vs_in_process": pipeline_rate / in_process_rate if in_process_rate else float("nan"),
                "encode_chunks_s": encode_rate,
                "ratio": pipeline_rate / encode_rate if encode_rate else float("nan"),
                "embed_chunks_s": embed_rate,
                "embed_vs_encode": embed_rate / encode_rate if encode_rate else float("nan"),
                "embed_min_cosine": emb.get("min_cosine"),
                "pipeline_peak_rss_mb": ing["peak_rss_mb"],
                "encode_peak_rss_mb": enc.get("peak_rss_mb"),
                "embed_peak_rss_mb": emb.get("peak_rss_mb"),
            }
        )
    return rows
