"""Full-text search over the chunks with SQLite's FTS5 (BM25), and document filters as SQL on either engine.

An external-content FTS5 table reads the text from ``chunks``, and triggers keep its index in step with every
write to ``chunks`` inside the writer's own transaction. PostgreSQL's counterpart is fts_postgres.py.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from rag.types import Filters

# Porter stemming over unicode61 words (diacritics folded): scored best on SciFact train (docs/retrieval.md).
FTS_TOKENIZE = "porter unicode61 remove_diacritics 2"
# Deletes cascaded from `documents` fire the delete trigger too.
_FTS_DDL = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5("
    f"text, content='chunks', content_rowid='id', tokenize='{FTS_TOKENIZE}')",
    "CREATE TRIGGER IF NOT EXISTS chunks_fts_insert AFTER INSERT ON chunks BEGIN "
    "INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS chunks_fts_delete AFTER DELETE ON chunks BEGIN "
    "INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER IF NOT EXISTS chunks_fts_update AFTER UPDATE OF id, text ON chunks BEGIN "
    "INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text); END",
)
_FTS_OBJECTS = ("chunks_fts", "chunks_fts_insert", "chunks_fts_delete", "chunks_fts_update")
_WORD = re.compile(r"\w+")
MAX_QUERY_TERMS = 64


def ensure_fts(conn: Connection) -> None:
    """Create the FTS5 table and its triggers when missing, indexing the chunks already stored."""
    names = "SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger') AND name LIKE 'chunks_fts%'"
    present = set(conn.execute(text(names)).scalars().all())
    if present >= set(_FTS_OBJECTS):
        return
    for statement in _FTS_DDL:
        conn.execute(text(statement))
    if "chunks_fts" not in present:
        conn.execute(text("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')"))


def _terms(query: str) -> list[str]:
    return list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:MAX_QUERY_TERMS]


def fts_query(query: str) -> str:
    """A MATCH expression for arbitrary user text: its words, each quoted, OR-ed (BM25 ranks partial matches).

    Quoting makes FTS5 operators and syntax in the text (AND, NEAR, *, ", :, ^) plain words; '' for no words.
    """
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in _terms(query))


def path_matches(path: str | None, pattern: str | None) -> bool:
    """fnmatch ``pattern`` against the whole path or any tail of it after a '/' (so ``*.md``, ``docs/*``)."""
    if path is None or pattern is None:
        return False
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, "*/" + pattern.lstrip("/"))


def filter_sql(conn: Connection, filters: Filters | None) -> tuple[str, dict[str, Any]]:
    """SQL conditions on the `documents` row ``d`` for ``filters``, and their parameters."""
    if filters is None:
        return "", {}
    clauses, params = [], {}
    if filters.path is not None and conn.dialect.name == "sqlite":
        clauses.append("rag_glob(d.path, :f_path)")
        params["f_path"] = filters.path
    elif filters.path is not None:
        # fnmatch semantics in Python, over the documents (far fewer than chunks); the ids go in as one array.
        rows = conn.execute(text("SELECT id, path FROM documents"))
        clauses.append("d.id = ANY(:f_ids)")
        params["f_ids"] = [i for i, path in rows if path_matches(path, filters.path)]
    if filters.kinds:
        names = [f"f_kind{i}" for i in range(len(filters.kinds))]
        clauses.append(f"d.kind IN ({', '.join(':' + n for n in names)})")
        params.update(zip(names, filters.kinds, strict=True))
    if filters.modified_since is not None:
        clauses.append("d.mtime >= :f_since")
        params["f_since"] = filters.modified_since
    return " AND ".join(clauses), params


def bm25(conn: Connection, query: str, k: int, filters: Filters | None = None) -> list[tuple[int, float]]:
    """Top ``k`` (chunk id, BM25 score) for the words of ``query``, best first; higher scores are better.

    ``filters`` restrict the documents inside the query, so ``k`` results come back whenever that many match.
    """
    match = fts_query(query)
    if not match or k < 1:
        return []
    where, params = filter_sql(conn, filters)
    if where:
        sql = (
            "SELECT chunks_fts.rowid, -bm25(chunks_fts) FROM chunks_fts "
            "JOIN chunks c ON c.id = chunks_fts.rowid JOIN documents d ON d.id = c.document_id "
            f"WHERE chunks_fts MATCH :match AND {where} ORDER BY bm25(chunks_fts) LIMIT :k"
        )
    else:
        sql = "SELECT rowid, -bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH :match ORDER BY rank LIMIT :k"
    rows = conn.execute(text(sql), {"match": match, "k": k, **params})
    return [(int(i), float(s)) for i, s in rows]


def filtered_chunk_ids(conn: Connection, filters: Filters) -> list[int]:
    """Ids of the chunks whose documents pass ``filters``."""
    where, params = filter_sql(conn, filters)
    sql = "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id"
    return list(conn.execute(text(sql + (f" WHERE {where}" if where else "")), params).scalars())
