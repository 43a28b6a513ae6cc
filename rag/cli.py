"""`rag`: the command line over the public API. Results go to stdout, progress and errors to stderr.

Exit codes: 0 success, 1 an expected failure (one line on stderr), 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ingest.pipeline import IngestReport, Progress
    from rag.api import Index
    from rag.config import Config
    from rag.evaluate import EvalReport
    from rag.types import Filters


def _positive_int(text: str) -> int:
    value = int(text)  # a ValueError becomes argparse's "invalid _positive_int value" usage error
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _since(text: str) -> float:
    """Unix seconds, an ISO date/time (2024-05-01, 2024-05-01T12:00), or an age: 30m, 12h, 7d."""
    from datetime import datetime

    units = {"m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
            return time.time() - float(text[:-1]) * units[text[-1]]
        try:
            return float(text)
        except ValueError:
            return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (2024-05-01), Unix time, or age (7d, 12h)") from None


def _retrieval_options() -> argparse.ArgumentParser:
    r = argparse.ArgumentParser(add_help=False)
    g = r.add_argument_group("retrieval")
    g.add_argument("--mode", choices=["dense", "bm25", "hybrid"], help="retrieval mode (default hybrid)")
    g.add_argument("--path", metavar="GLOB", help="only files matching GLOB (e.g. '*.md', 'docs/*')")
    g.add_argument("--kind", action="append", metavar="KIND", help="only these types: text markdown rst html pdf code")
    g.add_argument("--since", type=_since, metavar="WHEN", help="only files modified since (2024-05-01, 7d, 12h)")
    g.add_argument("--mmr", type=float, metavar="LAMBDA", help="diversify results (1: relevance only, 0.5: balanced)")
    g.add_argument("--reranker", metavar="M", help="cross-encoder folder to rerank with (none is bundled)")
    return r


def _parser() -> argparse.ArgumentParser:
    # Global options are accepted before or after the command (`rag --index X ask ...` or `rag ask ... --index X`).
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("global options")
    g.add_argument(
        "--index",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="index directory (env RAG_INDEX, default ./.rag)",
    )
    g.add_argument(
        "--embed-model",
        metavar="M",
        default=argparse.SUPPRESS,
        help="embedding model: bundled name, sentence-transformers folder or hub id",
    )
    g.add_argument(
        "--gen-model",
        metavar="M",
        default=argparse.SUPPRESS,
        help="generator: bundled name, causal-LM folder, .gguf file or hub id",
    )
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress output")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")

    p = argparse.ArgumentParser(
        prog="rag",
        parents=[common],
        description="Ask questions about a folder of documents with a local model, offline, with sources.",
        epilog='Start with: rag ingest FOLDER, then rag ask "your question".',
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ing = sub.add_parser("ingest", parents=[common], help="index a folder (re-run to sync changes)")
    ing.add_argument("folder", help="folder of documents; searched recursively")
    ing.add_argument("--no-delete", action="store_true", help="keep documents whose files are gone")
    ing.add_argument("--chunk-tokens", type=int, metavar="N", help="chunk size in embedder tokens (default 254)")
    ing.add_argument("--chunk-overlap", type=int, metavar="N", help="overlap between chunks in tokens (32)")

    retrieval = _retrieval_options()
    se = sub.add_parser("search", parents=[common, retrieval], help="show the chunks that best match a query")
    se.add_argument("query")
    se.add_argument("-k", type=_positive_int, metavar="N", help="how many results (default 5)")
    se.add_argument("--min-score", type=float, metavar="S", help="leave out results below this cosine (any mode)")

    ask = sub.add_parser("ask", parents=[common, retrieval], help="answer a question from the indexed documents")
    ask.add_argument("question")
    ask.add_argument("-k", type=_positive_int, metavar="N", help="sources to retrieve (default 5)")
    ask.add_argument(
        "--answer-mode",
        metavar="MODE",
        help="quote (default: a verbatim span of the sources chosen by the model), auto (generate, check against "
        "the sources, quote them when unsupported), generate or extract (the most similar source sentence); "
        "env RAG_ANSWER_MODE",
    )
    d = ask.add_argument_group("decoding (default: greedy)")
    d.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="answer length limit (128)")
    d.add_argument("--temperature", type=float, default=0.0, metavar="T", help="> 0 samples (0: greedy)")
    d.add_argument("--top-k", type=int, metavar="K", help="sample from the K most likely tokens")
    d.add_argument("--top-p", type=float, metavar="P", help="sample from the smallest set reaching probability P")
    d.add_argument("--num-beams", type=int, default=1, metavar="N", help="beam search width (no streaming)")
    d.add_argument("--repetition-penalty", type=float, default=1.0, metavar="R", help="> 1 discourages repeats")
    d.add_argument("--no-repeat-ngram-size", type=int, default=0, metavar="N", help="forbid repeated n-grams")
    d.add_argument("--seed", type=int, metavar="S", help="random seed for sampling")

    ex = sub.add_parser("explain", parents=[common, retrieval], help="tokens, retrieval, prompt, attention, decoding")
    ex.add_argument("question")
    ex.add_argument("-k", type=_positive_int, metavar="N", help="sources to retrieve (default 5)")
    ex.add_argument("--max-new-tokens", type=_positive_int, default=64, metavar="N", help="answer length (64)")
    ex.add_argument("--out", metavar="DIR", help="write explain.json, prompt.txt and heatmap PNGs to DIR")
    ex.add_argument("--layer", type=_positive_int, metavar="N", help="attention of layer N alone (1-based)")
    ex.add_argument("--source", type=_positive_int, metavar="N", help="context heatmap for source N (default: top)")
    ex.add_argument("--steps", type=int, default=5, metavar="N", help="decoding steps to show candidates for (5)")
    ex.add_argument(
        "--compare-decoding", action="store_true", help="also answer with beam search, temperatures, top-k, top-p"
    )
    ex.add_argument("--no-prompt", action="store_true", help="do not print the packed prompt's text")
    ex.add_argument(
        "--answer-mode",
        metavar="MODE",
        help="decode as `rag ask` does in MODE: quote (default: constrained to a span of the sources), or "
        "generate / auto (free); env RAG_ANSWER_MODE",
    )

    mp = sub.add_parser("map", parents=[common], help="draw the chunk embeddings in 2-D, coloured by document")
    mp.add_argument("--query", metavar="Q", help="place this query and ring its top-k chunks")
    mp.add_argument("-k", type=_positive_int, metavar="N", help="hits to ring (default 5)")
    mp.add_argument("--method", choices=["pca", "tsne"], default="pca", help="projection (default pca)")
    mp.add_argument("--perplexity", type=float, default=30.0, metavar="P", help="t-SNE perplexity (30)")
    mp.add_argument("--seed", type=int, default=0, metavar="S", help="sampling and t-SNE seed (0)")
    mp.add_argument(
        "--max-points", type=_positive_int, metavar="N", help="sample down to N chunks (pca 20000, tsne 5000)"
    )
    mp.add_argument("--out", metavar="DIR", default=".", help="folder for map-<method>.png (default .)")

    rm = sub.add_parser("remove", parents=[common], help="remove documents (files, or every file under folders)")
    rm.add_argument("paths", nargs="+", metavar="PATH", help="indexed file or folder; need not exist on disk")

    doc = sub.add_parser("doctor", parents=[common], help="check the index for inconsistencies (exit 1 if any)")
    doc.add_argument("--repair", action="store_true", help="delete orphan rows and rebuild the FAISS file")
    sub.add_parser("reindex", parents=[common], help="rebuild the FAISS file from the vectors SQLite holds")

    ev = sub.add_parser(
        "eval",
        parents=[common],
        help="score retrieval (and answers) on a BEIR folder or a questions file",
        description="Score retrieval modes side by side on a BEIR folder (corpus.jsonl, queries.jsonl, "
        "qrels-SPLIT.tsv) or a QA file (questions.jsonl with 'question' and 'answers', over the docs/ folder next "
        "to it, or its own folder). The documents are indexed in the cache (once; re-runs reuse it).",
    )
    ev.add_argument("target", help="BEIR folder, or questions.jsonl (or the folder holding it)")
    ev.add_argument("--split", help="BEIR: qrels split (default test); QA: tune (even lines), test (odd), all")
    ev.add_argument("--mode", action="append", choices=["dense", "bm25", "hybrid", "rerank"], help="repeatable")
    ev.add_argument(
        "--limit", type=_positive_int, metavar="N", help="BEIR: the first N queries; QA: N spread evenly over the split"
    )
    ev.add_argument("--answers", action="store_true", help="QA: also answer each question and score the answers (slow)")
    ev.add_argument(
        "--answer-mode",
        action="append",
        metavar="MODE",
        help="with --answers: quote, auto, generate or extract; repeatable (default: all four, side by side)",
    )
    ev.add_argument("--chunk-tokens", type=int, metavar="N", help="chunk size for the evaluation index")
    ev.add_argument("--chunk-overlap", type=int, metavar="N", help="chunk overlap for the evaluation index")
    ev.add_argument("--reranker", metavar="M", help="cross-encoder folder; adds a 'rerank' column")

    sub.add_parser("status", parents=[common], help="documents, chunks, models and settings of the index")
    sub.add_parser("config", parents=[common], help="the effective settings and where models come from")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("index", "embed_model", "gen_model"):
        if not hasattr(args, name):
            setattr(args, name, None)
    args.quiet = getattr(args, "quiet", False)
    args.json = getattr(args, "json", False)
    from rag.errors import ConfigError, RagError

    try:
        return _COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"rag {args.command}: {e}", file=sys.stderr)
        return 2
    except RagError as e:
        print(f"rag {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nrag {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rag search ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _config(args: argparse.Namespace, **extra: Any) -> Config:
    from rag.config import Config

    return Config.load(index=args.index, embed_model=args.embed_model, gen_model=args.gen_model, **extra)


def _open(config: Config, create: bool = False) -> Index:
    from rag.api import Index

    return Index.open(config=config, create=create)


def _show(path: str) -> str:
    """A path relative to the working directory when it lies below it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _dump(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


# --- ingest ---------------------------------------------------------------------------------------------------


class _ProgressLine:
    """One self-rewriting line on stderr, at most ten updates a second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = 0.0
        self.width = 0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and p.files_done < p.files_total:
            return
        self.last = now
        rate = p.chunks / p.elapsed if p.elapsed > 0 else 0.0
        eta = ""
        if 0 < p.files_done < p.files_total:
            left = p.elapsed / p.files_done * (p.files_total - p.files_done)
            eta = f" · ETA {int(left // 60)}:{int(left % 60):02d}"
        files = f"{p.files_done}/{p.files_total} files · " if p.files_total else ""
        line = f"ingest: {files}{p.chunks} chunks · {rate:.1f} chunks/s{eta}"
        if p.path:
            line += f" · {Path(p.path).name if p.files_total else p.path}"
        line = line[:120]
        self.stream.write("\r" + line.ljust(self.width))
        self.width = len(line)
        self.stream.flush()

    def close(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def _cmd_ingest(args: argparse.Namespace) -> int:
    config = _config(args, chunk_tokens=args.chunk_tokens, chunk_overlap=args.chunk_overlap)
    folder = Path(args.folder)
    if not folder.is_dir():  # before creating an index directory for nothing
        what = "is not a folder" if folder.exists() else "does not exist"
        print(f"rag ingest: {folder} {what}; give the folder of documents to index", file=sys.stderr)
        return 1
    show_progress = not args.quiet and sys.stderr.isatty()
    line = _ProgressLine(sys.stderr) if show_progress else None
    with _open(config, create=True) as index:
        try:
            report = index.ingest(folder, delete=not args.no_delete, progress=line)
        finally:
            if line:
                line.close()
        docs, chunks = index.store.counts()
    if args.json:
        _dump({**_report_dict(report), "index": {"documents": docs, "chunks": chunks}})
    else:
        _print_report(report, docs, chunks)
    return 0


def _report_dict(r: IngestReport) -> dict[str, Any]:
    from dataclasses import asdict

    return {**asdict(r), "indexed": r.indexed, "skipped_by_reason": r.skipped_by_reason()}


def _print_report(r: IngestReport, docs: int, chunks: int) -> None:
    rate = f", {r.chunks_embedded / r.seconds:.1f} chunks/s" if r.chunks_embedded and r.seconds else ""
    reused = f" · {r.moved} moved · {r.copied} copied" if r.moved or r.copied else ""
    print(
        f"{_show(r.folder)}: {r.files_seen} files · {r.added} added · {r.updated} updated{reused} · "
        f"{r.unchanged} unchanged · {r.removed} removed · {len(r.skipped)} skipped"
    )
    if r.reembedded:
        print(f"re-embedded {r.reembedded} stored chunks with the new embedding model")
    print(
        f"embedded {r.chunks_embedded} chunks in {r.seconds:.1f} s{rate}; index now holds {docs} documents, "
        f"{chunks} chunks"
    )
    if r.chunks_embedded == 0 and r.removed == 0 and not r.moved and not r.copied:
        print("nothing changed: no file needed embedding")
    if r.skipped:
        print("skipped: " + ", ".join(f"{n} {reason}" for reason, n in r.skipped_by_reason().items()))
        for s in r.skipped[:20]:
            print(f"  {_show(s.path)}: {s.reason}{' (' + s.detail + ')' if s.detail else ''}")
        if len(r.skipped) > 20:
            print(f"  ... and {len(r.skipped) - 20} more (--json lists all)")


# --- search / ask ---------------------------------------------------------------------------------------------


def _filters(args: argparse.Namespace) -> Filters | None:
    from rag.types import Filters

    kinds = tuple(k.strip() for value in args.kind or () for k in value.split(",") if k.strip())
    filters = Filters(path=args.path, kinds=kinds, modified_since=args.since)
    return filters if filters.active() else None


def _cmd_search(args: argparse.Namespace) -> int:
    config = _config(args, retrieval_mode=args.mode, reranker=args.reranker)
    filters = _filters(args)
    with _open(config) as index:
        hits = index.search(args.query, args.k, min_score=args.min_score, filters=filters, mmr=args.mmr)
    if args.json:
        _dump(
            {
                "query": args.query,
                "mode": config.retrieval_mode,
                "filters": filters.as_dict() if filters else None,
                "hits": [h.as_dict() for h in hits],
            }
        )
        return 0
    if not hits:
        print("no results (is the index empty, or are the filters too narrow?)")
    for h in hits:
        snippet = " ".join(h.text.split())
        snippet = snippet[:200] + ("…" if len(snippet) > 200 else "")
        print(f"{h.rank:>2}. {h.score:.3f}  {_show(h.path)} · {h.location()}")
        print(f"    {snippet}")
    return 0


def _cmd_ask(args: argparse.Namespace) -> int:
    from rag.generate import Decoding

    decoding = Decoding(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_beams=args.num_beams,
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        seed=args.seed,
    )
    decoding.validate()
    config = _config(args, retrieval_mode=args.mode, reranker=args.reranker, mmr=args.mmr, answer_mode=args.answer_mode)
    filters = _filters(args)
    stream_to_terminal = not args.json and sys.stdout.isatty()
    with _open(config) as index:
        if not args.quiet and sys.stderr.isatty() and index.generator.needs_conversion():
            print("rag ask: converting the GGUF generator to safetensors, once (about 20 s)...", file=sys.stderr)
        stream = index.ask_stream(args.question, k=args.k, decoding=decoding, filters=filters)
        streamed = []
        for piece in stream:
            streamed.append(piece)
            if stream_to_terminal:
                sys.stdout.write(piece)
                sys.stdout.flush()
        answer = stream.answer
    if args.json:
        _dump(answer.as_dict())
        return 0
    if stream_to_terminal and streamed:
        print()
        if "".join(streamed).strip() != answer.text:  # auto mode replaced an unsupported answer
            print(f"(not supported by the sources; {'quoting them' if answer.answered else 'no answer'} instead)")
            print(answer.text)
    else:
        print(answer.text)
    _print_support(answer)
    if answer.sources:
        print("\nSources:")
        for n, h in enumerate(answer.sources, start=1):
            mark = "*" if n in answer.cited else " "
            print(f" {mark}[{n}] {_show(h.path)} · {h.location()} · score {h.score:.3f}")
    if not args.quiet and sys.stderr.isatty() and answer.answered:
        t = answer.timings
        print(
            f"({answer.answer_tokens} tokens in {t.get('generate_s', 0):.1f} s, first after "
            f"{t.get('first_token_s', 0):.1f} s)",
            file=sys.stderr,
        )
    return 0


def _print_support(answer: Any) -> None:
    """The quote backing each claim of the answer, with file and character offsets."""
    if not answer.answered:
        return
    for s in answer.support:
        if s.path is None:
            continue
        where = f"[{s.source}] {_show(s.path)}:{s.start}-{s.end}"
        quote = " ".join(s.quote.split())
        quote = quote[:300] + ("…" if len(quote) > 300 else "")
        if s.supported:
            print(f'  > "{quote}"\n    {where}')
        else:
            print(f'  ! unsupported: "{s.claim}"; closest source text: "{quote}"\n    {where}')


# --- explain / map --------------------------------------------------------------------------------------------


def _cmd_explain(args: argparse.Namespace) -> int:
    from rag.errors import ConfigError
    from rag.explain import explain
    from rag.explain_text import render

    if args.steps < 0:
        raise ConfigError("--steps: must be >= 0")
    config = _config(args, retrieval_mode=args.mode, reranker=args.reranker)
    filters = _filters(args)
    with _open(config) as index:
        layers = int(index.generator.model.config.num_hidden_layers)
        if args.layer is not None and args.layer > layers:  # before minutes of work, not after
            raise ConfigError(f"--layer {args.layer}: the generator has layers 1 to {layers}")
        if not args.quiet and sys.stderr.isatty() and args.compare_decoding:
            print("rag explain: answering once per decoding strategy (6 generations)...", file=sys.stderr)
        e = explain(
            index,
            args.question,
            k=args.k,
            max_new_tokens=args.max_new_tokens,
            first_steps=args.steps,
            compare_decoding=args.compare_decoding,
            filters=filters,
            mmr=args.mmr,
            answer_mode=args.answer_mode,
        )
    layer = _check_layer_source(e, args)
    files = _explain_files(e, Path(args.out), layer, args.source) if args.out else []
    if args.json:
        _dump({**e.as_dict(), "files": files})
        return 0
    print("\n".join(render(e, layer=layer, show_prompt=not args.no_prompt)))
    if files:
        print("\nwrote " + ", ".join(files))
    return 0


def _check_layer_source(e: Any, args: argparse.Namespace) -> int | None:
    from rag.errors import ConfigError

    if args.source is not None and e.prompt is not None and args.source > len(e.prompt.sources):
        raise ConfigError(f"--source {args.source}: the prompt has sources 1 to {len(e.prompt.sources)}")
    return args.layer - 1 if args.layer is not None else None


def _explain_files(e: Any, out: Path, layer: int | None, source: int | None) -> list[str]:
    from rag import plots

    out.mkdir(parents=True, exist_ok=True)
    (out / "explain.json").write_text(json.dumps(e.as_dict(), indent=2, ensure_ascii=False, default=str))
    files = [out / "explain.json"]
    if e.prompt is not None:
        (out / "prompt.txt").write_text(e.prompt.text)
        files.append(out / "prompt.txt")
    a = e.attention
    if a is not None and a.answer_tokens:
        shares = a.answer_share if layer is None else a.layer_answer_share[layer]
        source = source or max(range(len(shares)), key=lambda i: shares[i]) + 1
        plots.source_heatmap(a, e.prompt.sources, out / "attention-sources.png", layer)
        tokens = a.context_tokens[source - 1]
        name = out / f"attention-source-{source}.png"
        plots.context_heatmap(a, source, tokens, e.prompt.sources[source - 1], name, layer)
        files += [out / "attention-sources.png", name]
    return [_show(str(f)) for f in files]


def _cmd_map(args: argparse.Namespace) -> int:
    from rag import plots
    from rag.embedmap import embedding_map

    config = _config(args)
    with _open(config) as index:
        emap = embedding_map(
            index,
            query=args.query,
            k=args.k,
            method=args.method,
            max_points=args.max_points,
            perplexity=args.perplexity,
            seed=args.seed,
        )
    path = Path(args.out) / f"map-{args.method}.png"
    width, height = plots.map_png(emap, path)
    if args.json:
        _dump({**emap.as_dict(), "file": _show(str(path)), "width": width, "height": height})
        return 0
    shown = f"{len(emap.chunk_ids)} of {emap.total_chunks} chunks (random sample, seed {emap.seed})"
    print(
        f"{shown if emap.sampled else f'{emap.total_chunks} chunks'} from {len(emap.documents)} documents, "
        f"{emap.method.upper()} in {emap.seconds:.1f} s"
    )
    if emap.explained_variance:
        print("axes hold {:.1%} and {:.1%} of the variance".format(*emap.explained_variance))
    if emap.perplexity is not None:
        print(f"t-SNE perplexity {emap.perplexity:g}, seed {emap.seed}")
    for h in emap.hits:
        print(f"{h['rank']:>2}. {h['score']:.3f}  {_show(h['path'])}  at ({h['x']:.2f}, {h['y']:.2f})")
    print(f"wrote {_show(str(path))} ({width}x{height})")


# --- remove / doctor / reindex --------------------------------------------------------------------------------


def _cmd_remove(args: argparse.Namespace) -> int:
    with _open(_config(args)) as index:
        removed = index.remove(args.paths)
        docs, chunks = index.store.counts()
    if args.json:
        _dump({"removed": removed, "index": {"documents": docs, "chunks": chunks}})
    else:
        print(f"removed {removed} documents; index now holds {docs} documents, {chunks} chunks")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    with _open(_config(args)) as index:
        problems = index.doctor(repair=args.repair)
        docs, chunks = index.store.counts()
    if args.json:
        _dump({"ok": not problems, "repaired": args.repair, "problems": [vars(p) for p in problems]})
    elif problems:
        for p in problems:
            print(f"{p.kind}: {p.detail}")
        if not args.repair:
            print("run `rag doctor --repair` to fix what can be fixed")
    else:
        print(f"ok: {docs} documents, {chunks} chunks, FAISS and SQLite agree")
    return 1 if problems else 0


def _cmd_reindex(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with _open(_config(args)) as index:
        n = index.reindex()
    if args.json:
        _dump({"vectors": n, "seconds": time.monotonic() - started})
    else:
        print(f"rebuilt the FAISS index from SQLite: {n} vectors in {time.monotonic() - started:.1f} s")
    return 0


# --- status / config ------------------------------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    from rag.store import Store

    config = _config(args)
    store = Store.open(config.index)
    try:
        docs, chunks = store.counts()
        kinds: dict[str, int] = {}
        for d in store.documents():
            kinds[d.kind] = kinds.get(d.kind, 0) + 1
        size = sum(p.stat().st_size for p in config.index.iterdir() if p.is_file())
        status = {
            "index": str(config.index.resolve()),
            "documents": docs,
            "chunks": chunks,
            "by_type": kinds,
            "bytes_on_disk": size,
            "embedder": store.meta.get("embedder"),
            "chunker": store.meta.get("chunker"),
            "vectors": store.meta.get("vectors"),
            "generator": config.gen_model,
            "gen_backend": config.gen_backend,
            "gen_precision": config.gen_precision,
            "format_version": store.meta.get("format_version"),
            "generation": store.meta.get("generation"),
        }
    finally:
        store.close()
    if args.json:
        _dump(status)
        return 0
    emb = status["embedder"] or {}
    print(f"index      {status['index']}  ({size / 1e6:.1f} MB)")
    print(f"documents  {docs}  " + " ".join(f"{k}:{v}" for k, v in sorted(kinds.items())))
    print(f"chunks     {chunks}")
    print(
        f"embedder   {emb.get('name', '-')}  dim {emb.get('dim', '-')}  max_seq_length {emb.get('max_seq_length', '-')}"
    )
    print(f"chunker    {status['chunker']}")
    vec = status["vectors"] or {"kind": "flat"}
    params = " ".join(f"{k} {v}" for k, v in vec.items() if k in ("nlist", "nprobe"))
    exact = "exact" if vec["kind"] == "flat" else "approximate"
    print(f"vectors    {vec['kind']} ({exact} inner product){'  ' + params if params else ''}")
    print(f"generator  {config.gen_model}  backend {config.gen_backend}  precision {config.gen_precision}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from rag.models import resolve_embedder, resolve_generator

    config = _config(args)
    values = config.as_dict()
    emb, gen = resolve_embedder(config.embed_model), resolve_generator(config.gen_model)
    values["embed_model_location"] = emb.location
    values["gen_model_location"] = str(Path(gen.location) / gen.gguf_file) if gen.gguf_file else gen.location
    if args.json:
        _dump(values)
    else:
        for k, v in values.items():
            print(f"{k:<22} {v}")
    return 0


# --- eval -----------------------------------------------------------------------------------------------------


def _cmd_eval(args: argparse.Namespace) -> int:
    from rag.evaluate import evaluate, is_beir

    config = _config(args, chunk_tokens=args.chunk_tokens, chunk_overlap=args.chunk_overlap, reranker=args.reranker)
    target = Path(args.target)
    split = args.split or ("test" if target.is_dir() and is_beir(target) else "all")
    line = _EvalProgress(sys.stderr) if not args.quiet and sys.stderr.isatty() else None
    try:
        report = evaluate(
            target,
            config,
            split=split,
            modes=args.mode,
            limit=args.limit,
            answers=args.answers,
            answer_modes=args.answer_mode,
            progress=line,
        )
    finally:
        if line:
            line.close()
    if args.json:
        _dump(report.as_dict())
    else:
        _print_eval(report)
    return 0


class _EvalProgress(_ProgressLine):
    def __call__(self, what: str, done: int, total: int) -> None:  # type: ignore[override]
        now = time.monotonic()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        line = f"eval: {what} {done}/{total}"
        self.stream.write("\r" + line.ljust(self.width))
        self.width = len(line)
        self.stream.flush()


def _print_eval(r: EvalReport) -> None:
    print(
        f"{_show(r.target)} · split {r.split} · {r.queries} queries · {r.ingest.get('documents')} documents, "
        f"{r.ingest.get('chunks')} chunks"
    )
    modes = list(r.modes)
    metrics = list(dict.fromkeys(m for scores in r.modes.values() for m in scores))
    print(f"{'metric':<14}" + "".join(f"{m:>10}" for m in modes))
    for metric in metrics:
        print(f"{metric:<14}" + "".join(f"{r.modes[m].get(metric, 0.0):>10.4f}" for m in modes))
    if r.answers:
        answer_modes = list(r.answers)
        print(f"{'answers':<18}" + "".join(f"{m:>10}" for m in answer_modes))
        for metric in dict.fromkeys(k for scores in r.answers.values() for k in scores):
            print(f"{metric:<18}" + "".join(f"{r.answers[m].get(metric, 0.0):>10.3f}" for m in answer_modes))
    s = r.settings
    print(
        f"settings: chunks {s['chunk_tokens']}/{s['chunk_overlap']} · rrf_k {s['rrf_k']:g} · weights dense "
        f"{s['dense_weight']:g} bm25 {s['bm25_weight']:g} · candidates {s['candidates']} · {r.seconds:.0f} s"
    )


_COMMANDS = {
    "ingest": _cmd_ingest,
    "search": _cmd_search,
    "ask": _cmd_ask,
    "explain": _cmd_explain,
    "map": _cmd_map,
    "remove": _cmd_remove,
    "doctor": _cmd_doctor,
    "reindex": _cmd_reindex,
    "eval": _cmd_eval,
    "status": _cmd_status,
    "config": _cmd_config,
}

if __name__ == "__main__":
    sys.exit(main())
