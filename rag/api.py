"""The Python API: one :class:`Index` over a directory, with ingest, search and ask.

``Index`` holds the store and the models (loaded on first use and kept for the life of the object, so a
long-running app pays for them once) and hands them to the stages: ingest, retrieval and the answer pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.pipeline import IngestReport, Progress, sync
from rag import indexing
from rag.answer.modes import check_mode, mode_decoding, routed
from rag.answer.pipeline import Answerer, AnswerStream, answer
from rag.answer.similarity import SentenceSimilarity
from rag.config import Config
from rag.errors import ConfigError, IndexClosedError, SourceNotFoundError
from rag.models.decoding import Decoding
from rag.models.embedder import Embedder
from rag.models.generator import Generator
from rag.models.sources import EmbedderSource, resolve_embedder, resolve_generator
from rag.retrieval.retrieve import Fusion, Retrieval, retrieve
from rag.storage import failures, health, vector_sets
from rag.storage.health import Problem
from rag.storage.store import Store
from rag.types import Answer, Filters, Hit

if TYPE_CHECKING:
    import numpy as np

    from rag.models.reranker import Reranker

# Longer questions are refused: the embedder reads 256 tokens of them anyway, and a long one would crowd the
# sources out of the prompt (the answer pipeline also refuses one that takes half the prompt budget).
MAX_QUESTION_CHARS = 4000


class Index:
    """A document index on disk::

    index = Index.open(".rag", create=True)
    report = index.ingest("sample_docs")      # IngestReport: added / updated / skipped ...
    hits = index.search("what does top-p keep?", k=3)   # list[Hit], best first (hybrid: dense + BM25)
    answer = index.ask("what does top-p keep?")         # Answer: .text, .sources, .cited, .support
    """

    def __init__(self, store: Store, config: Config) -> None:
        self._store: Store | None = store
        self.config = config
        self._accepted_identity: str | None = None  # the index's embedder, once checked against the config

    @property
    def store(self) -> Store:
        if self._store is None:
            raise IndexClosedError("this Index was closed; open it again with Index.open(...)")
        return self._store

    @classmethod
    def open(cls, path: str | Path | None = None, *, config: Config | None = None, create: bool = False) -> Index:
        """Open the index at ``path`` (default: ``config.index``); ``create`` makes an empty one if absent.

        Raises :class:`~rag.errors.IndexNotFoundError` when there is none and ``create`` is false. Searching an
        index built with another embedding model raises :class:`~rag.errors.ModelMismatchError`; ingesting with
        another model re-embeds the stored chunks with it.
        """
        config = config or Config.load()
        directory = Path(path) if path is not None else config.index
        return cls(Store.open(directory, create=create, url=config.store), config)

    def close(self) -> None:
        """Release the database; later calls raise :class:`~rag.errors.IndexClosedError`. Models stay loaded
        until the object is dropped."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- models -----------------------------------------------------------------------------------------------

    @cached_property
    def embedder(self) -> Embedder:
        """The configured embedding model; the index's tuned model when it was tuned from that one."""
        return self._embedder(indexing.embedder_source(self.store, self.config.embed_model))

    @cached_property
    def reranker(self) -> Reranker | None:
        """The configured cross-encoder, or None (none is bundled)."""
        if not self.config.reranker:
            return None
        from rag.models.reranker import Reranker

        return Reranker(self.config.reranker)

    @cached_property
    def generator(self) -> Generator:
        c = self.config
        source = resolve_generator(c.gen_model, c.cache_dir)
        return Generator(source, c.cache_dir, c.threads, c.gen_backend, c.gen_precision)

    @cached_property
    def answerer(self) -> Answerer:
        """The generator, sentence similarity and budgets the answer pipeline works with."""
        c = self.config
        return Answerer(
            self.generator,
            SentenceSimilarity(self.embedder),
            c.context_tokens,
            c.focus_sentences,
            c.unsupported_sentences,
        )

    def warm(self) -> None:
        """Load the embedder and the generator now instead of on the first question (a server pays before it
        listens, not on a client's time)."""
        self.embedder.embed_query("warm up")
        _ = self.generator.session

    def _check_embedder(self) -> None:
        built = self.store.meta.get("embedder")
        if built and built["identity"] != self._accepted_identity:
            self._accepted_identity = indexing.check_embedder(self.store, self.config.embed_model)

    # --- ingest -----------------------------------------------------------------------------------------------

    def ingest(
        self,
        folder: str | Path,
        *,
        delete: bool = True,
        progress: Callable[[Progress], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> IngestReport:
        """Sync ``folder`` into the index: new and changed files are (re)indexed, unchanged ones skipped,
        renamed or copied files reuse their stored vectors, and (with ``delete``) documents of files gone from
        the folder are removed. Unreadable files are skipped and listed in the report; they never stop the run.

        Several folders can share one index. Files cut with other chunker settings are re-cut; an index built
        with another embedding model is first re-embedded from its stored chunk text and switched over in one
        step (searches meanwhile use the old vectors). Raises :class:`~rag.errors.IndexBusyError` when another
        process is writing to the index. ``cancelled``, asked after each committed batch, stops the run there.
        """
        folder = Path(folder)
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise SourceNotFoundError(f"{folder} {what}; give the folder of documents to index")
        chunker = indexing.chunker(self.config, self.embedder)
        if (damage := self.store.integrity()) is not None:
            raise failures.damaged(self.store.directory, damage)
        with self.store.writing():
            reembedded = indexing.switch_embedder(self.store, self.embedder, progress)
            if self.store.meta.get("chunker") != chunker.settings.as_dict() or "embedder" not in self.store.meta:
                meta = {"embedder": indexing.embedder_meta(self.embedder), "chunker": chunker.settings.as_dict()}
                self.store.set_meta(meta)
            report = sync(
                folder,
                self.store,
                chunker,
                self.embedder.embed_documents,
                delete=delete,
                ocr=indexing.ocr(self.store, self.config),
                progress=progress,
                cancelled=cancelled,
                limits=indexing.parse_limits(self.config),
                workers=self.config.parse_workers,
            )
            report.reembedded = reembedded
            if self.store.dim is not None:
                self.store.save_vectors()
        return report

    def use_tuned(
        self, folder: str | Path, *, base: dict[str, str], progress: Callable[[Progress], None] | None = None
    ) -> int:
        """Switch the index to the tuned model at ``folder`` (inside the index folder), tuned from ``base`` (its
        name and identity): the stored chunks are re-embedded into a shadow set while searches use the current
        vectors, then swapped in, keeping the current ones for :meth:`rollback_embedder`. An interrupted switch
        resumes where it stopped. Returns how many chunks were re-embedded."""
        relative = Path(folder).resolve().relative_to(self.store.directory.resolve()).as_posix()
        embedder = self._embedder(indexing.tuned_source(self.store, relative))
        record = {**indexing.embedder_meta(embedder), "tuned": {"folder": relative, "base": base}}
        with self.store.writing():
            done = indexing.switch_embedder(self.store, embedder, progress, record=record, keep_previous=True)
        self._models_changed()
        return done

    def rollback_embedder(self, progress: Callable[[Progress], None] | None = None) -> str:
        """Return to the embedding model used before the last :meth:`use_tuned` (or rollback), from its kept
        vectors: only chunks added since are embedded. Returns the restored model's name."""
        with self.store.writing():
            restored = indexing.rollback(self.store, self._embedder_for, progress)
        self._models_changed()
        return str(restored["name"])

    def drop_previous_embedder(self) -> int:
        """Delete the vectors kept for :meth:`rollback_embedder`; returns how many there were."""
        return vector_sets.drop_previous(self.store)

    def previous_vectors(self) -> tuple[Embedder, tuple[np.ndarray, np.ndarray]] | None:
        """The previous embedding model and its kept (chunk ids, vectors), or None when none is kept."""
        previous = self.store.meta.get("embedder_prev")
        if not previous:
            return None
        return self._embedder_for(previous), vector_sets.previous_arrays(self.store)

    def _embedder_for(self, record: dict[str, Any]) -> Embedder:
        """The model an index meta record names: a tuned folder inside the index, or a configured model."""
        tuned = record.get("tuned")
        return self._embedder(
            indexing.tuned_source(self.store, tuned["folder"]) if tuned else resolve_embedder(record["name"])
        )

    def _embedder(self, source: EmbedderSource) -> Embedder:
        return Embedder(source, cache_dir=self.config.cache_dir, runtime=self.config.embed_runtime)

    def _models_changed(self) -> None:
        for name in ("embedder", "answerer"):  # built from the old embedder
            self.__dict__.pop(name, None)
        self._accepted_identity = None

    def remove(self, paths: list[str | Path]) -> int:
        """Remove the documents of these files, or of every file under these folders; returns documents removed.

        Paths need not exist on disk any more. Raises :class:`~rag.errors.SourceNotFoundError` naming a path
        that matches nothing in the index (and then removes nothing).
        """
        return indexing.remove(self.store, paths)

    def doctor(self, *, repair: bool = False) -> list[Problem]:
        """Check the index: FAISS ids against chunk rows, orphan rows, stored meta against the configured models.

        Returns what is wrong (an empty list when healthy). With ``repair``, orphan rows are deleted and the FAISS
        file rebuilt from SQLite first, and what remains is returned.
        """
        return indexing.doctor(self.store, self.config.embed_model, repair=repair)

    def reindex(self) -> int:
        """Rebuild the FAISS file from the vectors stored in SQLite; returns how many vectors it holds."""
        health.repair(self.store)
        return len(self.store.vectors)

    def counts(self) -> tuple[int, int]:
        """(documents, chunks) in the index."""
        return self.store.counts()

    def status(self) -> dict[str, Any]:
        """What the index holds (documents by type, chunks, bytes on disk) and the settings it was built with."""
        return indexing.status(self.store, self.config)

    # --- query ------------------------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int | None = None,
        *,
        retrieval: str | None = None,
        min_score: float | None = None,
        filters: Filters | None = None,
        mmr: float | None = None,
    ) -> list[Hit]:
        """The ``k`` chunks that best match ``query``, best first (see :meth:`retrieve`)."""
        return self.retrieve(query, k, retrieval=retrieval, min_score=min_score, filters=filters, mmr=mmr).hits

    def retrieve(
        self,
        query: str,
        k: int | None = None,
        *,
        retrieval: str | None = None,
        min_score: float | None = None,
        filters: Filters | None = None,
        mmr: float | None = None,
        rerank: bool = True,
    ) -> Retrieval:
        """Hits plus every candidate considered, with its dense/BM25 ranks and scores and why it was kept or not.

        ``retrieval``: dense | bm25 | hybrid (default: the configured one, hybrid). ``k``: how many hits
        (default ``config.sources_k``). ``min_score``: a cosine threshold (in every mode). ``filters``: path
        glob, kinds, modified-since, applied inside the search. ``mmr``: lambda for diversity (default: the
        configured one, off). ``rerank``: use the configured cross-encoder, if any. ``Hit.score`` is the cosine
        (dense), BM25 score (bm25), fused RRF score (hybrid) or the cross-encoder score (reranked).
        """
        _check_question(query)
        self.store.refresh()  # also when it was empty at open: a long-lived reader sees the first ingest
        if self.store.dim is not None:
            self._check_embedder()
        c = self.config
        return retrieve(
            self.store,
            self.embedder,
            query,
            c.sources_k if k is None else k,
            retrieval=retrieval or c.retrieval,
            filters=filters,
            mmr=mmr if mmr is not None else c.mmr,
            min_score=min_score,
            fusion=Fusion(c.rrf_k, c.dense_weight, c.bm25_weight),
            candidates=c.candidates,
            reranker=self.reranker if rerank else None,
            rerank_candidates=c.rerank_candidates,
        )

    def ask(
        self,
        question: str,
        *,
        k: int | None = None,
        decoding: Decoding | None = None,
        answer_mode: str | None = None,
        on_token: Callable[[str], None] | None = None,
        retrieval: str | None = None,
        filters: Filters | None = None,
        query: str | None = None,
    ) -> Answer:
        """Answer ``question`` from the indexed documents with the local generator, citing sources as [n].

        ``answer_mode`` (default ``config.answer_mode``, ``auto``): ``quote``, ``auto``, ``generate``,
        ``extract`` or ``sentences``, see rag/answer/modes.py (``auto`` answers how / why questions in
        ``sentences``). Every answer carries its support check (``answer.support``: per
        claim, the supporting source span with file and character offsets). ``on_token`` receives the answer's
        text as it is generated. When nothing relevant is retrieved, or no source sentence is left to quote, the
        answer says so (``answer.answered`` is False).
        """
        stream = self.ask_stream(
            question, k=k, decoding=decoding, answer_mode=answer_mode, retrieval=retrieval, filters=filters, query=query
        )
        for piece in stream:
            if on_token:
                on_token(piece)
        return stream.answer

    def ask_stream(
        self,
        question: str,
        *,
        k: int | None = None,
        decoding: Decoding | None = None,
        answer_mode: str | None = None,
        retrieval: str | None = None,
        filters: Filters | None = None,
        query: str | None = None,
    ) -> AnswerStream:
        """Like :meth:`ask`, but iterate over the result to receive text pieces; then read ``.answer``.

        ``retrieval`` and ``filters`` choose the retrieval as in :meth:`retrieve` (default: hybrid, no filter);
        ``query`` is searched instead of the question (a follow-up in a :class:`~rag.conversation.Conversation`).
        ``quote`` and ``extract`` yield the finished answer as one piece. In ``auto`` mode the pieces are the
        generated answer; when the support check rejects it, ``.answer`` holds the source sentence that replaced
        it (``answer.answer_mode == "extract"``).
        """
        decoding = decoding or Decoding()
        decoding.validate()
        answer_mode = check_mode(answer_mode or self.config.answer_mode)
        decoding = mode_decoding(routed(answer_mode, question), decoding)
        c = self.config
        started = time.perf_counter()
        if query is not None:  # the search checks the query; the question goes into the prompt
            _check_question(question)
        hits = self.search(query or question, k, retrieval=retrieval, min_score=c.min_score, filters=filters)
        settings = {
            "answer_mode": answer_mode,
            "decoding": decoding.as_dict(),
            "sources_k": c.sources_k if k is None else k,
            "retrieval": retrieval or c.retrieval,
            "filters": filters.as_dict() if filters else None,
            "query": query or question,
            "min_score": c.min_score,
            "embed_model": c.embed_model,
            "gen_model": c.gen_model,
            "context_tokens": c.context_tokens,
            "focus_sentences": c.focus_sentences,
        }
        timings = {"retrieve_s": time.perf_counter() - started}
        return answer(self.answerer, question, hits, answer_mode, decoding, settings, timings)


def _check_question(text: object) -> None:
    if not isinstance(text, str):
        raise ConfigError(f"the question must be text (str), not {type(text).__name__}")
    if not text.strip():
        raise ConfigError("the question is empty; ask something")
    if not any(ch.isalnum() for ch in text):
        raise ConfigError(f"the question {text.strip()[:40]!r} has no words; ask something")
    if len(text) > MAX_QUESTION_CHARS:
        raise ConfigError(
            f"the question is {len(text):,} characters long, the limit is {MAX_QUESTION_CHARS:,}; shorten it"
        )


def config_report(config: Config) -> dict[str, Any]:
    """The effective settings, with where each configured model comes from (no model is loaded)."""
    values = config.as_dict()
    emb = resolve_embedder(config.embed_model)
    gen = resolve_generator(config.gen_model, config.cache_dir, assemble=False)
    values["embed_model_location"] = emb.location
    values["gen_model_location"] = str(Path(gen.location) / gen.gguf_file) if gen.gguf_file else gen.location
    values["gen_model_tier"] = indexing.bundled_tier(config.gen_model)
    return values
