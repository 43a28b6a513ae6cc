"""What ``Index`` does to an index as a whole, outside a folder sync: its embedding model, removal, doctor, status.

An index records the identity of the embedder that made its vectors. Searching with another one is refused
(its vectors would mean nothing to the stored ones); ingesting with another one re-embeds the stored chunk text
into a shadow vector set and switches over in one step, so searches keep working meanwhile.

A model `rag tune` made lives in the index folder and is recorded with the model it was tuned from: configuring
that base model (the default one, say) means the index's tuned model, so a tuned index needs no new setting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.chunking import Chunker, ChunkerSettings
from ingest.limits import Limits
from ingest.ocr import Ocr
from ingest.pipeline import BATCH_CHUNKS, Progress
from rag.config import BUNDLED_GENERATOR, Config
from rag.errors import ConfigError, ModelMismatchError, ModelNotFoundError, SourceNotFoundError
from rag.models import bundled
from rag.models.embedder import Embedder
from rag.models.sources import EmbedderSource, resolve_embedder
from rag.storage import health, vector_sets
from rag.storage.health import Problem
from rag.storage.store import Store

# OCR text of page images, by image hash, inside the index folder.
OCR_CACHE = "ocr-cache"


def embedder_meta(embedder: Embedder) -> dict[str, Any]:
    """What the index records about the model that made its vectors."""
    src = embedder.source
    return {
        "name": src.name,
        "identity": src.identity,
        "dim": embedder.dim,
        "normalized": True,
        "max_seq_length": embedder.max_seq_length,
    }


# Where `rag tune` saves its models, inside the index folder.
TUNED_MODELS = "models"


def embedder_source(store: Store, configured: str) -> EmbedderSource:
    """The model to embed with: ``configured``, or the index's tuned model when ``configured`` is the model it was
    tuned from."""
    wanted = resolve_embedder(configured)
    tuned = (store.meta.get("embedder") or {}).get("tuned")
    if not tuned or tuned["base"]["identity"] != wanted.identity:
        return wanted
    if not (store.directory / tuned["folder"]).is_dir():
        raise ModelNotFoundError(
            f"index {store.directory} uses the tuned model {tuned['folder']}, which is missing from it; copy that "
            "folder from the machine that tuned it, or run `rag tune --rollback`"
        )
    return tuned_source(store, tuned["folder"])


def tuned_source(store: Store, relative: str) -> EmbedderSource:
    """A tuned model folder inside the index, named by its path relative to the index (so the name stays the
    same when the index is moved)."""
    source = resolve_embedder(str(store.directory / relative))
    return EmbedderSource(relative, source.location, True, source.identity)


def check_embedder(store: Store, configured: str) -> str | None:
    """The identity of the configured embedder when it is the one the index was built with (None for an index
    with no vectors yet); else :class:`ModelMismatchError` saying what to do."""
    built = store.meta.get("embedder")
    if not built:
        return None
    wanted = embedder_source(store, configured)
    if wanted.identity == built["identity"]:
        return wanted.identity
    if configured == built["name"]:  # same name, other files: an update, or another folder
        configured = f"{configured} ({wanted.identity}, the index has {built['identity']})"
    raise ModelMismatchError(
        f"index {store.directory} was built with embedding model {built['name']!r}, not "
        f"{configured}; pass the model it was built with (--embed-model or RAG_EMBED_MODEL), "
        "or re-embed the index with the new model by running `rag ingest` with it"
    )


def chunker(config: Config, embedder: Embedder) -> Chunker:
    """A chunker cutting ``config``'s chunk size in ``embedder``'s tokens, within what the model reads."""
    settings = ChunkerSettings(
        chunk_tokens=config.chunk_tokens, chunk_overlap=config.chunk_overlap, max_tokens=embedder.max_tokens
    )
    if settings.chunk_tokens > settings.max_tokens:
        raise ConfigError(
            f"--chunk-tokens {settings.chunk_tokens} exceeds what {config.embed_model} reads "
            f"({settings.max_tokens}); use {settings.max_tokens} or less"
        )
    return Chunker(settings, embedder.tokenize)


def parse_limits(config: Config) -> Limits:
    """What one file may cost to parse, from the settings."""
    return Limits(
        memory_mb=config.parse_memory_mb,
        seconds=config.parse_seconds,
        unzipped_mb=config.max_unzipped_mb,
        zip_ratio=config.max_zip_ratio,
        pages=config.max_pages,
        frames=config.max_frames,
        rows=config.max_rows,
        depth=config.max_depth,
        chars=config.max_chars,
    )


def ocr(store: Store, config: Config) -> Ocr | None:
    """How an ingest reads scanned pages and pictures: Tesseract in ``config``'s languages, its text cached in
    the index folder (a re-sync never reads a page twice); None when OCR is turned off."""
    if config.ocr_languages is None:
        return None
    return Ocr(cache=store.directory / OCR_CACHE, languages=config.ocr_languages)


def switch_embedder(
    store: Store,
    embedder: Embedder,
    progress: Callable[[Progress], None] | None,
    *,
    record: dict[str, Any] | None = None,
    keep_previous: bool = False,
) -> int:
    """Re-embed every stored chunk with ``embedder`` if the index was built with another one; returns how many.

    ``record`` is what the index records about the new model (default :func:`embedder_meta`); ``keep_previous``
    keeps the replaced vectors for :func:`rollback`. Call with the writer lock held. An interrupted run resumes
    after its last committed batch.
    """
    built = store.meta.get("embedder")
    if not built or built["identity"] == embedder.source.identity:
        return 0
    vector_sets.begin(store, record or embedder_meta(embedder))
    return _finish_switch(store, embedder, progress, keep_previous=keep_previous)


def _finish_switch(
    store: Store, embedder: Embedder, progress: Callable[[Progress], None] | None, *, keep_previous: bool
) -> int:
    started = time.monotonic()
    total = store.counts()[1]
    done = 0
    while batch := vector_sets.pending(store, BATCH_CHUNKS):
        ids = [chunk_id for chunk_id, _ in batch]
        vector_sets.put(store, ids, embedder.embed_documents([text for _, text in batch]))
        done += len(batch)
        if progress:
            progress(Progress(0, 0, done, time.monotonic() - started, f"re-embedding {done}/{total} chunks"))
    vector_sets.switch(store, keep_previous=keep_previous)
    return done


def rollback(
    store: Store, embedder_for: Callable[[dict[str, Any]], Embedder], progress: Callable[[Progress], None] | None
) -> dict[str, Any]:
    """Return to the embedding model used before the last `rag tune` switch, from its kept vectors; only chunks
    added since are embedded (by ``embedder_for(record)``, loaded only then). The replaced vectors are kept in
    turn, so a second rollback goes forward again. Returns the restored model's record. Call with the writer
    lock held."""
    if "embedder_prev" not in store.meta:
        raise ConfigError(f"index {store.directory} keeps no previous embedding model to roll back to")
    previous = vector_sets.restore(store)
    if vector_sets.pending(store, 1):
        _finish_switch(store, embedder_for(previous), progress, keep_previous=True)
    else:
        vector_sets.switch(store, keep_previous=True)
    return previous


def doctor(store: Store, configured: str, *, repair: bool) -> list[Problem]:
    """What is wrong with the index (after repairing what can be, with ``repair``); a damaged database is
    reported alone and never repaired."""
    if (problem := health.damaged(store)) is not None:
        return [problem]
    if repair:
        health.repair(store)
    elif store.dim is not None:
        store.save_cache()  # a FAISS file left stale (a crash, another machine's commits) is rebuilt and saved
    return health.check(store, known_sound=True) + embedder_problems(store, configured)


def embedder_problems(store: Store, configured: str) -> list[Problem]:
    """``rag doctor``'s findings about the embedding model: a mismatch, or a re-embed left unfinished."""
    problems = []
    try:
        check_embedder(store, configured)
    except ModelMismatchError as e:
        problems.append(Problem("embedder-mismatch", str(e), 1))
    if "embedder_next" in store.meta:
        name = store.meta["embedder_next"]["name"]
        tuning = "tuned" in store.meta["embedder_next"] or "tuned" in store.meta.get("embedder", {})
        finish = (
            "the interrupted `rag tune` (or `rag tune --rollback`) again"
            if tuning
            else (f"`rag ingest` with --embed-model {name}")
        )
        problems.append(
            Problem(
                "reembed-unfinished",
                f"re-embedding with {name!r} was interrupted; run {finish} to finish it",
                1,
            )
        )
    return problems


