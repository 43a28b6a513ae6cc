"""The FAISS side of the store: L2-normalised float32 vectors keyed by chunk id, so inner product is cosine.

A derived cache: everything here can be rebuilt from the vectors SQLite keeps. faiss and numpy are imported lazily
so that `import rag` stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


class VectorIndex:
    """Exact inner-product search over (id, vector) pairs."""

    def __init__(self, dim: int, index=None) -> None:  # index: faiss.IndexIDMap2
        import faiss

        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

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
            self._index.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64)))

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
        if allowed is None:
            scores, ids = self._index.search(x, min(k, n))
        else:
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            scores, ids = self._index.search(x, min(k, n), params=faiss.SearchParameters(sel=selector))
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

        return faiss.vector_to_array(self._index.id_map).copy()

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
        faiss.write_index(self._index, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, dim: int) -> VectorIndex:
        import faiss

        index = faiss.read_index(str(path))
        if index.d != dim:
            raise ValueError(f"{path} holds {index.d}-dimensional vectors, expected {dim}")
        return cls(dim, index)
