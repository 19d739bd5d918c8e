"""The dense index: FAISS ``IndexIDMap2`` over an exact inner-product index, keyed by turn id.

The index is derived data. Its file (``vectors.faiss``) is saved with the store generation it
matches (``vectors.json``); on open, a missing, unreadable or stale file is rebuilt or caught up
from SQLite by comparing id sets, so a crash between a commit and a save loses nothing.
Search is restricted to an explicit id set (the namespace prefix, from SQL) with an
``IDSelectorBatch``: other namespaces are never scored, not filtered out afterwards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ctxmem_plugin.errors import DependencyError

INDEX_NAME = "vectors.faiss"
STATE_NAME = "vectors.json"


def import_faiss() -> Any:
    """``import faiss`` with an error that says which package to install."""
    try:
        import faiss
    except ImportError as exc:
        raise DependencyError(
            "faiss is not installed: pip install 'ctxmem-plugin[cpu]' (faiss-cpu) "
            "or 'ctxmem-plugin[gpu]' (faiss-gpu); install exactly one of them"
        ) from exc
    return faiss


class VectorIndex:
    """An id-addressed exact FAISS index that can save itself next to the store.

    Args:
        dim: vector width.
        directory: where the index file lives; ``None`` keeps it in memory only.
    """

    def __init__(self, dim: int, directory: Path | None = None) -> None:
        self.faiss = import_faiss()
        self.dim = dim
        self.directory = directory
        self.index = self.faiss.IndexIDMap2(self.faiss.IndexFlatIP(dim))
        self.dirty = False

    # -- persistence ----------------------------------------------------------------------

    def load(self, generation: int) -> bool:
        """Load the saved index if it matches ``generation``; False when missing or stale."""
        if self.directory is None:
            return False
        path, state_path = self.directory / INDEX_NAME, self.directory / STATE_NAME
        if not path.is_file() or not state_path.is_file():
            return False
        try:
            state = json.loads(state_path.read_text())
            index = self.faiss.read_index(str(path))
        except (OSError, ValueError, RuntimeError):
            return False  # unreadable: rebuilt from SQLite by the caller, nothing is lost
        if not isinstance(state, dict) or index.d != self.dim or not isinstance(index, self.faiss.IndexIDMap2):
            return False  # a state file that is not {"generation": ...}: rebuilt like an unreadable one
        self.index = index
        return state.get("generation") == generation

    def save(self, generation: int) -> None:
        """Write the index atomically (temp file + rename), then the generation it matches."""
        if self.directory is None:
            return
        path, state_path = self.directory / INDEX_NAME, self.directory / STATE_NAME
        tmp = path.with_suffix(".tmp")
        self.faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)
        tmp_state = state_path.with_suffix(".tmp")
        tmp_state.write_text(json.dumps({"generation": generation, "count": int(self.index.ntotal), "dim": self.dim}))
        os.replace(tmp_state, state_path)
        self.dirty = False

    def sync(self, store_ids: np.ndarray, fetch: Any) -> tuple[int, int]:
        """Catch up with the store: add missing ids (vectors from ``fetch(ids)``), drop extra ones.

        Returns ``(added, removed)``.
        """
        have = self.ids()
        missing = np.setdiff1d(store_ids, have, assume_unique=True)
        extra = np.setdiff1d(have, store_ids, assume_unique=True)
        if len(extra):
            self.remove(extra)
        for start in range(0, len(missing), 8192):
            chunk = missing[start : start + 8192]
            self.add(chunk, fetch(chunk.tolist()))
        return len(missing), len(extra)

    # -- content ----------------------------------------------------------------------------

    def ids(self) -> np.ndarray:
        """Every id in the index, ascending (int64)."""
        n = self.index.ntotal
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        return np.sort(self.faiss.vector_to_array(self.index.id_map).astype(np.int64))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
        self.dirty = True

    def remove(self, ids: np.ndarray | list[int]) -> int:
        if len(ids) == 0:
            return 0
        removed = int(self.index.remove_ids(np.asarray(ids, dtype=np.int64)))
        self.dirty = True
        return removed

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` ``(ids, scores)`` by inner product among ``allowed`` ids (None = all).

        Ties are broken by id, so results are deterministic.
        """
        if self.index.ntotal == 0 or k <= 0 or (allowed is not None and len(allowed) == 0):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        params = None
        limit = self.index.ntotal
        if allowed is not None:
            allowed = np.ascontiguousarray(allowed, dtype=np.int64)
            selector = self.faiss.IDSelectorBatch(allowed)
            params = self.faiss.SearchParameters(sel=selector)
            limit = len(allowed)
        # One more than asked, so that a tie at the boundary can be settled by id below.
        kk = int(min(k + 1, limit))
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        scores, ids = self.index.search(q, kk, params=params)
        keep = ids[0] >= 0
        ids_, scores_ = ids[0][keep], scores[0][keep]
        order = np.lexsort((ids_, -scores_))[:k]
        return ids_[order], scores_[order]
