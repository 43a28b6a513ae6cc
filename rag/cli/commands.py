"""One function per command, each a thin layer over :class:`rag.api.Index` (and the tools over it)."""

from __future__ import annotations

import argparse
import errno
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.cli.output import (
    EvalProgress,
    ProgressLine,
    clean,
    dump,
    is_text,
    print_eval,
    print_report,
    print_support,
    show,
)

if TYPE_CHECKING:
    from rag.api import Index
    from rag.config import Config
    from rag.types import Filters


def _config(args: argparse.Namespace, **extra: Any) -> Config:
    from rag.config import Config

    return Config.load(
        index=args.index, store=args.store, embed_model=args.embed_model, gen_model=args.gen_model, **extra
    )


def _open(config: Config, create: bool = False) -> Index:
    from rag.api import Index

    return Index.open(config=config, create=create)


# --- ingest ---------------------------------------------------------------------------------------------------


def _cmd_ingest(args: argparse.Namespace) -> int:
    config = _config(args, chunk_tokens=args.chunk_tokens, chunk_overlap=args.chunk_overlap)
    folder = Path(args.folder)
    if not folder.is_dir():  # before creating an index directory for nothing
        what = "is not a folder" if folder.exists() else "does not exist"
        print(f"rag ingest: {folder} {what}; give the folder of documents to index", file=sys.stderr)
        return 1
    show_progress = not args.quiet and sys.stderr.isatty()
    line = ProgressLine(sys.stderr) if show_progress else None
    with _open(config, create=True) as index:
        try:
            report = index.ingest(folder, delete=not args.no_delete, progress=line)
        finally:
            if line:
                line.close()
        docs, chunks = index.counts()
    if args.json:
        dump({**report.as_dict(), "index": {"documents": docs, "chunks": chunks}})
    else:
        print_report(report, docs, chunks)
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    import signal
    import threading

    from rag.watch import Sync, watch

    if args.settle <= 0:
        print(f"rag watch: --settle {args.settle}: give a number of seconds above 0", file=sys.stderr)
        return 2
    folder = Path(args.folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        print(f"rag watch: {folder} {what}; give the folder of documents to watch", file=sys.stderr)
        return 1
    stop = threading.Event()

    def interrupt(signum: int, frame: object) -> None:
        # The first Ctrl-C stops after the batch being written; a second one stops at once.
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    def synced(s: Sync) -> None:
        if line:
            line.close()
        if args.json:
            print(json.dumps(s.as_dict()), flush=True)
        elif not args.quiet:
            r = s.report
            what = f"{s.events} changes" if s.number else "catching up"
            print(
                f"rag watch: sync {s.number} ({what}): {r.added} added · {r.updated} updated · {r.moved} moved · "
                f"{r.removed} removed · {len(r.skipped)} skipped · {r.seconds:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    line = ProgressLine(sys.stderr) if not args.quiet and sys.stderr.isatty() else None
    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        with _open(_config(args), create=True) as index:
            if not args.quiet:
                print(f"rag watch: watching {show(str(folder.resolve()))} (Ctrl-C stops)", file=sys.stderr, flush=True)
            watch(
                index,
                folder,
                on_sync=synced,
                stop=stop,
                quiet_s=args.settle,
                delete=not args.no_delete,
                progress=line,
                on_busy=lambda why: print(f"rag watch: {why}; trying again", file=sys.stderr, flush=True),
            )
    finally:
        signal.signal(signal.SIGINT, previous)
        if line:
            line.close()
    if not args.quiet:
        print("rag watch: stopped", file=sys.stderr)
    return 0


# --- search / ask ---------------------------------------------------------------------------------------------


def _filters(args: argparse.Namespace) -> Filters | None:
    from rag.types import Filters

    kinds = tuple(k.strip() for value in args.kind or () for k in value.split(",") if k.strip())
    filters = Filters(path=args.path, kinds=kinds, modified_since=args.since)
    return filters if filters.active() else None


def _cmd_search(args: argparse.Namespace) -> int:
    config = _config(args, retrieval=args.retrieval, reranker=args.reranker)
    filters = _filters(args)
    with _open(config) as index:
        hits = index.search(args.query, args.k, min_score=args.min_score, filters=filters, mmr=args.mmr)
    if args.json:
        dump(
            {
                "query": args.query,
                "retrieval": config.retrieval,
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
        print(f"{h.rank:>2}. {h.score:.3f}  {show(h.path)} · {clean(h.location(), lines=False)}")
        print(f"    {clean(snippet)}")
    return 0


def _cmd_ask(args: argparse.Namespace) -> int:
    from rag.models.decoding import Decoding

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
    config = _config(args, retrieval=args.retrieval, reranker=args.reranker, mmr=args.mmr, answer_mode=args.answer_mode)
    filters = _filters(args)
    stream_to_terminal = not args.json and sys.stdout.isatty()
    with _open(config) as index:
        if not args.quiet and sys.stderr.isatty() and index.generator.needs_conversion():
            print("rag ask: converting the GGUF generator, once (a minute or more)...", file=sys.stderr)
        stream = index.ask_stream(args.question, k=args.k, decoding=decoding, filters=filters)
        streamed = []
        for piece in stream:
            streamed.append(piece)
            if stream_to_terminal:
                sys.stdout.write(clean(piece))
                sys.stdout.flush()
        answer = stream.answer
    if args.json:
        dump(answer.as_dict())
        return 0
    if stream_to_terminal and streamed:
        print()
        _say_replaced(answer, "".join(streamed))
    else:
        print(clean(answer.text))
    print_support(answer)
    if answer.sources:
        print("\nSources:")
        for n, h in enumerate(answer.sources, start=1):
            mark = "*" if n in answer.cited else " "
            print(f" {mark}[{n}] {show(h.path)} · {clean(h.location(), lines=False)} · score {h.score:.3f}")
    if not args.quiet and sys.stderr.isatty() and answer.answered:
        t = answer.timings
        print(
            f"({answer.answer_tokens} tokens in {t.get('generate_s', 0):.1f} s, first after "
            f"{t.get('first_token_s', 0):.1f} s)",
            file=sys.stderr,
        )
    return 0


def _say_replaced(answer: Any, streamed: str) -> None:
    """After a streamed answer: what replaced it, when the support check did not keep what was streamed."""
    asked = answer.settings.get("answer_mode")
    if answer.answer_mode == "sentences":  # the checked sentences, cited by the sources that back them
        if " ".join(answer.text.split()) != " ".join(streamed.split()):
            print("(checked against the sources:)")
            print(clean(answer.text))
    elif answer.answer_mode != ("generate" if asked == "auto" else asked):  # the closest sentence replaced it
        instead = "the closest source sentence" if answer.answered else "no answer"
        print(f"(not supported by the sources; {instead} instead)")
        print(clean(answer.text))


# --- explain / map --------------------------------------------------------------------------------------------


def _cmd_explain(args: argparse.Namespace) -> int:
    from rag.errors import ConfigError
    from rag.tools.explain import explain
    from rag.tools.explain_text import render

    if args.steps < 0:
        raise ConfigError("--steps: must be >= 0")
    config = _config(args, retrieval=args.retrieval, reranker=args.reranker)
    filters = _filters(args)
    with _open(config) as index:
        layers = index.generator.layers
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
        dump({**e.as_dict(), "files": files})
        return 0
    print("\n".join(clean(line) for line in render(e, layer=layer, show_prompt=not args.no_prompt)))
    if files:
        print("\nwrote " + ", ".join(files))
    return 0


def _check_layer_source(e: Any, args: argparse.Namespace) -> int | None:
    from rag.errors import ConfigError

    if args.source is not None and e.prompt is not None and args.source > len(e.prompt.sources):
        raise ConfigError(f"--source {args.source}: the prompt has sources 1 to {len(e.prompt.sources)}")
    return args.layer - 1 if args.layer is not None else None


def _explain_files(e: Any, out: Path, layer: int | None, source: int | None) -> list[str]:
    from rag.tools import plots

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
    return [show(str(f)) for f in files]


def _cmd_map(args: argparse.Namespace) -> int:
    from rag.tools import plots
    from rag.tools.embedding_map import embedding_map, embedding_map_pair

    config = _config(args)
    options = {
        "query": args.query,
        "k": args.k,
        "method": args.method,
        "max_points": args.max_points,
        "perplexity": args.perplexity,
        "seed": args.seed,
    }
    with _open(config) as index:
        maps = list(embedding_map_pair(index, **options)) if args.compare else [embedding_map(index, **options)]
    if args.compare:
        path = Path(args.out) / f"map-{args.method}-compare.png"
        width, height = plots.map_pair_png(maps[0], maps[1], path)
    else:
        path = Path(args.out) / f"map-{args.method}.png"
        width, height = plots.map_png(maps[0], path)
    if args.json:
        found = {"before": maps[0].as_dict(), "after": maps[1].as_dict()} if args.compare else maps[0].as_dict()
        dump({**found, "file": show(str(path)), "width": width, "height": height})
        return 0
    for emap in maps:
        _print_map(emap, label=f"{emap.embedder}: " if args.compare else "")
    print(f"wrote {show(str(path))} ({width}x{height})")
    return 0


def _print_map(emap: Any, label: str) -> None:
    shown = f"{len(emap.chunk_ids)} of {emap.total_chunks} chunks (random sample, seed {emap.seed})"
    print(
        f"{label}{shown if emap.sampled else f'{emap.total_chunks} chunks'} from {len(emap.documents)} documents, "
        f"{emap.method.upper()} in {emap.seconds:.1f} s"
    )
    if emap.explained_variance:
        print("axes hold {:.1%} and {:.1%} of the variance".format(*emap.explained_variance))
    if emap.perplexity is not None:
        print(f"t-SNE perplexity {emap.perplexity:g}, seed {emap.seed}")
    for h in emap.hits:
        print(f"{h['rank']:>2}. {h['score']:.3f}  {show(h['path'])}  at ({h['x']:.2f}, {h['y']:.2f})")


# --- remove / doctor / reindex --------------------------------------------------------------------------------


def _cmd_remove(args: argparse.Namespace) -> int:
    with _open(_config(args)) as index:
        removed = index.remove(args.paths)
        docs, chunks = index.counts()
    if args.json:
        dump({"removed": removed, "index": {"documents": docs, "chunks": chunks}})
    else:
        print(f"removed {removed} documents; index now holds {docs} documents, {chunks} chunks")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    with _open(_config(args)) as index:
        problems = index.doctor(repair=args.repair)
        docs, chunks = index.counts()
    if args.json:
        dump({"ok": not problems, "repaired": args.repair, "problems": [vars(p) for p in problems]})
    elif problems:
        for p in problems:
            print(f"{p.kind}: {clean(p.detail)}")
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
        dump({"vectors": n, "seconds": time.monotonic() - started})
    else:
        print(f"rebuilt the FAISS index from SQLite: {n} vectors in {time.monotonic() - started:.1f} s")
    return 0


# --- chat -----------------------------------------------------------------------------------------------------


def _cmd_chat(args: argparse.Namespace) -> int:
    from rag.conversation import Conversation
    from rag.errors import ConfigError

    config = _config(args, retrieval=args.retrieval, reranker=args.reranker, mmr=args.mmr, answer_mode=args.answer_mode)
    filters = _filters(args)
    interactive = sys.stdin.isatty()
    if isinstance(sys.stdin, io.TextIOWrapper):  # an undecodable line is refused alone, not the end of the chat
        sys.stdin.reconfigure(errors="surrogateescape")
    if interactive:
        import readline  # noqa: F401  (input() then keeps a history the arrow keys recall)
    with _open(config) as index:
        chat = Conversation.resume(index, args.resume or None) if args.resume is not None else Conversation(index)
        if not args.quiet and interactive:
            print(
                f"conversation {chat.id} ({len(chat.turns)} turns so far; Ctrl-D leaves, Ctrl-C cancels an answer)",
                file=sys.stderr,
            )
        refused = 0
        while True:
            try:
                question = input("> " if interactive else "").strip()
            except EOFError:
                break
            except KeyboardInterrupt:
                print(file=sys.stderr)
                continue
            if not question:
                continue
            streaming = interactive and not args.json and sys.stdout.isatty()
            try:
                if not is_text(question):
                    raise ConfigError("this line is not valid UTF-8 text; ask in UTF-8")
                streamed: list[str] = []
                echo = _echo_into(streamed) if streaming else None
                answer = chat.ask(question, k=args.k, filters=filters, on_token=echo)
            except KeyboardInterrupt:
                print("\n(cancelled)", file=sys.stderr)
                continue
            except ConfigError as e:  # one bad question (too long, no words): say so, and go on to the next
                refused += 1
                print(f"rag chat: {e}", file=sys.stderr)
                continue
            if args.json:
                continue
            if streaming:
                print()
                _say_replaced(answer, "".join(streamed))
            else:
                print(clean(answer.text))
            print_support(answer)
            cited = [(n, h) for n, h in enumerate(answer.sources, 1) if n in answer.cited]
            for n, h in cited:
                print(f"  [{n}] {show(h.path)} · {clean(h.location(), lines=False)}")
            print()
    if args.json:
        dump(chat.as_dict())
    elif not args.quiet and interactive:
        print(f"resume with: rag chat --continue {chat.id}", file=sys.stderr)
    return 1 if refused and not interactive else 0


def _echo_into(pieces: list[str]) -> Callable[[str], None]:
    """Echo each piece and keep it, so what was streamed can be compared with the checked answer."""

    def echo(piece: str) -> None:
        pieces.append(piece)
        sys.stdout.write(clean(piece))
        sys.stdout.flush()

    return echo


# --- serve ----------------------------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    import ipaddress

    from rag.errors import ConfigError

    config = _config(args)
    api_key = config.api_key
    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not api_key and not args.insecure:
        raise ConfigError(
            f"--host {args.host} is reachable from other machines; set RAG_API_KEY, or pass --insecure to serve "
            "without one"
        )
    for root in args.allow_root:
        if not Path(root).is_dir():
            raise ConfigError(f"--allow-root {root} is not a folder; give an existing folder")
    import socket

    # Bound before the models load: a wrong --host or a taken port is said at once, not after 30 s.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        sock.close()
        hint = "choose another --port" if e.errno == errno.EADDRINUSE else "give an address of this machine as --host"
        raise ConfigError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e}); {hint}") from None
    except (OverflowError, socket.gaierror, UnicodeError) as e:
        sock.close()
        raise ConfigError(f"--host {args.host} --port {args.port}: {e}; give an address of this machine") from None

    import uvicorn

    from rag.server.app import create_app
    from rag.server.guard import MAX_CONNECTIONS, TimelyProtocol, allowed_hosts

    with sock, _open(config) as index:
        if not args.quiet:
            print("rag serve: loading the models...", file=sys.stderr)
        index.warm()
        hosts = allowed_hosts(args.host, args.allow_host)
        app = create_app(index, api_key=api_key, allow_roots=[Path(r) for r in args.allow_root], hosts=hosts)
        port = sock.getsockname()[1]
        if not args.quiet:
            print(f"rag serve: http://{_url_host(args.host)}:{port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
        settings = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            http=TimelyProtocol,
            limit_concurrency=MAX_CONNECTIONS,
            timeout_keep_alive=5,
        )
        uvicorn.Server(settings).run(sockets=[sock])
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# --- status / config ------------------------------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    with _open(_config(args)) as index:
        status = index.status()
    if args.json:
        dump(status)
        return 0
    emb = status["embedder"] or {}
    kinds = status["by_type"]
    print(f"index      {status['index']}  ({status['bytes_on_disk'] / 1e6:.1f} MB)")
    if status["store"] != "sqlite":
        print(f"store      {status['store']}  ({status['database_bytes'] / 1e6:.1f} MB)")
    print(f"documents  {status['documents']}  " + " ".join(f"{k}:{v}" for k, v in sorted(kinds.items())))
    print(f"chunks     {status['chunks']}")
    print(
        f"embedder   {emb.get('name', '-')}  dim {emb.get('dim', '-')}  max_seq_length {emb.get('max_seq_length', '-')}"
    )
    print(f"chunker    {status['chunker']}")
    vec = status["vectors"] or {"kind": "flat"}
    params = " ".join(f"{k} {v}" for k, v in vec.items() if k in ("nlist", "nprobe"))
    exact = "exact" if vec["kind"] == "flat" else "approximate"
    print(f"vectors    {vec['kind']} ({exact} inner product){'  ' + params if params else ''}")
    print(f"generator  {status['generator']}  backend {status['gen_backend']}  precision {status['gen_precision']}")
    print(f"           {status['generator_tier']}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from rag.api import config_report

    values = config_report(_config(args))
    if args.json:
        dump(values)
    else:
        for k, v in values.items():
            print(f"{k:<22} {v}")
    return 0


# --- eval -----------------------------------------------------------------------------------------------------


def _cmd_eval(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rag.cli.output import print_embedder_comparison
    from rag.tools.evaluate import evaluate, is_beir

    config = _config(args, chunk_tokens=args.chunk_tokens, chunk_overlap=args.chunk_overlap, reranker=args.reranker)
    target = Path(args.target)
    split = args.split or ("test" if target.is_dir() and is_beir(target) else "all")
    line = EvalProgress(sys.stderr) if not args.quiet and sys.stderr.isatty() else None
    reports = []
    try:
        for model in args.embedder or [config.embed_model]:
            reports.append(
                evaluate(
                    target,
                    replace(config, embed_model=model),
                    split=split,
                    retrievals=args.retrieval,
                    limit=args.limit,
                    answers=args.answers,
                    answer_modes=args.answer_mode,
                    generators=args.generator,
                    progress=line,
                )
            )
    finally:
        if line:
            line.close()
    if args.json:
        dump({"runs": [r.as_dict() for r in reports]} if args.embedder else reports[0].as_dict())
        return 0
    for report in reports:
        print_eval(report)
    if len(reports) > 1:
        print_embedder_comparison(reports)
    return 0


# --- tune -----------------------------------------------------------------------------------------------------


def _cmd_tune(args: argparse.Namespace) -> int:
    from rag.cli.output import TrainLine, print_tune
    from rag.models.tuning import TrainSettings
    from rag.tools.tune import tune

    config = _config(args)
    if args.pairs and not Path(args.pairs).exists():  # before creating an index directory for nothing
        print(f"rag tune: --pairs {args.pairs} does not exist; give a BEIR folder or a JSONL of pairs", file=sys.stderr)
        return 1
    if args.rollback or args.drop_previous:
        with _open(config) as index:
            if args.drop_previous:
                dropped = index.drop_previous_embedder()
                result: dict[str, Any] = {"dropped_vectors": dropped}
                message = f"dropped {dropped} vectors of the previous embedding model; --rollback is no longer possible"
            else:
                restored = index.rollback_embedder()
                result = {"embedder": restored, "previous": (index.store.meta.get("embedder_prev") or {}).get("name")}
                message = f"the index uses {restored} again; `rag tune --rollback` returns to {result['previous']}"
        dump(result) if args.json else print(message)
        return 0
    settings = TrainSettings(
        minutes=args.minutes,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        negatives_per_example=args.negatives,
        seed=args.seed,
        threads=config.threads,
    )
    terminal = not args.quiet and sys.stderr.isatty()
    steps, train_line, ingest_line = (EvalProgress(sys.stderr), TrainLine(sys.stderr), ProgressLine(sys.stderr))
    with _open(config, create=args.pairs is not None) as index:
        try:
            report = tune(
                index,
                pairs=Path(args.pairs) if args.pairs else None,
                split=args.split,
                settings=settings,
                synthetic=args.queries,
                progress=steps if terminal else None,
                train_progress=train_line if terminal else None,
                reembed_progress=ingest_line if terminal else None,
            )
        finally:
            for line in (steps, train_line, ingest_line):
                line.close()
    dump(report.as_dict()) if args.json else print_tune(report)
    return 0


COMMANDS = {
    "ingest": _cmd_ingest,
    "watch": _cmd_watch,
    "search": _cmd_search,
    "ask": _cmd_ask,
    "explain": _cmd_explain,
    "map": _cmd_map,
    "remove": _cmd_remove,
    "doctor": _cmd_doctor,
    "reindex": _cmd_reindex,
    "eval": _cmd_eval,
    "tune": _cmd_tune,
    "chat": _cmd_chat,
    "serve": _cmd_serve,
    "status": _cmd_status,
    "config": _cmd_config,
}
