"""`python -m bench [SECTION ...]`: measure rag-local's speed and print a table per section.

Sections: generation, retrieval, ingest, coldstart, quality, serve, conversations, ocr, store, tuning (default: the
first four).
``--smoke`` runs a tiny configuration of each (seconds, for the test that keeps this code from rotting);
``--json FILE`` saves the rows.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

SECTIONS = (
    "generation", "retrieval", "ingest", "coldstart", "quality", "serve", "conversations", "ocr", "store", "tuning",
    "bombs",
)  # fmt: skip
DEFAULT = ("generation", "retrieval", "ingest", "coldstart")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("sections", nargs="*", metavar="SECTION", help=f"any of {', '.join(SECTIONS)}")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that everything runs, measures nothing")
    p.add_argument("--repeats", type=int, default=3, help="runs per measurement; medians are reported (3)")
    p.add_argument(
        "--backends",
        default="generate,transformers,lean-fp32,lean-int8-head,lean-int8,llamacpp,llama.cpp",
        help="generation rows, comma-separated",
    )
    p.add_argument("--gen-model", default="SmolLM2-135M-Instruct", help="generation: the generator (a tier name)")
    p.add_argument("--sizes", default="10000,100000,1000000", help="retrieval: vector counts")
    p.add_argument("--nprobe", default="16,32,64", help="retrieval: IVF nprobe values")
    p.add_argument(
        "--corpora", default="xquad-docs,docs-mixed-sample", help="ingest: xquad-docs, docs-mixed-sample, docs-mixed"
    )
    p.add_argument("--questions", type=int, default=40, help="quality: XQuAD tuning-half questions")
    p.add_argument("--clients", type=int, default=20, help="serve: concurrent clients (20)")
    p.add_argument("--searches", type=int, default=200, help="serve: search requests (200)")
    p.add_argument("--asks", type=int, default=20, help="serve: chat-completion requests (20)")
    p.add_argument("--pages", type=int, default=10, help="ocr: scanned pages (10)")
    p.add_argument("--chunks", type=int, default=1_000_000, help="store: synthetic chunks per store (1,000,000)")
    p.add_argument("--steps", type=int, default=5, help="tuning: timed training steps per precision (5)")
    p.add_argument("--json", metavar="FILE", help="also write all rows as JSON")
    p.add_argument("--cache-dir", type=Path, help="generator/ONNX cache (default: rag's, ~/.cache/rag)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("_ingest", "_encode", "_embed", "_store_build", "_store_search"):  # child processes
        return _worker(argv)
    args = _parser().parse_args(argv)
    sections = args.sections or list(DEFAULT)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        print(f"python -m bench: unknown section {unknown[0]!r}; use any of {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    from rag import Config

    cache_dir = args.cache_dir or Config.load().cache_dir
    from bench.common import load_note

    print(f"# rag-local bench · {platform.processor() or platform.machine()} · {load_note()} · {time.ctime()}")
    results: dict[str, Any] = {"machine": _machine(), "load_before": load_note()}
    for section in sections:
        started = time.perf_counter()
        rows = _run(section, args, cache_dir)
        results[section] = rows
        print(f"\n## {section}  ({time.perf_counter() - started:.0f} s, {load_note()})\n")
        print(_table(rows))
    results["load_after"] = load_note()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


def _run(section: str, args: argparse.Namespace, cache_dir: Path) -> list[dict[str, Any]]:
    smoke = args.smoke
    if section == "generation":
        from bench import generation

        backends = args.backends.split(",")
        if smoke:
            return generation.run(["lean-int8-head", "llama.cpp"], 1, cache_dir, prompt_tokens=200, new_tokens=4)
        rows = generation.run(backends, args.repeats, cache_dir, gen_model=args.gen_model)
        return _ratios(rows, "generate", "llama.cpp")
    if section == "retrieval":
        from bench import retrieval

        if smoke:
            return retrieval.run([3000], [8], queries=10)
        return retrieval.run([int(s) for s in args.sizes.split(",")], [int(n) for n in args.nprobe.split(",")])
    if section == "ingest":
        from bench import ingest

        if smoke:
            return []  # two fresh model-loading processes: too slow for a smoke run
        return ingest.run(args.corpora.split(","))
    if section == "coldstart":
        from bench import coldstart

        if smoke:
            return coldstart.run(1, ["help"])
        return coldstart.run(args.repeats, ["help", "search", "search-torch", "ask"])
    if section == "conversations":
        from bench import conversations

        return conversations.run(answers=not smoke, limit=2 if smoke else None)
    if section == "ocr":
        from bench import ocr

        return ocr.run(1 if smoke else args.pages)
    if section == "store":
        from bench import store

        return store.run(20_000 if smoke else args.chunks)
    if section == "serve":
        from bench import serve

        if smoke:
            return []  # a server process loading the models: too slow for a smoke run
        return serve.run(args.clients, args.searches, args.asks)
    if section == "bombs":
        from bench import bombs

        return bombs.run(smoke)
    if section == "tuning":
        from bench import tuning

        return tuning.run(1, 4) if smoke else tuning.run(args.steps, 32)
    from bench import quality

    if smoke:
        return quality.run(["lean-int8-head"], 1, 0, 4, cache_dir)
    from rag.models.llamacpp import installed

    rows = ["lean-fp32", "lean-int8-head", "lean-int8", *(["llamacpp"] if installed() else [])]
    return quality.run(rows, args.questions, 26, 48, cache_dir)


def _ratios(rows: list[dict[str, Any]], baseline: str, rival: str) -> list[dict[str, Any]]:
    """Each row's end-to-end speed-up over the baseline, and its decode rate relative to the rival's."""
    by = {r["backend"]: r for r in rows if "total_s" in r}
    for r in rows:
        if "total_s" not in r:
            continue
        if baseline in by:
            r[f"x_vs_{baseline}"] = by[baseline]["total_s"] / r["total_s"]
        if rival in by:
            r[f"total_vs_{rival}"] = r["total_s"] / by[rival]["total_s"]
            r[f"decode_vs_{rival}"] = r["decode_tok_s"] / by[rival]["decode_tok_s"]
    return rows


def _worker(argv: list[str]) -> int:
    from bench import ingest, store

    out = Path(argv[argv.index("--out") + 1])
    if argv[0] == "_store_build":
        result = store.worker_build(argv[1], argv[2], int(argv[3]))
    elif argv[0] == "_store_search":
        result = store.worker_search(argv[1], argv[2])
    elif argv[0] == "_ingest":
        result = ingest.worker_ingest(argv[1], argv[2], int(argv[3]))
    else:
        result = ingest.worker_encode(argv[1], runtime="torch" if argv[0] == "_encode" else "onnx")
    out.write_text(json.dumps(result))
    return 0


def _machine() -> dict[str, Any]:
    import os

    info = {"python": platform.python_version(), "cores": os.cpu_count(), "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split()[1]
        info["mem_gib"] = round(int(mem) / 2**20, 1)
    except OSError:
        pass
    return info


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(nothing measured)"
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
