"""What the command line prints: progress lines on stderr, results on stdout (text, or JSON with --json)."""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ingest.pipeline import IngestReport, Progress
    from rag.models.tuning import TrainProgress
    from rag.tools.evaluate import EvalReport
    from rag.tools.tune import TuneReport


# Control characters from documents and file names (ANSI escapes, a newline in a name) are shown escaped on a
# terminal, so they can neither restyle it nor fake an output line; --json keeps the text exact.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def clean(text: str, *, lines: bool = True) -> str:
    """``text`` with control characters escaped (``\x1b``); newlines kept when ``lines``."""
    pattern = _CONTROL if lines else _CONTROL_OR_NEWLINE
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def show(path: str) -> str:
    """A path for a terminal line: relative to the working directory when it lies below it, escaped."""
    with contextlib.suppress(ValueError):  # not below the working directory
        path = str(Path(path).relative_to(Path.cwd()))
    return clean(path, lines=False)


def is_text(value: str) -> bool:
    """True unless ``value`` holds lone surrogates (undecodable bytes of the command line or a pipe)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dump(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


class ProgressLine:
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


class EvalProgress(ProgressLine):
    def __call__(self, what: str, done: int, total: int) -> None:  # type: ignore[override]
        now = time.monotonic()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        line = f"eval: {what} {done}/{total}"
        self.stream.write("\r" + line.ljust(self.width))
        self.width = len(line)
        self.stream.flush()


def print_embedder_comparison(reports: list[EvalReport]) -> None:
    """One headline metric per mode, an embedding model per row: nDCG@10 (BEIR) or hit@5 (QA)."""
    metric = "ndcg@10" if reports[0].kind == "beir" else "hit@5"
    modes = list(reports[0].modes)
    names = [show(r.settings["embed_model"]) for r in reports]
    width = max(14, *(len(n) + 2 for n in names))
    print(f"{metric + ' by embedder':<{width}}" + "".join(f"{m:>10}" for m in modes))
    for name, r in zip(names, reports, strict=True):
        print(f"{name:<{width}}" + "".join(f"{r.modes[m].get(metric, 0.0):>10.4f}" for m in modes))


class TrainLine(ProgressLine):
    def __call__(self, p: TrainProgress) -> None:  # type: ignore[override]
        eta = p.eta_s
        line = (
            f"tune: step {p.step}/{p.steps} · epoch {p.epoch + 1} · loss {p.loss:.3f} · "
            f"{p.elapsed_s / 60:.1f} min · ETA {int(eta // 60)}:{int(eta % 60):02d}"
        )
        self.stream.write("\r" + line.ljust(self.width))
        self.width = len(line)
        self.stream.flush()


def print_tune(r: TuneReport) -> None:
    t = r.training
    if r.resumed:
        print(f"finished the interrupted switch to {r.model}")
    print(
        f"tuned {r.model} from {r.base} on {r.trained_on} of {r.pairs} pairs ({r.source}); "
        f"{r.held_out_queries} queries held out"
    )
    print(
        f"training: {t['steps']} steps, {t['epochs']:g} epochs in {t['seconds'] / 60:.1f} min "
        f"({t.get('precision', 'fp32')}, budget {t['minutes']:g}, seed {t['seed']}), stopped by {t['stopped_by']}; "
        f"{t.get('loss', 'infonce')} loss {t['first_loss']:.3f} -> {t['last_loss']:.3f}"
    )
    print(f"re-embedded {r.reembedded} chunks")
    print(f"{'held-out nDCG@10':<18}{'before':>9}{'after':>9}{'gain':>9}")
    for mode, after in r.after.items():
        before = r.before.get(mode, 0.0)
        print(f"{mode:<18}{before:>9.4f}{after:>9.4f}{after - before:>+9.4f}")
    for note in r.notes:
        print(f"note: {note}")
    print("`rag tune --rollback` returns to the previous model (its vectors are kept until --drop-previous)")


def print_report(r: IngestReport, docs: int, chunks: int) -> None:
    rate = f", {r.chunks_embedded / r.seconds:.1f} chunks/s" if r.chunks_embedded and r.seconds else ""
    reused = f" · {r.moved} moved · {r.copied} copied" if r.moved or r.copied else ""
    print(
        f"{show(r.folder)}: {r.files_seen} files · {r.added} added · {r.updated} updated{reused} · "
        f"{r.unchanged} unchanged · {r.removed} removed · {len(r.skipped)} skipped"
    )
    if r.reembedded:
        print(f"re-embedded {r.reembedded} stored chunks with the new embedding model")
    print(
        f"embedded {r.chunks_embedded} chunks in {r.seconds:.1f} s{rate}; index now holds {docs} documents, "
        f"{chunks} chunks"
    )
    if r.ocr_pages or r.ocr_cached:
        rate = f" ({r.ocr_pages / r.ocr_seconds:.2f} pages/s)" if r.ocr_seconds else ""
        print(f"OCR read {r.ocr_pages} pages in {r.ocr_seconds:.1f} s{rate}; {r.ocr_cached} pages from its cache")
    if r.interrupted:
        print("stopped between batches: what was committed stays; run it again to finish")
    if r.chunks_embedded == 0 and r.removed == 0 and not r.moved and not r.copied:
        print("nothing changed: no file needed embedding")
    if r.skipped:
        print("skipped: " + ", ".join(f"{n} {reason}" for reason, n in r.skipped_by_reason().items()))
        for s in r.skipped[:20]:
            print(f"  {show(s.path)}: {s.reason}{' (' + clean(s.detail, lines=False) + ')' if s.detail else ''}")
        if len(r.skipped) > 20:
            print(f"  ... and {len(r.skipped) - 20} more (--json lists all)")


def print_support(answer: Any) -> None:
    """The quote backing each claim of the answer, with file and character offsets."""
    if not answer.answered:
        return
    for s in answer.support:
        if s.path is None:
            continue
        where = f"[{s.source}] {show(s.path)}:{s.start}-{s.end}"
        quote = " ".join(s.quote.split())
        quote = quote[:300] + ("…" if len(quote) > 300 else "")
        if s.supported:
            print(f'  > "{clean(quote)}"\n    {where}')
        else:
            print(f'  ! unsupported: "{clean(s.claim)}"; closest source text: "{clean(quote)}"\n    {where}')


def print_eval(r: EvalReport) -> None:
    print(
        f"{show(r.target)} · split {r.split} · {r.queries} queries · {r.ingest.get('documents')} documents, "
        f"{r.ingest.get('chunks')} chunks"
    )
    modes = list(r.modes)
    metrics = list(dict.fromkeys(m for scores in r.modes.values() for m in scores))
    print(f"{'metric':<14}" + "".join(f"{m:>10}" for m in modes))
    for metric in metrics:
        print(f"{metric:<14}" + "".join(f"{r.modes[m].get(metric, 0.0):>10.4f}" for m in modes))
    if r.answers:
        runs = list(r.answers)
        width = {m: max(10, len(m) + 2) for m in runs}  # "GENERATOR · MODE" labels when several generators answer
        print(f"{'answers':<18}" + "".join(f"{m:>{width[m]}}" for m in runs))
        for metric in dict.fromkeys(k for scores in r.answers.values() for k in scores):
            print(f"{metric:<18}" + "".join(f"{r.answers[m].get(metric, 0.0):>{width[m]}.3f}" for m in runs))
    s = r.settings
    print(
        f"settings: chunks {s['chunk_tokens']}/{s['chunk_overlap']} · rrf_k {s['rrf_k']:g} · weights dense "
        f"{s['dense_weight']:g} bm25 {s['bm25_weight']:g} · candidates {s['candidates']} · {r.seconds:.0f} s"
    )
