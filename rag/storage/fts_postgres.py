"""BM25 on PostgreSQL, over a generated ``tsvector`` column with a GIN index.

PostgreSQL's own rankings (``ts_rank``, ``ts_rank_cd``) use no corpus statistics: a rare word counts no more than
a common one, which costs them most of BM25's quality (docs/postgres.md measures both). Debian packages no BM25
extension, so the score is computed here in SQL, as FTS5 computes it: each query lexeme's document frequency
(counted through the GIN index, cached per generation), its term frequency in a chunk (the positions the tsvector
keeps), and the chunk's length against the mean (in the embedder's tokens, which the chunks table records).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Connection

from rag.storage.fts import MAX_QUERY_TERMS, filter_sql
from rag.types import Filters

# English stemming (Snowball) and stop words: the nearest to FTS5's porter tokenizer PostgreSQL ships.
TS_CONFIG = "english"
DDL = (
    "ALTER TABLE chunks ADD COLUMN IF NOT EXISTS fts tsvector "
    f"GENERATED ALWAYS AS (to_tsvector('{TS_CONFIG}', text)) STORED",
    "CREATE INDEX IF NOT EXISTS ix_chunks_fts ON chunks USING gin (fts)",
)
# Chosen on SciFact's train split against FTS5's fixed 1.2 and 0.75 (scripts/tune_postgres_fts.py, docs/postgres.md).
K1 = 0.9
B = 0.5


@dataclass
class CorpusStats:
    """What BM25 needs of the whole corpus, for one generation (a commit anywhere makes it stale)."""

    generation: int | None = None
    chunks: int = 0
    mean_length: float = 1.0
    df: dict[str, int] = field(default_factory=dict)


def _literal(lexeme: str) -> str:
    """``lexeme`` as a tsquery operand, taken verbatim (no parsing or stemming again)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def bm25(
    conn: Connection, query: str, k: int, filters: Filters | None, stats: CorpusStats, generation: int
) -> list[tuple[int, float]]:
    """Top ``k`` (chunk id, BM25 score) for the words of ``query``, OR-ed, best first."""
    lexemes = conn.execute(text(f"SELECT tsvector_to_array(to_tsvector('{TS_CONFIG}', :q))"), {"q": query}).scalar()
    lexemes = list(lexemes or [])[:MAX_QUERY_TERMS]
    if not lexemes or k < 1:
        return []
    if stats.generation != generation:
        row = conn.execute(text("SELECT count(*), avg(token_count) FROM chunks")).one()
        stats.generation, stats.chunks, stats.mean_length, stats.df = generation, int(row[0]), float(row[1] or 1), {}
    for lexeme in lexemes:
        if lexeme not in stats.df:
            count = "SELECT count(*) FROM chunks WHERE fts @@ CAST(:t AS tsquery)"
            stats.df[lexeme] = int(conn.execute(text(count), {"t": _literal(lexeme)}).scalar() or 0)
    n = stats.chunks
    idf = [math.log(1 + (n - stats.df[t] + 0.5) / (stats.df[t] + 0.5)) for t in lexemes]
    where, params = filter_sql(conn, filters)
    sql = (
        "SELECT c.id, sum(w.idf * cardinality(u.positions) * :k1p1 / (cardinality(u.positions) "
        "+ :k1 * (1 - :b + :b * c.token_count / :mean))) AS score "
        "FROM chunks c CROSS JOIN LATERAL unnest(c.fts) AS u(lexeme, positions, weights) "
        "JOIN unnest(CAST(:terms AS text[]), CAST(:idfs AS float8[])) AS w(term, idf) ON w.term = u.lexeme"
        + (" JOIN documents d ON d.id = c.document_id" if where else "")
        + " WHERE c.fts @@ CAST(:q AS tsquery)"
        + (f" AND {where}" if where else "")
        + " GROUP BY c.id ORDER BY score DESC, c.id LIMIT :k"
    )
    values = {
        "k1p1": K1 + 1,
        "k1": K1,
        "b": B,
        "mean": stats.mean_length,
        "terms": lexemes,
        "idfs": idf,
        "q": " | ".join(_literal(t) for t in lexemes),
        "k": k,
        **params,
    }
    return [(int(i), float(s)) for i, s in conn.execute(text(sql), values)]
