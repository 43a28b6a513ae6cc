"""Training pairs for `rag tune`: a query, the text that answers it, and what in the index counts as finding it.

Three sources:

- a BEIR folder's qrels (``--pairs FOLDER --split train``): the judged documents' text; found = the document;
- a JSONL file of ``{"query", "positive", "negative"?}`` lines: found = the chunk holding the positive text;
- no labels: queries cut from the index's own chunks (a title or heading, or one sentence, removed from the
  text it came from, as in the inverse cloze task), kept only when dense retrieval finds their chunk again
  (the round trip), so a sentence too generic to point anywhere never becomes a training query.

Hard negatives come from the index too: the best BM25 and dense hits that are not what the query should find.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from rag.errors import ConfigError, SourceNotFoundError
from rag.tools.datasets import beir_workspace, is_beir, load_beir, materialise_beir

if TYPE_CHECKING:
    from rag.api import Index
    from rag.types import Hit

# Negatives kept per pair, from each of BM25 and dense.
NEGATIVES_PER_MODE = 4
# How deep mining looks for negatives, and how deep the round trip looks for a synthetic query's chunk.
MINING_DEPTH = 20
ROUND_TRIP_K = 10
# A cut query is a sentence (or title) of this many words.
QUERY_WORDS = (5, 40)
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Pair:
    """A query and its positive text; ``targets`` are what counts as found: document paths or chunk ids."""

    query: str
    positive: str
    targets: frozenset[str]
    group: str  # the query's id: pairs of one query are all trained on or all held out
    negatives: tuple[str, ...] = ()
    teacher: tuple[float, ...] = ()  # a teacher's scores of the positive and each negative (rag/tools/teacher.py)


def chunk_key(chunk_id: int) -> str:
    return f"#{chunk_id}"


def found_keys(hits: list[Hit], by_document: bool) -> list[str]:
    """The hits as target keys, best first, each once: documents (by path) or chunks."""
    keys = [h.path if by_document else chunk_key(h.chunk_id) for h in hits]
    return list(dict.fromkeys(keys))


# --- labelled ---------------------------------------------------------------------------------------------------


def beir_pairs(folder: Path, split: str, index: Index, workspace: Path) -> list[Pair]:
    """A BEIR folder's judged (query, document) pairs of ``split``. The index must hold the corpus, written out
    under ``workspace`` (as `rag eval` does); an empty index is filled with it first."""
    data = load_beir(folder, split)
    docs, names = materialise_beir(folder, workspace)
    path_of = {doc_id: str((docs / name).resolve()) for name, doc_id in names.items()}
    if index.counts()[0] == 0:
        index.ingest(docs)
    wanted = {d for judged in data.qrels.values() for d in judged}
    indexed = {path_of[d] for d in wanted if d in path_of and index.store.document(path_of[d]) is not None}
    if not indexed:
        raise ConfigError(
            f"index {index.store.directory} holds none of {folder}'s corpus; tune on a BEIR folder with an empty "
            "--index (it is filled with the corpus) or the index it filled before"
        )
    texts = {p: Path(p).read_text(encoding="utf-8") for p in indexed}  # what the model reads: its first tokens
    pairs = []
    for qid, judged in data.qrels.items():
        targets = frozenset(path_of[d] for d in judged if path_of.get(d) in indexed)
        pairs.extend(Pair(data.queries[qid], texts[t], targets, qid) for t in sorted(targets))
    return pairs


def jsonl_pairs(path: Path, index: Index) -> list[Pair]:
    """``{"query", "positive", "negative"?}`` lines; a pair's target is the indexed chunk holding most of its
    positive (found by a BM25 search for it), so a positive that is not in the index is reported."""
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            query, positive = str(row["query"]), str(row["positive"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f'{path}:{n}: expected a JSON object with "query" and "positive" (strings)') from None
        hits = index.search(" ".join(positive.split()[:64]), 1, retrieval="bm25")
        if not hits or not _overlaps(positive, hits[0].text):
            raise ConfigError(f"{path}:{n}: the positive text is not in index {index.store.directory}; index it first")
        negatives = (str(row["negative"]),) if row.get("negative") else ()
        pairs.append(Pair(query, positive, frozenset({chunk_key(hits[0].chunk_id)}), f"line{n}", negatives))
    if not pairs:
        raise ConfigError(f"{path} holds no pairs")
    return pairs


def _overlaps(positive: str, chunk: str) -> bool:
    """Most of the positive's words are in the chunk (a positive may span two chunks, or be reflowed)."""
    words = set(re.findall(r"\w+", positive.lower()))
    return len(words & set(re.findall(r"\w+", chunk.lower()))) >= 0.5 * len(words)


