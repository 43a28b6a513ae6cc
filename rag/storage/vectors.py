"""The FAISS side of the store: L2-normalised float32 vectors keyed by chunk id, so inner product is cosine.

A derived cache: everything here can be rebuilt from the vectors SQLite keeps. faiss and numpy are imported lazily
so that `import rag` stays light.

Two kinds of index:

- ``flat``: exact inner-product search (IndexIDMap2 over IndexFlatIP). Used while the index is small: at 100k
  chunks a query scans 150 MB in a few milliseconds, and results are exact.
- ``ivf``: an inverted file (IndexIVFFlat, inner product): vectors are grouped around ``nlist`` (about sqrt(n))
  k-means centroids and a query scans only the ``nprobe`` nearest groups. Chosen over HNSW because it supports
  ``remove_ids`` (a changed or deleted document removes its chunks in place; FAISS's HNSW cannot remove), builds
  in a fraction of HNSW's time, and stores no graph. Its recall and latency at 10k-1M vectors are measured by
  ``python -m bench retrieval`` (bench/RESULTS.md).

The store switches kinds on rebuild (see :meth:`rag.storage.store.Store.save_vectors`); the kind and its parameters are
recorded in the index meta and shown by ``rag status``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# From this many vectors on, a rebuild makes an approximate (IVF) index; below it, exact search is fast enough.
ANN_MIN_VECTORS = 100_000
# Groups scanned per query: recall@10 against exact search stays near 1 at 1M vectors (bench/RESULTS.md).
DEFAULT_NPROBE = 16


def ivf_nlist(n: int) -> int:
    """Groups for ``n`` vectors: about sqrt(n), at least 16. Fewer, larger groups than FAISS's 4-16 * sqrt(n)
    guideline: training k-means at 1M vectors stays minutes rather than an hour on two cores, and a query still
    scans only ``nprobe`` groups of ~1k vectors."""
    return max(16, int(math.sqrt(n)))


class VectorIndex:
    """Inner-product search over (id, vector) pairs, exact (``flat``) or approximate (``ivf``)."""

    def __init__(self, dim: int, index=None) -> None:  # index: faiss.IndexIDMap2 or faiss.IndexIVFFlat
        import faiss

        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    @classmethod
    def ivf(cls, dim: int, training: np.ndarray, nlist: int | None = None, nprobe: int = DEFAULT_NPROBE) -> VectorIndex:
        """An empty IVF index whose centroids are trained on ``training`` (a sample of the vectors to come)."""
        import faiss
        import numpy as np

        nlist = min(nlist or ivf_nlist(len(training)), max(1, len(training) // 39))  # FAISS wants ~39 points each
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(np.ascontiguousarray(training, dtype=np.float32))
        index.nprobe = min(nprobe, nlist)
        # A hash-table id map: reconstruct(id) works (as on the flat index) and still allows remove_ids.
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        index.own_fields = True
        quantizer.this.disown()  # the IVF index owns its quantizer now
        return cls(dim, index)

    @property
    def kind(self) -> str:
        return "ivf" if hasattr(self._index, "nprobe") else "flat"

    def describe(self) -> dict[str, Any]:
        """The kind and its parameters, for the index meta and `rag status`."""
        if self.kind == "ivf":
            return {
                "kind": "ivf",
                "metric": "inner_product",
                "nlist": int(self._index.nlist),
                "nprobe": int(self._index.nprobe),
                "vectors": len(self),
            }
        return {"kind": "flat", "metric": "inner_product", "exact": True, "vectors": len(self)}

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """``ids``: (n,) int64; ``vectors``: (n, dim) float32, L2-normalised."""
        import numpy as np

        if len(ids):
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))

    def remove(self, ids: list[int]) -> None:
        import faiss
        import numpy as np

        if ids:
            array = np.asarray(ids, dtype=np.int64)
            if self.kind == "ivf":  # its hash-table id map removes only through an explicit id array
                self._index.remove_ids(faiss.IDSelectorArray(len(array), faiss.swig_ptr(array)))
            else:
                self._index.remove_ids(faiss.IDSelectorBatch(array))

    def search(self, query: np.ndarray, k: int, allowed: list[int] | None = None) -> list[tuple[int, float]]:
        """Top ``k`` (chunk id, cosine) for one (dim,) query vector, best first.

        ``allowed``: search only these ids (a FAISS id selector, so the top ``k`` among them come back).
        """
        import faiss
        import numpy as np

        n = len(self) if allowed is None else min(len(self), len(allowed))
        if n == 0:
            return []
        x = np.asarray(query, dtype=np.float32).reshape(1, -1)
        params = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            if self.kind == "ivf":  # IVF takes only its own parameter type
                params = faiss.SearchParametersIVF(sel=selector, nprobe=self._index.nprobe)
            else:
                params = faiss.SearchParameters(sel=selector)
        # One query: FAISS's OpenMP threads cost more to wake than they save (and stall on a busy machine).
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            scores, ids = self._index.search(x, min(k, n), params=params)
        finally:
            faiss.omp_set_num_threads(threads)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def vectors(self, ids: list[int]) -> dict[int, np.ndarray]:
        """The stored vectors of ``ids`` (ids not in the index are left out)."""
        out = {}
        for i in ids:
            try:
                out[i] = self._index.reconstruct(int(i))
            except RuntimeError:  # not in the index
                continue
        return out

    def ids(self) -> np.ndarray:
        import faiss
        import numpy as np

        if self.kind == "flat":
            return faiss.vector_to_array(self._index.id_map).copy()
        lists = self._index.invlists
        parts = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(lists.nlist)
            if lists.list_size(i)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All (ids (n,), vectors (n, dim)) held, in the same order."""
        import faiss
        import numpy as np

        n = len(self)
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        return self.ids(), faiss.downcast_index(self._index.index).reconstruct_n(0, n)

    def save(self, path: Path) -> None:
        """Write to a temporary file and rename it into place, so readers never see half a file."""
        import faiss

        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            faiss.write_index(self._index, str(tmp))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:  # disk full (faiss raises RuntimeError), Ctrl-C: leave no half file behind
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path, dim: int) -> VectorIndex:
        import faiss

        index = faiss.read_index(str(path))
        if index.d != dim:
            raise ValueError(f"{path} holds {index.d}-dimensional vectors, expected {dim}")
        return cls(dim, index)
