"""The command line's flags: one parser for every command, global options accepted before or after the command."""

from __future__ import annotations

import argparse
import math
import time

from ingest.records import KINDS
from rag.config import RETRIEVAL_MODES


def _positive_int(text: str) -> int:
    value = int(text)  # a ValueError becomes argparse's "invalid _positive_int value" usage error
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _count(text: str) -> int:
    value = int(text)  # a ValueError becomes argparse's "invalid _count value" usage error
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _number(text: str) -> float:
    """A finite float: nan and inf are refused as usage errors."""
    value = float(text)  # a ValueError becomes argparse's "invalid _number value" usage error
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def _since(text: str) -> float:
    """Unix seconds, an ISO date/time (2024-05-01, 2024-05-01T12:00), or an age: 30m, 12h, 7d."""
    from datetime import datetime

    units = {"m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
            return time.time() - _number(text[:-1]) * units[text[-1]]
        try:
            return _number(text)
        except ValueError:
            return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (2024-05-01), Unix time, or age (7d, 12h)") from None


def _retrieval_options() -> argparse.ArgumentParser:
    r = argparse.ArgumentParser(add_help=False)
    g = r.add_argument_group("retrieval")
    g.add_argument("--retrieval", choices=RETRIEVAL_MODES, help="retrieval mode (default hybrid)")
    g.add_argument("--mode", dest="retrieval", choices=RETRIEVAL_MODES, help=argparse.SUPPRESS)  # the old name
    g.add_argument("--path", metavar="GLOB", help="only files matching GLOB (e.g. '*.md', 'docs/*')")
    g.add_argument("--kind", action="append", metavar="KIND", help=f"only these types: {' '.join(KINDS)}")
    g.add_argument("--since", type=_since, metavar="WHEN", help="only files modified since (2024-05-01, 7d, 12h)")
    g.add_argument("--mmr", type=_number, metavar="LAMBDA", help="diversify results (1: relevance only, 0.5: balanced)")
    g.add_argument("--reranker", metavar="M", help="cross-encoder folder to rerank with (none is bundled)")
    return r


def build_parser() -> argparse.ArgumentParser:
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
        "--store",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="keep the index in PostgreSQL (postgresql://USER@HOST/DB; env RAG_STORE), --index being the cache",
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

    wa = sub.add_parser(
        "watch",
        parents=[common],
        help="keep the index in step with a folder as files change (Ctrl-C stops)",
        epilog="Each burst of changes becomes one sync; with --json, one line of JSON per sync on stdout.",
    )
    wa.add_argument("folder", help="folder of documents; watched recursively")
    wa.add_argument("--no-delete", action="store_true", help="keep documents whose files are gone")
    wa.add_argument(
        "--settle", type=_number, default=1.0, metavar="S", help="seconds of quiet before a sync (default 1)"
    )

    retrieval = _retrieval_options()
    se = sub.add_parser("search", parents=[common, retrieval], help="show the chunks that best match a query")
    se.add_argument("query")
    se.add_argument("-k", type=_positive_int, metavar="N", help="how many results (default 5)")
    se.add_argument("--min-score", type=_number, metavar="S", help="leave out results below this cosine (any mode)")

    ask = sub.add_parser("ask", parents=[common, retrieval], help="answer a question from the indexed documents")
    ask.add_argument("question")
    ask.add_argument("-k", type=_positive_int, metavar="N", help="sources to retrieve (default 5)")
    ask.add_argument(
        "--answer-mode",
        metavar="MODE",
        help="auto (default: a free answer kept only as a span of a source sentence, else the best sentence; how / why "
        "/ compare questions in sentences), quote (a verbatim span of the sources chosen by the model), generate "
        "(free), extract (the most similar source sentence) or sentences (a few written sentences, each kept only "
        "when a source backs it); env RAG_ANSWER_MODE",
    )
    d = ask.add_argument_group("decoding (default: greedy)")
    d.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="answer length limit (128)")
    d.add_argument("--temperature", type=_number, default=0.0, metavar="T", help="> 0 samples (0: greedy)")
    d.add_argument("--top-k", type=int, metavar="K", help="sample from the K most likely tokens")
    d.add_argument("--top-p", type=_number, metavar="P", help="sample from the smallest set reaching probability P")
    d.add_argument("--num-beams", type=int, default=1, metavar="N", help="beam search width (no streaming)")
    d.add_argument("--repetition-penalty", type=_number, default=1.0, metavar="R", help="> 1 discourages repeats")
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
        help="decode as `rag ask` does in MODE (default: the configured one, auto): quote (constrained to a span "
        "of the sources), generate or auto (free); env RAG_ANSWER_MODE",
    )

    mp = sub.add_parser("map", parents=[common], help="draw the chunk embeddings in 2-D, coloured by document")
    mp.add_argument("--query", metavar="Q", help="place this query and ring its top-k chunks")
    mp.add_argument("-k", type=_positive_int, metavar="N", help="hits to ring (default 5)")
    mp.add_argument("--method", choices=["pca", "tsne"], default="pca", help="projection (default pca)")
    mp.add_argument("--perplexity", type=_number, default=30.0, metavar="P", help="t-SNE perplexity (30)")
    mp.add_argument("--seed", type=int, default=0, metavar="S", help="sampling and t-SNE seed (0)")
    mp.add_argument(
        "--max-points", type=_positive_int, metavar="N", help="sample down to N chunks (pca 20000, tsne 5000)"
    )
    mp.add_argument("--out", metavar="DIR", default=".", help="folder for map-<method>.png (default .)")
    mp.add_argument(
        "--compare",
        action="store_true",
        help="draw the chunks under the previous embedding model (kept by `rag tune`) and the current one, side by "
        "side, in map-<method>-compare.png",
    )

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
    choices = [*RETRIEVAL_MODES, "rerank"]
    ev.add_argument("--retrieval", action="append", choices=choices, help="retrieval mode; repeatable (default all)")
    ev.add_argument("--mode", dest="retrieval", action="append", choices=choices, help=argparse.SUPPRESS)
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
    ev.add_argument(
        "--generator",
        action="append",
        metavar="M",
        help="with --answers: answer with generator M (bundled tier name, causal-LM folder or .gguf file); "
        "repeatable, one after the other, side by side (default: the configured --gen-model)",
    )
    ev.add_argument(
        "--embedder",
        action="append",
        metavar="M",
        help="score embedding model M (bundled name, sentence-transformers folder such as a tuned INDEX/models/"
        "tuned-1, or hub id); repeatable, side by side, each on its own evaluation index (default: --embed-model)",
    )
    ev.add_argument("--chunk-tokens", type=int, metavar="N", help="chunk size for the evaluation index")
    ev.add_argument("--chunk-overlap", type=int, metavar="N", help="chunk overlap for the evaluation index")
    ev.add_argument("--reranker", metavar="M", help="cross-encoder folder; adds a 'rerank' column")

    tu = sub.add_parser(
        "tune",
        parents=[common],
        help="fine-tune the embedder on your documents, switch the index to it, show the gain",
        description="Fine-tune the index's embedding model on CPU, on labelled pairs (--pairs) or on queries cut "
        "from the index's own chunks, then re-embed the index with it (searches keep working meanwhile) and show "
        "held-out nDCG@10 before and after. The model is saved under INDEX/models/; an interrupted run resumes.",
    )
    tu.add_argument(
        "--pairs",
        metavar="PATH",
        help="a BEIR folder (its --split qrels; an empty --index is filled with its corpus) or a JSONL of "
        '{"query", "positive", "negative"?}; default: no labels, queries cut from the chunks',
    )
    tu.add_argument("--split", default="train", help="BEIR qrels split to train on (default train)")
    tu.add_argument("--minutes", type=_number, default=30.0, metavar="M", help="training time budget (default 30)")
    tu.add_argument("--epochs", type=_positive_int, default=4, metavar="N", help="passes over the pairs (default 4)")
    tu.add_argument("--batch-size", type=_positive_int, default=32, metavar="N", help="pairs per step (default 32)")
    tu.add_argument(
        "--negatives",
        type=_count,
        default=2,
        metavar="N",
        help="with --pairs: hard negatives sampled per pair and step (default 2); without, each cut query learns a "
        "teacher's margins on one",
    )
    tu.add_argument("--learning-rate", type=_number, default=2e-5, metavar="LR", help="peak learning rate (2e-5)")
    tu.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the split, sampling and training (0)")
    tu.add_argument(
        "--queries", type=_positive_int, default=3000, metavar="N", help="without --pairs: queries to cut (3000)"
    )
    what = tu.add_mutually_exclusive_group()
    what.add_argument(
        "--rollback", action="store_true", help="return to the previous embedding model (its vectors are kept)"
    )
    what.add_argument("--drop-previous", action="store_true", help="delete the vectors kept for --rollback")

    ch = sub.add_parser(
        "chat",
        parents=[common, retrieval],
        help="a conversation: follow-up questions are retrieved with the ones before them (Ctrl-D leaves)",
        epilog="Questions come from the terminal (arrow keys recall earlier ones; Ctrl-C cancels an answer), "
        "or one per line from a pipe. Conversations are stored in the index.",
    )
    ch.add_argument(
        "--continue",
        dest="resume",
        nargs="?",
        const="",
        metavar="ID",
        help="resume a stored conversation (default: the most recent)",
    )
    ch.add_argument("-k", type=_positive_int, metavar="N", help="sources to retrieve per question (default 5)")
    ch.add_argument("--answer-mode", metavar="MODE", help="as for rag ask (default auto)")

    sv = sub.add_parser(
        "serve",
        parents=[common],
        help="serve the index over HTTP: an OpenAI-compatible chat API, search, ingest jobs and a web page",
        epilog="An API key, if any, comes from the environment (RAG_API_KEY), never from the command line.",
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    sv.add_argument(
        "--allow-root",
        action="append",
        metavar="DIR",
        default=[],
        help="a folder under which POST /v1/ingest may index (repeatable; default: ingest refused)",
    )
    sv.add_argument(
        "--allow-host",
        action="append",
        metavar="NAME",
        default=[],
        help="a host name requests may address besides localhost and --host (repeatable; others get 421)",
    )
    sv.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without RAG_API_KEY (anyone may ask)"
    )

    sub.add_parser("status", parents=[common], help="documents, chunks, models and settings of the index")
    sub.add_parser("config", parents=[common], help="the effective settings and where models come from")
    return p
