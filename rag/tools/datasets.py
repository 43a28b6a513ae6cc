"""Evaluation data on disk: BEIR folders (corpus, queries, qrels) and QA files (questions with gold answers).

A BEIR corpus is written out as one ``.txt`` per document (title, blank line, text) in a cache folder, so that
``rag eval`` indexes it through the real ingest path.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import ConfigError, SourceNotFoundError


@dataclass(frozen=True)
class BeirData:
    """A BEIR folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels-<split>.tsv`` (or ``qrels/<split>.tsv``)."""

    folder: Path
    queries: dict[str, str]  # query id -> text, only those judged in the split
    qrels: dict[str, dict[str, float]]  # query id -> {doc id: relevance}


def is_beir(folder: Path) -> bool:
    return (folder / "corpus.jsonl").is_file() and (folder / "queries.jsonl").is_file()


def _qrels_path(folder: Path, split: str) -> Path:
    for path in (folder / f"qrels-{split}.tsv", folder / "qrels" / f"{split}.tsv"):
        if path.is_file():
            return path
    found = sorted(p.name for p in [*folder.glob("qrels-*.tsv"), *folder.glob("qrels/*.tsv")])
    raise ConfigError(
        f"{folder} has no qrels for split {split!r} (qrels-{split}.tsv or qrels/{split}.tsv); "
        f"found: {', '.join(found) or 'none'}; pass --split with one of those"
    )


def load_beir(folder: Path, split: str) -> BeirData:
    """The queries of ``split`` that have at least one relevant document, with their judgments."""
    qrels: dict[str, dict[str, float]] = {}
    path = _qrels_path(folder, split)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        parts = line.split("\t")
        if (n == 0 and parts[0] == "query-id") or not line.strip():
            continue
        if len(parts) < 3:
            raise ConfigError(f"{path}:{n + 1}: expected 'query-id<TAB>corpus-id<TAB>score'")
        if float(parts[2]) > 0:
            qrels.setdefault(parts[0], {})[parts[1]] = float(parts[2])
    queries = {}
    for row in _read_jsonl(folder / "queries.jsonl"):
        qid = str(row["_id"])
        if qid in qrels:
            queries[qid] = row["text"]
    missing = set(qrels) - set(queries)
    if missing:
        raise ConfigError(f"{path} judges {len(missing)} queries missing from queries.jsonl, e.g. {min(missing)}")
    return BeirData(folder, queries, qrels)


def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{n}: not JSON ({e.msg}); fix or remove the line") from None


# A reference answer longer than this many words is a passage, not a fact.
LONG_ANSWER_WORDS = 12
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _file_name(doc_id: str) -> str:
    # Ids are arbitrary strings; a readable, collision-free file name: safe characters plus a short hash if changed.
    safe = _UNSAFE.sub("_", doc_id)[:80]
    if safe != doc_id:
        safe += "-" + hashlib.sha1(doc_id.encode()).hexdigest()[:8]
    return safe + ".txt"


def beir_workspace(folder: Path, cache_dir: Path) -> Path:
    """The cache folder for a BEIR corpus, keyed by its location and content (size, mtime)."""
    corpus = (folder / "corpus.jsonl").resolve()
    st = corpus.stat()
    key = hashlib.sha256(f"{corpus}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir / "eval" / f"{folder.resolve().name}-{key}"


def materialise_beir(folder: Path, workspace: Path) -> tuple[Path, dict[str, str]]:
    """Write one ``.txt`` per corpus document under ``workspace/docs`` (once); returns it and file name -> doc id.

    Files are written only when missing or different, so their mtimes stay put and a re-run re-embeds nothing.
    """
    docs = workspace / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for row in _read_jsonl(folder / "corpus.jsonl"):
        doc_id = str(row["_id"])
        name = _file_name(doc_id)
        names[name] = doc_id
        title, text = (row.get("title") or "").strip(), (row.get("text") or "").strip()
        body = f"{title}\n\n{text}\n" if title else f"{text}\n"
        path = docs / name
        if not path.is_file() or path.read_text(encoding="utf-8") != body:
            path.write_text(body, encoding="utf-8")
    return docs, names


@dataclass(frozen=True)
class QAItem:
    """One question with gold answers and, optionally, the files that hold the answer (absolute paths)."""

    question: str
    answers: list[str]
    files: list[str] = field(default_factory=list)
    id: str = ""
    answerable: bool = True  # False: the documents do not answer it, and the right answer is to say so
    references: list[str] = field(default_factory=list)  # written explanations, beside the short answers

    @property
    def long(self) -> bool:
        """References that are passages rather than facts (a long answer never occurs verbatim in a chunk)."""
        return any(len(a.split()) > LONG_ANSWER_WORDS for a in self.answers)

    @property
    def passages(self) -> list[str]:
        """What a long answer is scored against (ROUGE-L, token recall): the references, else long answers."""
        return self.references or (self.answers if self.long else [])


def qa_paths(target: Path) -> tuple[Path, Path]:
    """(questions file, docs folder) for a QA target: a ``questions.jsonl`` file or a folder holding one.

    The docs folder is ``docs/`` next to the questions file when there is one, else the questions file's folder.
    """
    questions = target / "questions.jsonl" if target.is_dir() else target
    if not questions.is_file():
        raise SourceNotFoundError(
            f"{target} is neither a BEIR folder (corpus.jsonl, queries.jsonl, qrels-*.tsv) nor a QA file "
            "(questions.jsonl); give one of those"
        )
    docs = questions.parent / "docs"
    return questions, docs if docs.is_dir() else questions.parent


def load_qa(path: Path, split: str = "all", limit: int | None = None) -> list[QAItem]:
    """Questions of ``split``: ``tune`` = even line index (0, 2, ...), ``test`` = odd, ``all`` = every line;
    ``limit`` of them spread evenly over the split.

    Each line needs ``question`` and ``answers`` (a list of strings); ``doc_file``, ``doc_files`` or ``files``
    (paths relative to the questions file's folder) name the gold files. ``"answerable": false`` marks a question
    the documents do not answer; ``reference`` or ``references`` hold written explanations that long answers
    are scored against.
    """
    if split not in ("tune", "test", "all"):
        raise ConfigError(f"--split {split!r} is not one of tune, test, all for a QA file")
    items = []
    for n, row in enumerate(_read_jsonl(path)):
        if (split == "tune" and n % 2) or (split == "test" and not n % 2):
            continue
        if "question" not in row or not isinstance(row.get("answers", []), list):
            raise ConfigError(f"{path}: line {n + 1} needs 'question' and 'answers' (a list of strings)")
        files = row.get("files") or row.get("doc_files") or ([row["doc_file"]] if row.get("doc_file") else [])
        items.append(
            QAItem(
                row["question"],
                [str(a) for a in row.get("answers", [])],
                [str((path.parent / f).resolve()) for f in files],
                str(row.get("id", n)),
                row.get("answerable", True) is not False,
                [str(r) for r in row.get("references") or ([row["reference"]] if row.get("reference") else [])],
            )
        )
    if not items:
        raise ConfigError(f"{path} has no questions in split {split!r}")
    # Spread over the file: QA files are grouped by article, so the first N would cover only a few.
    return items[:: max(1, len(items) // limit)][:limit] if limit else items
