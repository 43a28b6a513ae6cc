"""Retrieval: dense (FAISS), BM25 (FTS5) or hybrid, with filters, threshold, MMR and an optional reranker."""
