"""Exact dense search by vector over a namespace prefix, which ContextMemory has no method for.

``ContextMemory.search`` takes a text; a vector store must also search by a caller's vector
(``similarity_search_by_vector``, MMR). This goes to the memory's FAISS index and SQLite store
the way ``ContextMemory.search`` does, under the memory's own lock (the index is not safe to
search while another thread adds to it). It is the one place this package touches the core's
internals; a public ``ContextMemory.search_by_vector`` would replace it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.namespaces import Namespace


def dense_search(
    memory: ContextMemory, vector: np.ndarray, prefix: Namespace, k: int, filters: dict[str, Any] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``k`` ``(ids, cosine scores, stored vectors)`` under ``prefix`` matching ``filters``.

    Ties are broken by id. The query vector is L2-normalised here, so any scale works.
    """
    q = np.asarray(vector, dtype=np.float32).reshape(-1)  # (d,)
    norm = float(np.linalg.norm(q))
    if norm > 0:
        q = q / norm
    with memory._guard:  # the memory's lock: FAISS must not be searched during an add
        index = memory.index
        if q.shape[0] != index.dim:
            raise ValueError(f"query vector has {q.shape[0]} dimensions, the memory's encoder has {index.dim}")
        allowed = memory.store.ids_in(prefix, filters)
        ids, scores = index.search(q, k, allowed)
        vectors = memory.store.vectors(ids.tolist(), index.dim) if len(ids) else np.zeros((0, index.dim), np.float32)
    return ids, scores, vectors  # (n,), (n,), (n, d)
