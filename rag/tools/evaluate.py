"""`rag eval`: score retrieval (and optionally answers) on a BEIR folder or a QA file, every mode side by side.

What is measured is the real pipeline: a BEIR corpus is written out as one ``.txt`` per document (title, blank
line, text) in a cache folder and indexed through :meth:`Index.ingest`, so the chunker, embedder, FTS5 table and
fusion are exactly what a user gets. Re-runs reuse that index (the sync skips unchanged files). A BEIR document's
score is the best of its chunks' scores.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.answer.support import claims
from rag.answer.text import sentences, without_citations
from rag.config import ANSWER_MODES, BUNDLED_EMBEDDER, Config
from rag.errors import ConfigError, SourceNotFoundError
from rag.retrieval.retrieve import Fusion, retrieve
from rag.tools.datasets import QAItem, beir_workspace, is_beir, load_beir, load_qa, materialise_beir, qa_paths
from rag.tools.metrics import (
    answer_contained,
    exact_match,
    hit_at_k,
    ndcg_at_k,
    recall_at_k,
    reciprocal_rank,
    rouge_l,
    token_f1,
    token_recall,
)

if TYPE_CHECKING:
    from ingest.pipeline import IngestReport
    from ingest.pipeline import Progress as IngestProgress
    from rag.api import Index
    from rag.models.embedder import Embedder
    from rag.types import Answer, Hit

# Retrieval modes that need nothing beyond the bundled models; "rerank" joins them when a reranker is configured.
BASE_MODES = ("dense", "bm25", "hybrid")
RECALL_KS = (10, 100)
HIT_KS = (1, 5, 10)

# Progress callback: (what, done, total).
Progress = Callable[[str, int, int], None]


# --- scoring --------------------------------------------------------------------------------------------------


def beir_scores(ranked: list[str], relevance: dict[str, float]) -> dict[str, float]:
    """Ranking metrics of one query's ranked document ids."""
    relevant = [d for d, r in relevance.items() if r > 0]
    scores = {"ndcg@10": ndcg_at_k(ranked, relevance, 10), "mrr@10": reciprocal_rank(ranked, relevant, 10)}
    for k in RECALL_KS:
        scores[f"recall@{k}"] = recall_at_k(ranked, relevant, k)
    return scores


def qa_retrieval_scores(item: QAItem, hits: list[Hit]) -> dict[str, float]:
    """hit@k and MRR@10 of one question: a hit is a chunk containing a gold answer (case-insensitive), or, when
    the question has no answers or long ones (passages never occur verbatim in a chunk), a chunk of a gold file.
    ``file_hit@k``: a chunk of a gold file (when given)."""
    answers = [a.lower() for a in item.answers if a.strip()]
    if answers and not (item.long and item.files):
        marks = [str(i) for i, h in enumerate(hits) if any(a in h.text.lower() for a in answers)]
    else:
        marks = [str(i) for i, h in enumerate(hits) if h.path in item.files]
    ranked = [str(i) for i in range(len(hits))]
    scores = {f"hit@{k}": hit_at_k(ranked, marks, k) for k in HIT_KS}
    scores["mrr@10"] = reciprocal_rank(ranked, marks, 10)
    if item.files:
        files = [str(i) for i, h in enumerate(hits) if h.path in item.files]
        scores.update({f"file_hit@{k}": hit_at_k(ranked, files, k) for k in (1, 5)})
    return scores


def answer_scores(answer: Answer, item: QAItem, shown: str = "") -> dict[str, float]:
    """One answer's scores; each row has only the keys that apply to its question.

    Every question: seconds from retrieval to the end of the support check, and the answer's length in words.
    Unanswerable: whether it abstained. Answerable: SQuAD exact match, token F1 and answer-contained (0 when it
    declined), the retrieval ceiling (a gold answer in ``shown``, the source text the prompt showed), whether it
    answered, was fully supported, and the share of its sentences the support check backs. Questions with long
    or written references (``QAItem.passages``) also get ROUGE-L F1 and token recall (the best over them).
    """
    t = answer.timings
    seconds = sum(t.get(key, 0.0) for key in ("retrieve_s", "pack_s", "generate_s", "verify_s"))
    said = without_citations(answer.text) if answer.answered else ""
    row = {"seconds_per_answer": seconds, "words": float(len(said.split()))}
    if not item.answerable:
        return {**row, "abstained": float(not answer.answered)}
    golds = item.answers
    row |= {
        "exact_match": exact_match(said, golds),
        "token_f1": token_f1(said, golds),
        "answer_contained": answer_contained(said, golds),
        "ceiling": answer_contained(shown, golds),
        "answered": float(answer.answered),
        "faithful": float(answer.answered and answer.supported),
    }
    if answer.answered:
        row["sentences_supported"] = sentences_supported(answer)
    if passages := item.passages:
        row |= {"rouge_l": rouge_l(said, passages), "token_recall": token_recall(said, passages)}
    return row


