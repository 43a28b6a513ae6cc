"""Shared pieces of the benchmarks: the evaluation data, fixed prompts, timing helpers."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT.parent / "shared" / "eval"
XQUAD = EVAL / "xquad-en"
SAMPLE_DOCS = ROOT / "sample_docs"


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def xquad_tuning(n: int) -> list[dict[str, Any]]:
    """The first ``n`` questions of XQuAD's tuning half (even line index); the held-out half is never read."""
    return load_jsonl(XQUAD / "questions.jsonl")[0::2][:n]


def xquad_contexts() -> dict[str, dict[str, Any]]:
    return {c["context_id"]: c for c in load_jsonl(XQUAD / "contexts.jsonl")}


def gold_hit(context: dict[str, Any], rank: int = 1):  # -> rag.types.Hit
    from rag.types import Hit

    text = context["text"]
    return Hit(
        rank=rank, score=1.0, chunk_id=rank, path=context["doc_file"], title=context["title"], kind="text",
        ordinal=0, start=0, end=len(text), token_count=0, text=text,
    )  # fmt: skip


def rag_messages(tokens: int, count: Callable[[list[dict[str, str]]], int]) -> tuple[str, list[dict[str, str]]]:
    """A fixed RAG prompt of about ``tokens`` tokens: a tuning-half XQuAD question with its gold paragraph first,
    then the following paragraphs of the same article, as `rag ask` would pack them."""
    from rag.answer.prompt import build_messages

    question = xquad_tuning(1)[0]
    contexts = xquad_contexts()
    same_doc = [c for c in contexts.values() if c["doc_file"] == question["doc_file"]]
    hits = [gold_hit(contexts[question["context_id"]])]
    hits += [gold_hit(c, len(hits) + 1) for c in same_doc if c["context_id"] != question["context_id"]]
    chosen = []
    for hit in hits:
        if count(build_messages(question["question"], [*chosen, hit])) > tokens:
            break
        chosen.append(hit)
    return question["question"], build_messages(question["question"], chosen)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def load_note() -> str:
    """The 1/5/15-minute load averages: timings on a shared machine mean little without them."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} {five:.1f} {fifteen:.1f} on {os.cpu_count()} cores"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Measures a command from a small process: a child's peak RSS counts the memory of whatever it was forked from
# (Linux carries the pre-exec high-water mark over), so forking from the benchmark itself would report its size.
_LAUNCHER = """
import os, subprocess, sys, time
t = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, u = os.wait4(p.pid, 0)
print(time.perf_counter() - t, u.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), u.ru_utime + u.ru_stime)
"""


def run_process(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int, float]:
    """Run ``argv`` as a fresh process: (wall seconds, peak RSS in MB, exit code, CPU seconds).

    CPU seconds (user + system) hardly depend on how busy the machine is; wall time does."""
    out = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *argv], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), float(out[1]), int(out[2]), float(out[3])
