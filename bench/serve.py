"""A bounded load test of `rag serve`: many clients at once, searches and answers mixed, latency and errors.

The server (a real `rag serve` process on a loopback port, the configured generator) indexes sample_docs/;
``clients`` threads each send their share of ``searches`` POST /v1/search and ``asks`` POST /v1/chat/completions
over HTTP at the same time. The baseline, measured first in the same run, is the same requests one at a time
through the Python API in this process: the ratio is what HTTP, queueing and sharing two cores cost a client.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import SAMPLE_DOCS, load_jsonl, median


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def run(clients: int, searches: int, asks: int) -> list[dict[str, Any]]:
    import httpx

    from rag import Config, Index

    questions = [q["question"] for q in load_jsonl(SAMPLE_DOCS / "questions.jsonl")]
    with tempfile.TemporaryDirectory() as tmp:
        index_dir = Path(tmp) / "idx"
        direct: dict[str, list[float]] = {"search": [], "ask": []}
        with Index.open(config=Config.load(index=index_dir), create=True) as index:
            index.ingest(SAMPLE_DOCS)
            index.warm()
            for i in range(min(searches, 50)):
                t = time.perf_counter()
                index.search(questions[i % len(questions)], 5)
                direct["search"].append(time.perf_counter() - t)
            for i in range(min(asks, 5)):
                t = time.perf_counter()
                index.ask(questions[i % len(questions)])
                direct["ask"].append(time.perf_counter() - t)
        proc, url = _start(index_dir)
        try:
            work = [("search", questions[i % len(questions)]) for i in range(searches)]
            work += [("ask", questions[i % len(questions)]) for i in range(asks)]
            work = work[::2] + work[1::2]  # answers spread among the searches, not all at the end

            def one(item: tuple[str, str]) -> tuple[str, float, bool]:
                kind, question = item
                with httpx.Client(base_url=url, timeout=600) as http:
                    t = time.perf_counter()
                    if kind == "search":
                        r = http.post("/v1/search", json={"query": question, "k": 5})
                    else:
                        messages = [{"role": "user", "content": question}]
                        r = http.post("/v1/chat/completions", json={"model": "rag", "messages": messages})
                    return kind, time.perf_counter() - t, r.status_code == 200

            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                results = list(pool.map(one, work))
            wall = time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    rows = []
    for kind in ("search", "ask"):
        times = [s for k, s, _ in results if k == kind]
        errors = sum(1 for k, _, ok in results if k == kind and not ok)
        rows.append(
            {
                "requests": f"{kind} x{len(times)}",
                "clients": clients,
                "errors": errors,
                "p50_s": median(times),
                "p95_s": _percentile(times, 95),
                "direct_p50_s": median(direct[kind]),
                "p50_vs_direct": median(times) / median(direct[kind]) if direct[kind] else float("nan"),
                "wall_s": wall,
            }
        )
    return rows


def _start(index_dir: Path) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "rag.cli", "--index", str(index_dir), "serve", "--port", "0"]
    env = {k: v for k, v in os.environ.items() if k != "RAG_API_KEY"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("rag serve: http://"):
            return proc, line.split()[2].rstrip("/")
    raise RuntimeError(f"rag serve did not start (exit {proc.wait()})")