def sentences_supported(answer: Answer) -> float:
    """The share of the answer's sentences whose every claim the support check backs."""
    backed = {s.claim for s in answer.support if s.supported}
    said = [parts for s in sentences(answer.text) if (parts := claims(s))]
    return sum(all(c in backed for c in parts) for parts in said) / len(said) if said else 0.0


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the rows that have it."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: sum(vals) / len(vals) for k in keys if (vals := [r[k] for r in rows if k in r])}


def _answer_means(rows: list[dict[str, float]]) -> dict[str, float]:
    """Means over all questions, but faithfulness over the answered ones: declining is not unfaithful; the
    median and 90th percentile of the seconds per answer (a slow tail hides in a mean), and the median length of
    the answers given to answerable questions."""
    import numpy as np

    means = _mean(rows)
    answered = [r for r in rows if r.get("answered")]
    if "faithful" in means:
        means["faithful"] = sum(r["faithful"] for r in answered) / len(answered) if answered else 0.0
    seconds = [r["seconds_per_answer"] for r in rows if "seconds_per_answer" in r]
    if seconds:
        means["seconds_median"] = float(np.median(seconds))
        means["seconds_p90"] = float(np.percentile(seconds, 90))
    if words := [r["words"] for r in rows if r.get("answered", 1.0) and "words" in r and "abstained" not in r]:
        means["words_median"] = float(np.median(words))
    return means


def ranked_documents(hits: list[Hit], doc_of: Callable[[str], str | None]) -> list[str]:
    """Document ids in order of their best chunk (hits are best first, so first appearance is the best)."""
    seen: dict[str, None] = {}
    for h in hits:
        doc = doc_of(h.path)
        if doc is not None:
            seen.setdefault(doc, None)
    return list(seen)


# --- running --------------------------------------------------------------------------------------------------


@dataclass
class EvalReport:
    """Metrics per retrieval mode (and, for QA with answers, per answer run), with what produced them."""

    kind: str  # beir | qa
    target: str
    split: str
    queries: int
    modes: dict[str, dict[str, float]]  # mode -> metric -> mean over queries
    answers: dict[str, dict[str, float]] = field(default_factory=dict)  # label -> answer metric -> mean
    settings: dict[str, Any] = field(default_factory=dict)
    index: str = ""
    ingest: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def eval_modes(config: Config, retrievals: Iterable[str] | None = None) -> list[str]:
    """The modes to compare: the given ones, or dense, bm25, hybrid (+ rerank when a reranker is configured)."""
    chosen = list(retrievals) if retrievals else [*BASE_MODES, *(["rerank"] if config.reranker else [])]
    for m in chosen:
        if m not in (*BASE_MODES, "rerank"):
            raise ConfigError(f"retrieval {m!r} is not one of {', '.join((*BASE_MODES, 'rerank'))}")
    if "rerank" in chosen and not config.reranker:
        raise ConfigError("retrieval 'rerank' needs a reranker; set --reranker DIR or RAG_RERANKER")
    return chosen


def _index_dir(workspace: Path, config: Config) -> Path:
    name = f"index-c{config.chunk_tokens}-o{config.chunk_overlap}"
    if config.embed_model != BUNDLED_EMBEDDER:
        name += "-" + hashlib.sha256(config.embed_model.encode()).hexdigest()[:8]
    if config.store:  # the cache of a PostgreSQL index, apart from the SQLite one
        name += "-pg-" + hashlib.sha256(config.store.encode()).hexdigest()[:8]
    return workspace / name


