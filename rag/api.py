"""The Python API: one :class:`Index` over a directory, with ingest, search and ask.

Models load on first use and are kept for the life of the object, so a long-running app pays for them once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.chunking import Chunker, ChunkerSettings
from ingest.pipeline import IngestReport, Progress, sync
from rag.config import Config
from rag.embed import Embedder
from rag.errors import ConfigError, ModelMismatchError, SourceNotFoundError
from rag.generate import Decoding, GenerationStats, Generator, drain
from rag.models import resolve_embedder, resolve_generator
from rag.modes import (
    NOT_IN_SOURCES,
    PROMPTS,
    QUOTE_LENGTH_PENALTY,
    QUOTE_PROMPT,
    QUOTE_TOKENS,
    best_sentence,
    check_mode,
    mode_decoding,
    quote_constraint,
    trim,
)
from rag.prompt import PackedPrompt, citations, focus, pack
from rag.retrieve import Fusion, Retrieval, retrieve
from rag.store import Problem, Store
from rag.support import check, is_supported
from rag.types import Answer, Filters, Hit

if TYPE_CHECKING:
    from rag.rerank import Reranker

NO_ANSWER = "The indexed documents do not seem to contain anything relevant to this question."


class Index:
    """A document index on disk::

    index = Index.open(".rag", create=True)
    report = index.ingest("sample_docs")      # IngestReport: added / updated / skipped ...
    hits = index.search("what does top-p keep?", k=3)   # list[Hit], best first (hybrid: dense + BM25)
    answer = index.ask("what does top-p keep?")         # Answer: .text, .sources, .cited
    """

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self._accepted_identity: str | None = None  # the index's embedder, once checked against the config

    @classmethod
    def open(cls, path: str | Path | None = None, *, config: Config | None = None, create: bool = False) -> Index:
        """Open the index at ``path`` (default: ``config.index``); ``create`` makes an empty one if absent.

        Raises :class:`~rag.errors.IndexNotFoundError` when there is none and ``create`` is false. Searching an
        index built with another embedding model raises :class:`~rag.errors.ModelMismatchError`; ingesting with
        another model re-embeds the stored chunks with it.
        """
        config = config or Config.load()
        directory = Path(path) if path is not None else config.index
        return cls(Store.open(directory, create=create), config)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- models -----------------------------------------------------------------------------------------------

    @cached_property
    def embedder(self) -> Embedder:
        c = self.config
        return Embedder(resolve_embedder(c.embed_model), cache_dir=c.cache_dir, runtime=c.embed_runtime)

    @cached_property
    def reranker(self) -> Reranker | None:
        """The configured cross-encoder, or None (none is bundled)."""
        if not self.config.reranker:
            return None
        from rag.rerank import Reranker

        return Reranker(self.config.reranker)

    @cached_property
    def generator(self) -> Generator:
        c = self.config
        return Generator(resolve_generator(c.gen_model), c.cache_dir, c.threads, c.gen_backend, c.gen_precision)

    def _embedder_meta(self) -> dict[str, Any]:
        src = self.embedder.source
        return {
            "name": src.name,
            "identity": src.identity,
            "dim": self.embedder.dim,
            "normalized": True,
            "max_seq_length": self.embedder.max_seq_length,
        }

    def _check_embedder(self) -> None:
        built = self.store.meta.get("embedder")
        if not built or built["identity"] == self._accepted_identity:
            return
        wanted = resolve_embedder(self.config.embed_model)
        if wanted.identity == built["identity"]:
            self._accepted_identity = wanted.identity
        else:
            configured = self.config.embed_model
            if configured == built["name"]:  # same name, other files: an update, or another folder
                configured = f"{configured} ({wanted.identity}, the index has {built['identity']})"
            raise ModelMismatchError(
                f"index {self.store.directory} was built with embedding model {built['name']!r}, not "
                f"{configured}; pass the model it was built with (--embed-model or RAG_EMBED_MODEL), "
                "or re-embed the index with the new model by running `rag ingest` with it"
            )

    def _chunker(self) -> Chunker:
        settings = ChunkerSettings(
            chunk_tokens=self.config.chunk_tokens,
            chunk_overlap=self.config.chunk_overlap,
            max_tokens=self.embedder.max_tokens,
        )
        if settings.chunk_tokens > settings.max_tokens:
            raise ConfigError(
                f"--chunk-tokens {settings.chunk_tokens} exceeds what {self.config.embed_model} reads "
                f"({settings.max_tokens}); use {settings.max_tokens} or less"
            )
        if settings.chunk_overlap >= settings.chunk_tokens:
            raise ConfigError(
                f"--chunk-overlap {settings.chunk_overlap} must be less than --chunk-tokens {settings.chunk_tokens}"
            )
        return Chunker(settings, self.embedder.tokenize)

    # --- ingest -----------------------------------------------------------------------------------------------

    def ingest(
        self, folder: str | Path, *, delete: bool = True, progress: Callable[[Progress], None] | None = None
    ) -> IngestReport:
        """Sync ``folder`` into the index: new and changed files are (re)indexed, unchanged ones skipped,
        renamed or copied files reuse their stored vectors, and (with ``delete``) documents of files gone from
        the folder are removed. Unreadable files are skipped and listed in the report; they never stop the run.

        Several folders can share one index. Files cut with other chunker settings are re-cut; an index built
        with another embedding model is first re-embedded from its stored chunk text and switched over in one
        step (searches meanwhile use the old vectors). Raises :class:`~rag.errors.IndexBusyError` when another
        process is writing to the index.
        """
        folder = Path(folder)
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise SourceNotFoundError(f"{folder} {what}; give the folder of documents to index")
        chunker = self._chunker()
        with self.store.writing():
            reembedded = self._switch_embedder(progress)
            if self.store.meta.get("chunker") != chunker.settings.as_dict() or "embedder" not in self.store.meta:
                self.store.set_meta({"embedder": self._embedder_meta(), "chunker": chunker.settings.as_dict()})
            report = sync(folder, self.store, chunker, self.embedder.embed_documents, delete=delete, progress=progress)
            report.reembedded = reembedded
            if self.store.dim is not None:
                self.store.save_vectors()
        return report

    def _switch_embedder(self, progress: Callable[[Progress], None] | None) -> int:
        """Re-embed every stored chunk with the configured model if the index was built with another one."""
        built = self.store.meta.get("embedder")
        if not built or built["identity"] == self.embedder.source.identity:
            return 0
        started = time.monotonic()
        self.store.begin_vector_set(self._embedder_meta())
        total = self.store.counts()[1]
        done = 0
        while batch := self.store.chunks_without_next_vector(256):
            ids = [chunk_id for chunk_id, _ in batch]
            self.store.put_next_vectors(ids, self.embedder.embed_documents([text for _, text in batch]))
            done += len(batch)
            if progress:
                progress(Progress(0, 0, done, time.monotonic() - started, f"re-embedding {done}/{total} chunks"))
        self.store.switch_vector_set()
        return done

    def remove(self, paths: list[str | Path]) -> int:
        """Remove the documents of these files, or of every file under these folders; returns documents removed.

        Paths need not exist on disk any more. Raises :class:`~rag.errors.SourceNotFoundError` naming a path
        that matches nothing in the index (and then removes nothing).
        """
        targets: list[str] = []
        for given in paths:
            absolute = str(Path(given).expanduser().absolute().resolve())
            matched = [d.path for d in self.store.documents(under=absolute)]
            if self.store.document(absolute) is not None:
                matched.append(absolute)
            if not matched:
                raise SourceNotFoundError(f"{given} matches no indexed document; see `rag status` for what is indexed")
            targets.extend(matched)
        with self.store.transaction() as tx:
            for path in dict.fromkeys(targets):
                tx.remove_document(path)
        self.store.save_vectors()
        return len(dict.fromkeys(targets))

    def doctor(self, *, repair: bool = False) -> list[Problem]:
        """Check the index: FAISS ids against chunk rows, orphan rows, stored meta against the configured models.

        Returns what is wrong (an empty list when healthy). With ``repair``, orphan rows are deleted and the FAISS
        file rebuilt from SQLite first, and what remains is returned.
        """
        if repair:
            self.store.repair()
        elif self.store.dim is not None:
            _ = self.store.vectors  # a FAISS file left stale by a crash is rebuilt and saved here, as on any open
        problems = self.store.check()
        try:
            self._check_embedder()
        except ModelMismatchError as e:
            problems.append(Problem("embedder-mismatch", str(e), 1))
        if "embedder_next" in self.store.meta:
            name = self.store.meta["embedder_next"]["name"]
            problems.append(
                Problem(
                    "reembed-unfinished",
                    f"re-embedding with {name!r} was interrupted; "
                    f"run `rag ingest` with --embed-model {name} to finish it",
                    1,
                )
            )
        return problems

    def reindex(self) -> int:
        """Rebuild the FAISS file from the vectors stored in SQLite; returns how many vectors it holds."""
        self.store.repair()
        return len(self.store.vectors)

    def _similarity(self, question: str, texts: list[str]) -> list[float]:
        vectors = self._embed_sentences(texts)  # (n, dim), normalised: a dot product is cosine
        return (vectors @ self.embedder.embed_query(question)).tolist()

    def _embed_sentences(self, texts: list[str]) -> Any:
        """``embed_documents`` with a per-index memo: focusing the prompt and checking support embed the same
        source sentences, and embedding is the slow part of both."""
        import numpy as np

        cache = self._sentence_vectors
        if len(cache) + len(texts) > 20_000:  # bounded: a long-running app asks many questions
            cache.clear()
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            cache.update(zip(missing, self.embedder.embed_documents(missing), strict=True))
        return np.stack([cache[t] for t in texts]) if texts else self.embedder.embed_documents([])

    @cached_property
    def _sentence_vectors(self) -> dict[str, Any]:
        return {}

    # --- query ------------------------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int | None = None,
        *,
        mode: str | None = None,
        min_score: float | None = None,
        filters: Filters | None = None,
        mmr: float | None = None,
    ) -> list[Hit]:
        """The ``k`` chunks that best match ``query``, best first (see :meth:`retrieve`)."""
        return self.retrieve(query, k, mode=mode, min_score=min_score, filters=filters, mmr=mmr).hits

    def retrieve(
        self,
        query: str,
        k: int | None = None,
        *,
        mode: str | None = None,
        min_score: float | None = None,
        filters: Filters | None = None,
        mmr: float | None = None,
        rerank: bool = True,
    ) -> Retrieval:
        """Hits plus every candidate considered, with its dense/BM25 ranks and scores and why it was kept or not.

        ``mode``: dense | bm25 | hybrid (default: the configured one, hybrid). ``min_score``: a cosine
        threshold (in every mode). ``filters``: path glob, kinds, modified-since, applied inside the search.
        ``mmr``: lambda for diversity (default: the configured one, off). ``rerank``: use the configured
        cross-encoder, if any. ``Hit.score`` is the cosine (dense), BM25 score (bm25), fused RRF score (hybrid)
        or the cross-encoder score (reranked).
        """
        if not query.strip():
            raise ConfigError("the question is empty; ask something")
        if self.store.dim is not None:
            self.store.refresh()
            self._check_embedder()
        c = self.config
        return retrieve(
            self.store,
            self.embedder,
            query,
            k or c.top_k,
            mode=mode or c.retrieval_mode,
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
        mode: str | None = None,
        filters: Filters | None = None,
    ) -> Answer:
        """Answer ``question`` from the indexed documents with the local generator, citing sources as [n].

        ``answer_mode`` (default ``config.answer_mode``, ``quote``): ``quote``, ``auto``, ``generate`` or
        ``extract``, see :mod:`rag.modes`. Every answer carries its support check (``answer.support``: per claim,
        the supporting source span with file and character offsets). ``on_token`` receives the answer's text as
        it is generated. When nothing relevant is retrieved, or no source sentence is left to quote, the answer
        says so (``answer.answered`` is False).
        """
        stream = self.ask_stream(question, k=k, decoding=decoding, answer_mode=answer_mode, mode=mode, filters=filters)
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
        mode: str | None = None,
        filters: Filters | None = None,
    ) -> AnswerStream:
        """Like :meth:`ask`, but iterate over the result to receive text pieces; then read ``.answer``.

        ``mode`` and ``filters`` choose the retrieval as in :meth:`retrieve` (default: hybrid, no filter).
        ``quote`` and ``extract`` yield the finished answer as one piece. In ``auto`` mode the pieces are the
        generated answer; when the support check rejects it, ``.answer`` holds the quote that replaced it
        (``answer.mode == "quote"``).
        """
        decoding = decoding or Decoding()
        decoding.validate()
        answer_mode = check_mode(answer_mode or self.config.answer_mode)
        decoding = mode_decoding(answer_mode, decoding)
        started = time.perf_counter()
        hits = self.search(question, k, mode=mode, min_score=self.config.min_score, filters=filters)
        retrieved = time.perf_counter()
        settings = {
            "answer_mode": answer_mode,
            "decoding": decoding.as_dict(),
            "k": k or self.config.top_k,
            "retrieval_mode": mode or self.config.retrieval_mode,
            "filters": filters.as_dict() if filters else None,
            "min_score": self.config.min_score,
            "embed_model": self.config.embed_model,
            "gen_model": self.config.gen_model,
            "context_tokens": self.config.context_tokens,
            "focus_sentences": self.config.focus_sentences,
        }
        timings = {"retrieve_s": retrieved - started}
        if not hits:
            answer = Answer(
                question, NO_ANSWER, [], answered=False, settings=settings, timings=timings, mode=answer_mode
            )
            return AnswerStream(answer)
        gen = self.generator
        budget = min(self.config.context_tokens, gen.context_window) - decoding.max_new_tokens
        if budget < 128:
            raise ConfigError(
                f"--max-new-tokens {decoding.max_new_tokens} leaves no room for sources in a "
                f"{min(self.config.context_tokens, gen.context_window)}-token context; lower it"
            )
        was_loaded = gen.loaded_from is not None
        excerpts = None
        if self.config.focus_sentences:
            excerpts = focus(question, hits, self._similarity, self.config.focus_sentences)
        packed = pack(question, hits, gen.count, budget, excerpts, system=PROMPTS[answer_mode])
        timings["pack_s"] = time.perf_counter() - retrieved
        if not was_loaded:  # counting prompt tokens loaded the generator: part of pack_s, shown apart
            _ = gen.backend_used  # prepares the decoding backend too, so load time is all in one place
            timings["load_generator_s"] = gen.load_seconds or 0.0
        if answer_mode == "extract":
            pieces = _pieces(best_sentence(question, packed.sources, packed.excerpts, self._similarity), packed.tokens)
        elif answer_mode == "quote":
            pieces = self._quote(question, packed, decoding)
        else:
            pieces = gen.stream(packed.messages, decoding)
        finish = partial(self._finish, question, packed, answer_mode, decoding, settings, timings)
        return AnswerStream(None, pieces, finish, packed)

    def _quote(self, question: str, packed: PackedPrompt, decoding: Decoding) -> Iterator[str]:
        """Constrained decoding over the prompt's sentences: the answer is a verbatim span of them, cut where
        the model most wanted to end it. Yields the finished quote as one piece (the cut is known at the end)."""
        gen = self.generator
        constraint = quote_constraint(question, packed, self._similarity, gen.tokenizer)
        messages = packed.messages
        if messages[0]["content"] != QUOTE_PROMPT:  # auto's fallback: same sources, the quote instruction
            messages = [{"role": "system", "content": QUOTE_PROMPT}, *messages[1:]]
        # One sequence: the cut reads the end-of-sequence margins of the quote as it was written, which beam
        # search would reorder under it.
        limit = replace(decoding, max_new_tokens=min(decoding.max_new_tokens, QUOTE_TOKENS), stop=(), num_beams=1)
        _, stats = drain(gen.stream(messages, limit, [constraint]))
        yield constraint.best_end(QUOTE_LENGTH_PENALTY)
        return stats

    def _finish(
        self,
        question: str,
        packed: PackedPrompt,
        mode: str,
        decoding: Decoding,
        settings: dict[str, Any],
        timings: dict[str, float],
        text: str,
        stats: GenerationStats,
    ) -> Answer:
        """The answer from the streamed text: trimmed (quotes), support-checked, replaced in ``auto`` mode."""
        timings = {
            **timings,
            "first_token_s": stats.first_token_s,
            "generate_s": stats.seconds,
            "tokens_per_s": stats.new_tokens / stats.seconds if stats.seconds else 0.0,
        }
        produced_by = "generate" if mode == "auto" else mode
        if produced_by == "quote":
            text = trim(text, question)
        started = time.perf_counter()
        supports = check(text, packed.sources, self._embed_sentences, question)
        timings["verify_s"] = time.perf_counter() - started
        new_tokens = stats.new_tokens
        if mode == "auto" and not is_supported(supports):
            started = time.perf_counter()
            quoted, fallback = drain(self._quote(question, packed, decoding))
            new_tokens += fallback.new_tokens
            text, produced_by = trim(quoted.strip(), question), "quote"
            supports = check(text, packed.sources, self._embed_sentences, question)
            timings["fallback_s"] = time.perf_counter() - started
        if produced_by == "quote" and not is_supported(supports):
            # A verbatim quote fails the check only when it has no content of its own (a cut "It was", or the
            # question's words): the most similar sentence is the better quote then.
            text, produced_by = best_sentence(question, packed.sources, packed.excerpts, self._similarity), "extract"
            supports = check(text, packed.sources, self._embed_sentences, question)
        supported = is_supported(supports)
        answered = bool(text)
        if produced_by == "extract" and not supported:  # no source sentence at all
            text, answered = NOT_IN_SOURCES, False
        return Answer(
            question=question,
            text=text,
            sources=packed.sources,
            answered=answered,
            # The text's own [n] markers, else the sources the support check found for its claims.
            cited=citations(text, len(packed.sources))
            or list(dict.fromkeys(s.source for s in supports if s.supported and s.source)),
            settings=settings,
            timings=timings,
            prompt_tokens=stats.prompt_tokens,
            answer_tokens=new_tokens,
            mode=produced_by,
            support=supports,
            supported=supported,
        )


def _pieces(text: str, prompt_tokens: int) -> Iterator[str]:
    """A finished text as a stream of one piece, for modes that generate nothing."""
    if text:
        yield text
    return GenerationStats(prompt_tokens, 0, 0.0, 0.0)


class AnswerStream:
    """Iterate for the answer's text pieces; ``answer`` is ready once iteration has finished."""

    def __init__(
        self,
        answer: Answer | None,
        pieces: Iterator[str] | None = None,
        finish: Callable[[str, GenerationStats], Answer] | None = None,
        packed: PackedPrompt | None = None,
    ) -> None:
        self._answer = answer
        self._pieces = pieces
        self._finish = finish
        self.prompt: PackedPrompt | None = packed  # what the generator read, for inspection

    def __iter__(self) -> Iterator[str]:
        if self._pieces is None:
            return
        text: list[str] = []
        stats: GenerationStats | None = None
        pieces = self._pieces
        self._pieces = None
        while True:
            try:
                piece = next(pieces)
            except StopIteration as stop:
                stats = stop.value
                break
            text.append(piece)
            yield piece
        assert self._finish is not None and stats is not None
        self._answer = self._finish("".join(text).strip(), stats)

    @property
    def answer(self) -> Answer:
        if self._answer is None:
            raise RuntimeError("iterate over the stream first; the answer is complete only at its end")
        return self._answer
