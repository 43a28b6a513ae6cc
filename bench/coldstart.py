"""Whole-process time and peak RSS of `rag --help`, `rag search` and `rag ask` on a small index.

The index (sample_docs/) is built first in this process, which also makes the ONNX query export and the
converted generator cache, exactly as a user's first `rag ingest` / `rag ask` would.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import SAMPLE_DOCS, median, run_process


def run(repeats: int, commands: list[str]) -> list[dict[str, Any]]:
    from rag import Config, Index

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        index_dir = Path(tmp) / "idx"
        with Index.open(config=Config.load(index=index_dir), create=True) as index:
            index.ingest(SAMPLE_DOCS)
            query_runtime = index.embedder.query_runtime
        rag = [sys.executable, "-m", "rag.cli"]
        argv = {
            "help": [*rag, "--help"],
            "search": [*rag, "--index", str(index_dir), "search", "Who introduced nucleus sampling?"],
            "search-torch": [*rag, "--index", str(index_dir), "search", "Who introduced nucleus sampling?"],
            "ask": [*rag, "--index", str(index_dir), "ask", "Who introduced nucleus sampling?"],
        }
        for name in commands:
            env = dict(os.environ)
            if name == "search-torch":
                env["RAG_EMBED_RUNTIME"] = "torch"
            runs = [run_process(argv[name], env) for _ in range(repeats)]
            rows.append(
                {
                    "command": f"rag {name}",
                    "query_runtime": query_runtime if name == "search" else ("torch" if "search" in name else "-"),
                    "median_s": median([r[0] for r in runs]),
                    "median_cpu_s": median([r[3] for r in runs]),
                    "peak_rss_mb": median([r[1] for r in runs]),
                    "exit_codes": sorted({r[2] for r in runs}),
                }
            )
    return rows