@contextmanager
def _query_threads(config: Config) -> Iterator[None]:
    """Embed queries on one torch thread (or ``config.threads``): a query is a few dozen tokens, and splitting
    that across cores costs more in synchronisation than it saves."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(config.threads or 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _retrieve_all(index: Index, query: str, modes: list[str], depth: int, k: int | None = None) -> dict[str, list[Hit]]:
    """Hits of every mode for one query; the query is embedded once."""
    c = index.config
    vector = index.embedder.embed_query(query)
    fusion = Fusion(c.rrf_k, c.dense_weight, c.bm25_weight)
    out = {}
    for mode in modes:
        out[mode] = retrieve(
            index.store,
            index.embedder,
            query,
            k or depth,
            retrieval="hybrid" if mode == "rerank" else mode,
            fusion=fusion,
            candidates=depth,
            reranker=index.reranker if mode == "rerank" else None,
            rerank_candidates=c.rerank_candidates,
            query_vector=vector,
        ).hits
    return out


def _settings(config: Config, depth: int) -> dict[str, Any]:
    keys = ("embed_model", "chunk_tokens", "chunk_overlap", "rrf_k", "dense_weight", "bm25_weight", "reranker")
    return {**{k: getattr(config, k) for k in keys}, "candidates": depth}


def evaluate_beir(
    folder: Path,
    config: Config,
    *,
    split: str = "test",
    retrievals: Iterable[str] | None = None,
    limit: int | None = None,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
) -> EvalReport:
    """nDCG@10, MRR@10, Recall@10/100 per mode for a BEIR folder's ``split`` (documents ranked by best chunk)."""
    from rag.api import Index

    started = time.monotonic()
    chosen = eval_modes(config, retrievals)
    data = load_beir(folder, split)
    workspace = beir_workspace(folder, config.cache_dir)
    if progress:
        progress("writing corpus", 0, 1)
    docs, names = materialise_beir(folder, workspace)
    with Index.open(_index_dir(workspace, config), config=config, create=True) as index:
        if embedder is not None:  # a caller's already loaded model
            index.embedder = embedder
        report = index.ingest(docs, progress=_ingest_progress(progress))
        n_docs, n_chunks = index.store.counts()
        # Recall@100 needs 100 distinct documents: look deep enough for the corpus's chunks per document.
        depth = max(config.candidates, math.ceil(max(RECALL_KS) * n_chunks / max(n_docs, 1) * 1.5))
        qids = list(data.queries)[:limit] if limit else list(data.queries)
        per_mode: dict[str, list[dict[str, float]]] = {m: [] for m in chosen}
        with _query_threads(config):
            for i, qid in enumerate(qids):
                if progress:
                    progress("queries", i, len(qids))
                for mode, hits in _retrieve_all(index, data.queries[qid], chosen, depth).items():
                    ranked = ranked_documents(hits, lambda p: names.get(Path(p).name))
                    per_mode[mode].append(beir_scores(ranked, data.qrels[qid]))
        if progress:
            progress("queries", len(qids), len(qids))
        return EvalReport(
            kind="beir",
            target=str(folder),
            split=split,
            queries=len(qids),
            modes={m: _mean(rows) for m, rows in per_mode.items()},
            settings=_settings(config, depth),
            index=str(index.store.directory),
            ingest=_ingest_summary(report, n_docs, n_chunks),
            seconds=time.monotonic() - started,
        )