def load_pairs(source: Path, split: str, index: Index) -> list[Pair]:
    """Labelled pairs from a BEIR folder or a JSONL file."""
    if source.is_dir():
        if not is_beir(source):
            raise ConfigError(f"{source} is not a BEIR folder (corpus.jsonl, queries.jsonl, qrels), nor a JSONL file")
        return beir_pairs(source, split, index, beir_workspace(source, index.config.cache_dir))
    if not source.is_file():
        raise SourceNotFoundError(f"--pairs {source} does not exist; give a BEIR folder or a JSONL of pairs")
    return jsonl_pairs(source, index)


# --- unlabelled -------------------------------------------------------------------------------------------------


def synthetic_pairs(index: Index, limit: int, seed: int, progress: Progress | None = None) -> list[Pair]:
    """Up to ``limit`` pairs cut from the index's own chunks (see the module docstring), each kept only when a
    dense search for its query finds its chunk in the top ``ROUND_TRIP_K``."""
    rng = random.Random(seed)
    ids = index.store.chunk_ids()
    rng.shuffle(ids)
    pairs: list[Pair] = []
    tried = 0
    for at in range(0, len(ids), 256):
        for chunk in index.store.chunks(ids[at : at + 256]).values():
            cut = _cut_query(chunk.text, chunk.heading or chunk.title, rng)
            tried += 1
            if cut is None:
                continue
            query, rest = cut
            hits = index.search(query, ROUND_TRIP_K, retrieval="dense")
            if chunk.chunk_id in {h.chunk_id for h in hits}:
                pairs.append(Pair(query, rest, frozenset({chunk_key(chunk.chunk_id)}), chunk_key(chunk.chunk_id)))
            if progress:
                progress("writing queries", len(pairs), limit)
            if len(pairs) >= limit:
                return pairs
    if not pairs:
        raise ConfigError(
            f"no training query survived the round trip in {tried} chunks of index {index.store.directory}; "
            "index more text, or give labelled --pairs"
        )
    return pairs


def _cut_query(text: str, title: str | None, rng: random.Random) -> tuple[str, str] | None:
    """(query, the text without it): the chunk's leading title or heading when it has one, else a random
    sentence of a fitting length; None when the chunk has nothing to cut or too little left."""
    lo, hi = QUERY_WORDS
    if title and text.startswith(title) and lo <= len(title.split()) <= hi:
        query, rest = title, text[len(title) :]
    else:
        sentences = [m.group().strip() for m in _SENTENCE.finditer(text)]
        fitting = [s for s in sentences if lo <= len(s.split()) <= hi]
        if len(fitting) < 2:  # one sentence alone would leave nothing to find it by
            return None
        query = rng.choice(fitting)
        rest = text.replace(query, " ", 1)
    rest = " ".join(rest.split())
    return (query, rest) if len(rest.split()) >= 2 * lo else None


# --- negatives and held-out -------------------------------------------------------------------------------------


def with_negatives(index: Index, pairs: list[Pair], by_document: bool, progress: Progress | None = None) -> list[Pair]:
    """Each pair with hard negatives: the best BM25 and dense hits that are none of its query's targets (nor, for
    chunk targets, another chunk of the same document, which may well answer it too)."""
    targets: dict[str, set[str]] = {}
    for p in pairs:
        targets.setdefault(p.group, set()).update(p.targets)
    queries = {p.group: p.query for p in pairs}
    mined: dict[str, tuple[str, ...]] = {}
    for n, (group, wanted) in enumerate(targets.items()):
        query = queries[group]
        negatives: list[str] = []
        for mode in ("bm25", "dense"):
            hits = index.search(query, MINING_DEPTH, retrieval=mode)
            if not by_document:
                own = {h.path for h in hits if chunk_key(h.chunk_id) in wanted}
                hits = [h for h in hits if h.path not in own]
            kept = [h.text for h in hits if (h.path if by_document else chunk_key(h.chunk_id)) not in wanted]
            negatives.extend(kept[:NEGATIVES_PER_MODE])
        mined[group] = tuple(dict.fromkeys(negatives))
        if progress:
            progress("mining negatives", n + 1, len(targets))
    return [replace(p, negatives=p.negatives + mined[p.group]) for p in pairs]


def split_held_out(pairs: list[Pair], share: float, seed: int, at_most: int) -> tuple[list[Pair], list[Pair]]:
    """(train, held out): a seeded ``share`` of the queries (at most ``at_most``), all of a query's pairs on one
    side, so no held-out query was trained on."""
    groups = sorted({p.group for p in pairs})
    random.Random(seed).shuffle(groups)
    held = set(groups[: min(at_most, int(len(groups) * share))])
    return [p for p in pairs if p.group not in held], [p for p in pairs if p.group in held]
