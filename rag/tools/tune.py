"""`rag tune`: fine-tune the index's embedder on pairs from its own documents, switch the index to the tuned model,
and show retrieval on held-out queries before and after.

The steps, each resumable where it is slow:

1. pairs: labelled (a BEIR folder's qrels, or a JSONL of query/positive) or cut from the index's chunks
   (rag/tools/pairs.py); a seeded share of the queries is held out and never trained on;
2. "before": nDCG@10 of the held-out queries against the index as it is;
3. hard negatives mined from the index (for cut queries, with a teacher's scores: rag/tools/teacher.py), then
   training within the time budget (rag/models/tuning.py), saved as a sentence-transformers folder under
   ``<index>/models/``;
4. the switch: the stored chunks are re-embedded into the shadow vector set while searches keep the old vectors,
   then swapped in by one transaction, keeping the old set for ``--rollback``. Killed during the re-embed, the
   next `rag tune` finishes it (from the last committed batch) instead of training again;
5. "after": the same held-out queries against the tuned index.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.errors import ConfigError
from rag.models.tuning import Example, TrainProgress, TrainSettings, fine_tune, read_record
from rag.tools.metrics import ndcg_at_k
from rag.tools.pairs import Pair, found_keys, load_pairs, split_held_out, synthetic_pairs, with_negatives
from rag.tools.teacher import with_teacher

if TYPE_CHECKING:
    from ingest.pipeline import Progress as IngestProgress
    from rag.api import Index

MODES = ("dense", "bm25", "hybrid")
HELD_OUT_SHARE = 0.1
HELD_OUT_MAX = 200
SYNTHETIC_QUERIES = 3000  # pairs cut from the chunks when no labels are given
# Hits looked at per held-out query: enough chunks to rank 10 distinct documents.
DEPTH = 30

Progress = Callable[[str, int, int], None]
# Queries cut from the chunks are not the questions people ask: on SciFact, trained without a teacher, their
# held-out score rose while the real test queries scored worse (docs/tuning.md), so an unlabelled run says how to
# check it on real questions.
SYNTHETIC_CAVEAT = (
    "the held-out queries were cut from your chunks, not asked by people; check the tuned model on real questions "
    "(`rag eval QUESTIONS --embedder`) and `rag tune --rollback` if it does worse"
)


@dataclass
class TuneReport:
    """What a `rag tune` run did, and held-out nDCG@10 per retrieval mode before and after."""

    model: str  # the tuned model's folder, relative to the index
    base: str  # the model it was tuned from
    source: str  # "beir" | "jsonl" | "synthetic"
    pairs: int
    trained_on: int
    held_out_queries: int
    before: dict[str, float]
    after: dict[str, float]
    training: dict[str, Any]
    reembedded: int
    seconds: float
    resumed: bool = False
    index: str = ""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def held_out_scores(index: Index, held: list[Pair], by_document: bool) -> dict[str, float]:
    """Mean nDCG@10 of the held-out queries in each mode: documents ranked (BEIR) or chunks."""
    targets: dict[str, set[str]] = {}
    queries: dict[str, str] = {}
    for p in held:
        targets.setdefault(p.group, set()).update(p.targets)
        queries[p.group] = p.query
    scores = {}
    for mode in MODES:
        values = []
        for group, wanted in targets.items():
            hits = index.search(queries[group], DEPTH, retrieval=mode)
            values.append(ndcg_at_k(found_keys(hits, by_document), dict.fromkeys(wanted, 1.0), 10))
        scores[mode] = sum(values) / len(values) if values else 0.0
    return scores


def tune(
    index: Index,
    *,
    pairs: Path | None = None,
    split: str = "train",
    settings: TrainSettings | None = None,
    synthetic: int = SYNTHETIC_QUERIES,
    progress: Progress | None = None,
    train_progress: Callable[[TrainProgress], None] | None = None,
    reembed_progress: Callable[[IngestProgress], None] | None = None,
) -> TuneReport:
    """Tune ``index``'s embedder on ``pairs`` (a BEIR folder or JSONL; None: queries cut from its chunks),
    switch the index to the tuned model and report held-out retrieval before and after."""
    settings = settings or TrainSettings()
    started = time.monotonic()
    if (unfinished := _unfinished(index)) is not None:
        return _finish(index, unfinished, started, reembed_progress, resumed=True)
    if index.counts()[1] == 0 and pairs is None:
        raise ConfigError(f"index {index.store.directory} is empty; ingest documents before tuning on them")
    if pairs is not None:
        found = load_pairs(pairs, split, index)
        source = "beir" if pairs.is_dir() else "jsonl"
    else:
        found = synthetic_pairs(index, synthetic, settings.seed, progress)
        source = "synthetic"
    by_document = source == "beir"
    train, held = split_held_out(found, HELD_OUT_SHARE, settings.seed, HELD_OUT_MAX)
    if not train or not held:
        raise ConfigError(f"{len({p.group for p in found})} queries are too few to train on and hold some out")
    if progress:
        progress("scoring before", 0, 1)
    before = held_out_scores(index, held, by_document)
    train = with_negatives(index, train, by_document, progress)
    if source == "synthetic":  # noisy labels: learn a teacher's margins instead (rag/tools/teacher.py)
        train = with_teacher(index, train, settings.seed, progress=progress)
    base = index.embedder.source
    built = index.store.meta.get("embedder") or {}
    root = built.get("tuned", {}).get("base") or {"name": base.name, "identity": base.identity}
    folder = _new_folder(index)
    examples = [Example(p.query, p.positive, p.negatives, p.teacher) for p in train]
    record = {
        "base": root,
        "tuned_from": {"name": base.name, "identity": base.identity},
        "source": source,
        "pairs": len(found),
        "trained_on": len(train),
        "by_document": by_document,
        "held_out": [{"group": p.group, "query": p.query, "targets": sorted(p.targets)} for p in held],
        "before": before,
    }
    fine_tune(base, examples, folder, settings, progress=train_progress, record=record)
    return _finish(index, folder, started, reembed_progress, resumed=False)


def _unfinished(index: Index) -> Path | None:
    """The tuned model folder a killed run was switching the index to, if any."""
    pending = index.store.meta.get("embedder_next") or {}
    if "tuned" not in pending:
        return None
    folder = index.store.directory / pending["tuned"]["folder"]
    return folder if folder.is_dir() else None


def _finish(
    index: Index,
    folder: Path,
    started: float,
    reembed_progress: Callable[[IngestProgress], None] | None,
    *,
    resumed: bool,
) -> TuneReport:
    """Switch the index to the tuned model at ``folder`` and score the held-out queries again."""
    record = read_record(folder)
    if record is None:
        raise ConfigError(f"{folder} is not a model `rag tune` made (no tuning.json)")
    reembedded = index.use_tuned(folder, base=record["base"], progress=reembed_progress)
    held = [Pair(h["query"], "", frozenset(h["targets"]), h["group"]) for h in record["held_out"]]
    after = held_out_scores(index, held, record["by_document"])
    return TuneReport(
        model=folder.relative_to(index.store.directory).as_posix(),
        base=record["base"]["name"],
        source=record["source"],
        pairs=record["pairs"],
        trained_on=record["trained_on"],
        held_out_queries=len({h.group for h in held}),
        before=record["before"],
        after=after,
        training={**record["report"], **{k: record["settings"][k] for k in ("minutes", "seed")}},
        reembedded=reembedded,
        seconds=round(time.monotonic() - started, 1),
        resumed=resumed,
        index=str(index.store.directory),
        notes=[SYNTHETIC_CAVEAT] if record["source"] == "synthetic" else [],
    )


def _new_folder(index: Index) -> Path:
    from rag.indexing import TUNED_MODELS

    models = index.store.directory / TUNED_MODELS
    models.mkdir(parents=True, exist_ok=True)
    taken = {int(p.name.split("-")[1]) for p in models.glob("tuned-*") if p.name.split("-")[1].isdigit()}
    return models / f"tuned-{max(taken, default=0) + 1}"
