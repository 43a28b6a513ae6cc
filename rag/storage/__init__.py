"""The index on disk: SQLite through SQLAlchemy is the truth, the FAISS file a cache rebuilt from it."""
