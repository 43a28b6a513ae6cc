"""Choose the teacher's BM25 weight for unlabelled `rag tune` (rag/tools/teacher.py) on a BEIR train split.

    python scripts/teacher_weight.py ../shared/eval/scifact --split train [--minutes 8] [--weights 0.3 0.6 1.0]

Uses the index `rag eval` builds for the folder (run `rag eval FOLDER --split train` first) and none of its
labels for training: the queries are cut from its chunks and their negatives mined once, as `rag tune` does;
then, for each weight, the teacher scores them and the base embedder is fine-tuned for --minutes. Each model is
scored by dense nDCG@10 of the split's judged queries over a sample of the corpus (every judged document and a
seeded sample of the rest, --docs in all, each embedded whole): a proxy that takes about two minutes a model
where re-embedding every chunk would take five. Never point it at a test split when choosing defaults.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

from rag import Config, Index
from rag.models.tuning import Example, TrainSettings, fine_tune
from rag.tools.datasets import beir_workspace, load_beir
from rag.tools.evaluate import _index_dir
from rag.tools.metrics import ndcg_at_k
from rag.tools.pairs import split_held_out, synthetic_pairs, with_negatives
from rag.tools.teacher import with_teacher
from rag.tools.tune import HELD_OUT_MAX, HELD_OUT_SHARE, SYNTHETIC_QUERIES


def _documents(folder: Path, judged: set[str], size: int, seed: int) -> dict[str, str]:
    corpus = {}
    for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        corpus[row["_id"]] = f"{row.get('title', '')}\n\n{row['text']}".strip()
    rest = sorted(set(corpus) - judged)
    random.Random(seed).shuffle(rest)
    return {d: corpus[d] for d in sorted(judged & set(corpus)) + rest[: max(size - len(judged), 0)]}


def _dense_ndcg(
    location: str, queries: dict[str, str], qrels: dict[str, dict[str, float]], docs: dict[str, str]
) -> float:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(location, device="cpu", local_files_only=True)
    ids = list(docs)
    d = model.encode([docs[i] for i in ids], batch_size=32, normalize_embeddings=True)
    q = model.encode(list(queries.values()), batch_size=64, normalize_embeddings=True)
    top = np.argsort(-(q @ d.T), axis=1)[:, :10]
    return float(np.mean([ndcg_at_k([ids[i] for i in row], qrels[qid]) for qid, row in zip(queries, top, strict=True)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--split", default="train")
    p.add_argument("--minutes", type=float, default=8.0, help="training budget per weight (8)")
    p.add_argument("--weights", type=float, nargs="+", default=[0.3, 0.6, 1.0])
    p.add_argument("--docs", type=int, default=2500, help="corpus sample the models are scored on (2500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the scores here")
    args = p.parse_args()
    if args.split == "test":
        raise SystemExit("choose on a train split; the test split is for reporting only")
    config = Config.load()
    data = load_beir(args.folder, args.split)
    docs = _documents(args.folder, {d for j in data.qrels.values() for d in j}, args.docs, args.seed)
    directory = _index_dir(beir_workspace(args.folder, config.cache_dir), config)
    if not (directory / "index.db").exists():
        raise SystemExit(f"no eval index at {directory}; run `rag eval {args.folder} --split {args.split}` first")
    scores = {}
    with Index.open(directory, config=config) as index, tempfile.TemporaryDirectory() as out:
        base = index.embedder.source
        scores["untuned"] = _dense_ndcg(base.location, data.queries, data.qrels, docs)
        print(f"untuned: {scores['untuned']:.4f}", flush=True)
        pairs = synthetic_pairs(index, SYNTHETIC_QUERIES, args.seed)
        train, _ = split_held_out(pairs, HELD_OUT_SHARE, args.seed, HELD_OUT_MAX)
        train = with_negatives(index, train, by_document=False)
        for weight in args.weights:
            scored = with_teacher(index, train, args.seed, weight=weight)
            examples = [Example(q.query, q.positive, q.negatives, q.teacher) for q in scored]
            folder = Path(out) / f"w{weight}"
            fine_tune(base, examples, folder, TrainSettings(minutes=args.minutes, seed=args.seed))
            scores[f"{weight:g}"] = _dense_ndcg(str(folder), data.queries, data.qrels, docs)
            print(f"BM25 weight {weight:g}: {scores[f'{weight:g}']:.4f}", flush=True)
    print(f"| BM25 weight | {' | '.join(scores)} |\n|---|{'---|' * len(scores)}")
    print(f"| {args.split} queries, dense nDCG@10 | {' | '.join(f'{v:.4f}' for v in scores.values())} |")
    if args.json:
        args.json.write_text(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()
