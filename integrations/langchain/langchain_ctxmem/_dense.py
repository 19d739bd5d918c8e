"""Dense search by vector over a namespace prefix, in the array form the vector store works with.

``ContextMemory.search_by_vector`` does the search (under the memory's lock); this turns its hits
into ``(ids, cosines, vectors)`` for ``similarity_search_by_vector`` and MMR.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxmem_plugin.api import MemoryAPI
from ctxmem_plugin.namespaces import Namespace


def dense_search(
    memory: MemoryAPI, vector: np.ndarray, prefix: Namespace, k: int, filters: dict[str, Any] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``k`` ``(ids, cosine scores, stored vectors)`` under ``prefix`` matching ``filters``.

    Ties are broken by id. The query vector is L2-normalised, so any scale works. A hit deleted
    by another thread between the search and the vector lookup is left out.
    """
    hits = memory.search_by_vector(vector, prefix, k=k, filters=filters)
    stored = memory.vectors([h.id for h in hits])
    kept = [h for h in hits if h.id in stored]
    ids = np.array([h.id for h in kept], dtype=np.int64)  # (n,)
    scores = np.array([h.score for h in kept], dtype=np.float32)  # (n,)
    dim = len(np.asarray(vector).reshape(-1))
    vectors = np.stack([stored[h.id] for h in kept]) if kept else np.zeros((0, dim), np.float32)  # (n, d)
    return ids, scores, vectors
