"""`rag serve`: the Python API over HTTP, in the OpenAI chat-completions shape (rag/server/app.py)."""
