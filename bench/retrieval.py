"""Top-10 latency and recall@10 against exact search, for the index kinds the store uses (rag/vectors.py).

Synthetic vectors stand in for a large corpus: unit vectors drawn around random topic centres (a Gaussian
mixture), which, like sentence embeddings, cluster; uniformly random vectors would have no structure for an
approximate index to use and would understate its recall. Queries are fresh draws from the same mixture.
"""

from __future__ import annotations

import time
from typing import Any


def synthetic(n: int, dim: int, seed: int, centres: int | None = None, spread: float = 0.08):
    """(n, dim) float32 unit vectors around ``centres`` topic centres."""
    import numpy as np

    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres or max(8, n // 1000), dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks: bounded temporaries at 1M
        m = min(100_000, n - start)
        block = c[rng.integers(0, len(c), m)] + spread * rng.standard_normal((m, dim)).astype(np.float32)
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out, c


def run(sizes: list[int], nprobes: list[int], queries: int = 200, dim: int = 384, k: int = 10) -> list[dict[str, Any]]:
    import numpy as np

    from rag.storage.vectors import VectorIndex, ivf_nlist
    from rag.tools.metrics import recall_at_k

    rows = []
    for n in sizes:
        data, centres = synthetic(n, dim, seed=n)
        # Queries: fresh draws around the data's own centres.
        rng = np.random.default_rng(n + 2)
        q = centres[rng.integers(0, len(centres), queries)] + 0.08 * rng.standard_normal((queries, dim)).astype(
            np.float32
        )
        q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
        ids = np.arange(n, dtype=np.int64)
        flat = VectorIndex(dim)
        flat.add(ids, data)
        truth = [[i for i, _ in flat.search(v, k)] for v in q]
        rows.append(_measure(n, "flat", {}, flat, q, truth, k, 0.0, recall_at_k))
        if n < 2000:
            continue
        started = time.perf_counter()
        nlist = ivf_nlist(n)
        sample = data[np.random.default_rng(0).choice(n, min(n, 40 * nlist), replace=False)]
        ivf = VectorIndex.ivf(dim, sample, nlist)
        ivf.add(ids, data)
        build = time.perf_counter() - started
        for nprobe in nprobes:
            ivf._index.nprobe = nprobe
            rows.append(_measure(n, "ivf", {"nlist": nlist, "nprobe": nprobe}, ivf, q, truth, k, build, recall_at_k))
        del ivf, flat, data
    return rows


def _measure(n, kind, params, index, queries, truth, k, build_s, recall_at_k) -> dict[str, Any]:
    import numpy as np

    times, recalls = [], []
    for v, exact in zip(queries, truth, strict=True):
        t = time.perf_counter()
        got = [i for i, _ in index.search(v, k)]
        times.append(time.perf_counter() - t)
        recalls.append(recall_at_k(got, set(exact), k))
    return {
        "vectors": n,
        "kind": kind,
        **params,
        "build_s": round(build_s, 1),
        "median_ms": float(np.median(times) * 1000),
        "p95_ms": float(np.percentile(times, 95) * 1000),
        "recall@10": float(np.mean(recalls)),
    }
