"""Where models come from and how they run: the embedder, the reranker, the generator and its decoding backends."""