def evaluate_qa(
    target: Path,
    config: Config,
    *,
    split: str = "all",
    retrievals: Iterable[str] | None = None,
    limit: int | None = None,
    answers: bool = False,
    answer_modes: Iterable[str] | None = None,
    generators: Iterable[str] | None = None,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
) -> EvalReport:
    """Retrieval hit@k and MRR per mode for a QA file over its docs folder; with ``answers``, also answer every
    question in each of ``answer_modes`` (default: all of :data:`rag.answer.modes.ANSWER_MODES`) and score them with
    :func:`answer_scores`, side by side. ``generators`` (bundled tier names, folders, GGUF files) answer one after
    the other, each in every mode, as columns ``GENERATOR · MODE``; default the configured one alone."""
    from rag.answer.modes import check_mode
    from rag.api import Index

    started = time.monotonic()
    chosen = eval_modes(config, retrievals)
    questions_file, docs = qa_paths(target)
    items = load_qa(questions_file, split, limit)
    key = hashlib.sha256(str(docs.resolve()).encode()).hexdigest()[:12]
    workspace = config.cache_dir / "eval" / f"{docs.resolve().name}-{key}"
    depth = config.candidates
    with Index.open(_index_dir(workspace, config), config=config, create=True) as index:
        if embedder is not None:  # a caller's already loaded model
            index.embedder = embedder
        report = index.ingest(docs, progress=_ingest_progress(progress))
        n_docs, n_chunks = index.store.counts()
        per_mode: dict[str, list[dict[str, float]]] = {m: [] for m in chosen}
        with _query_threads(config):
            for i, item in enumerate(items):
                if progress:
                    progress("questions", i, len(items))
                for mode, hits in _retrieve_all(index, item.question, chosen, depth, k=max(HIT_KS)).items():
                    per_mode[mode].append(qa_retrieval_scores(item, hits))
        asked = answers or answer_modes or generators
        answering = [check_mode(m) for m in (answer_modes or ANSWER_MODES)] if asked else []
        models = list(dict.fromkeys(generators or [])) or [config.gen_model]
        answer_rows: dict[str, list[dict[str, float]]] = {}
        for model in models if answering else []:
            label = "" if len(models) == 1 else f"{model} · "
            if model == config.gen_model:
                rows = _answer_all(index, items, answering, progress)
            else:  # one generator in memory at a time: the others are closed before it loads
                with Index.open(index.store.directory, config=replace(config, gen_model=model)) as other:
                    other.embedder = index.embedder
                    rows = _answer_all(other, items, answering, progress)
            answer_rows.update({label + m: r for m, r in rows.items()})
        if progress:
            progress("done", len(items), len(items))
        return EvalReport(
            kind="qa",
            target=str(questions_file),
            split=split,
            queries=len(items),
            modes={m: _mean(rows) for m, rows in per_mode.items()},
            answers={m: _answer_means(rows) for m, rows in answer_rows.items()},
            settings=_settings(config, depth),
            index=str(index.store.directory),
            ingest=_ingest_summary(report, n_docs, n_chunks),
            seconds=time.monotonic() - started,
        )


def _answer_all(
    index: Index, items: list[QAItem], modes: list[str], progress: Progress | None
) -> dict[str, list[dict[str, float]]]:
    """Every question answered in every mode, scored; the generator loads (and each mode builds its state) before
    anything is timed."""
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for m in modes:
        index.ask(items[0].question, answer_mode=m)
    for i, item in enumerate(items):
        if progress:
            progress("answers", i, len(items))
        for m in modes:
            stream = index.ask_stream(item.question, answer_mode=m)
            for _ in stream:
                pass
            shown = " ".join(stream.prompt.excerpts) if stream.prompt else ""
            rows[m].append(answer_scores(stream.answer, item, shown))
    return rows


def evaluate(target: Path, config: Config, **options: Any) -> EvalReport:
    """BEIR folder or QA file/folder, whichever ``target`` is (``answers`` applies to QA only).

    ``embedder``: an already loaded :class:`~rag.models.embedder.Embedder` to reuse (it must be the configured model).
    """
    target = Path(target)
    if not target.exists():
        raise SourceNotFoundError(f"{target} does not exist; give a BEIR folder or a questions.jsonl file")
    if target.is_dir() and is_beir(target):
        if options.pop("answers", False) or options.pop("answer_modes", None) or options.pop("generators", None):
            raise ConfigError("--answers needs a QA file (questions with gold answers), not a BEIR folder")
        return evaluate_beir(target, config, **options)
    return evaluate_qa(target, config, **options)


def _ingest_progress(progress: Progress | None) -> Callable[[IngestProgress], None] | None:
    if progress is None:
        return None
    return lambda p: progress("indexing", p.files_done, p.files_total)


def _ingest_summary(report: IngestReport, docs: int, chunks: int) -> dict[str, Any]:
    return {"embedded_chunks": report.chunks_added, "documents": docs, "chunks": chunks, "seconds": report.seconds}