def remove(store: Store, paths: list[str | Path]) -> int:
    """Remove the documents of these files, or of every file under these folders, in one transaction."""
    targets: list[str] = []
    for given in paths:
        absolute = str(Path(given).expanduser().absolute().resolve())
        matched = [d.path for d in store.documents(under=absolute)]
        if store.document(absolute) is not None:
            matched.append(absolute)
        if not matched:
            raise SourceNotFoundError(f"{given} matches no indexed document; see `rag status` for what is indexed")
        targets.extend(matched)
    unique = list(dict.fromkeys(targets))
    with store.transaction() as tx:
        for path in unique:
            tx.remove_document(path)
    store.save_vectors()
    return len(unique)


def bundled_tier(gen_model: str) -> str:
    """Which bundled generator tier ``gen_model`` names, and under which licence; or that it is the user's own."""
    tier = bundled.tier(gen_model)
    if tier is None:
        return "not a bundled tier (a folder, GGUF file or hub id you configured)"
    default = ", the default" if tier.name == BUNDLED_GENERATOR else ""
    return f"bundled {tier.name} ({tier.strength}{default}); licence {tier.licence}"


def status(store: Store, config: Config) -> dict[str, Any]:
    """What the index holds and was built with, and the generator ``config`` answers with."""
    docs, chunks = store.counts()
    kinds: dict[str, int] = {}
    for d in store.documents():
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    return {
        "index": str(store.directory.resolve()),
        "store": store.where if store.shared else "sqlite",
        "database_bytes": store.database_bytes(),
        "documents": docs,
        "chunks": chunks,
        "by_type": kinds,
        "bytes_on_disk": sum(p.stat().st_size for p in store.directory.iterdir() if p.is_file()),
        "embedder": store.meta.get("embedder"),
        "chunker": store.meta.get("chunker"),
        "vectors": store.meta.get("vectors"),
        "previous_embedder": (store.meta.get("embedder_prev") or {}).get("name"),
        "generator": config.gen_model,
        "generator_tier": bundled_tier(config.gen_model),
        "gen_backend": config.gen_backend,
        "gen_precision": config.gen_precision,
        "format_version": store.meta.get("format_version"),
        "generation": store.meta.get("generation"),
    }
