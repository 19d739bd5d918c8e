"""Exact inner-product search over a block of vectors, with FAISS's own kernel.

Dense search never keeps a second copy of the vectors to keep in step with SQLite: the vectors
of the prefix searched are read from SQLite in the search's snapshot (:mod:`.prefix`, or the
probed cells of :mod:`.ann` for a large prefix) and scored here. The scores come from FAISS's
flat kernel, the one an ``IndexFlatIP`` uses, so that a ranking is the same bit for bit as with
the whole-memory FAISS index this replaced.

One query is scored on one thread: with OpenMP's default of a thread per core, a single query
on a busy machine waited on idle threads (16 ms against 0.07 ms measured for 4,000 vectors
on 2 shared cores). Larger batches (training the approximate index) use every thread, and the
GPUs where the installed faiss has them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ctxmem_plugin.errors import DependencyError

_FAISS: Any = None


def import_faiss() -> Any:
    """``import faiss`` with an error that says which package to install."""
    global _FAISS
    if _FAISS is None:
        try:
            import faiss
        except ImportError as exc:
            raise DependencyError(
                "faiss is not installed: pip install 'ctxmem-plugin[cpu]' (faiss-cpu) "
                "or 'ctxmem-plugin[gpu]' (faiss-gpu); install exactly one of them"
            ) from exc
        _FAISS = faiss
    return _FAISS


def gpus() -> int:
    """GPUs the installed faiss can use (0 with faiss-cpu)."""
    faiss = import_faiss()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


@contextmanager
def one_thread() -> Iterator[Any]:
    """FAISS limited to one OpenMP thread inside the block (single-query searches)."""
    faiss = import_faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield faiss
    finally:
        faiss.omp_set_num_threads(before)


def scores(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Inner products of ``query`` (d,) with every row of ``vectors`` (n, d), FAISS's kernel; (n,) float32."""
    faiss = import_faiss()
    x = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, d)
    n = len(x)
    out = np.empty(n, np.float32)
    if n:
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)  # (d,)
        faiss.fvec_inner_products_ny(faiss.swig_ptr(out), faiss.swig_ptr(q), faiss.swig_ptr(x), q.shape[0], n)
    return out


def nearest(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Row of ``centroids`` (c, d) with the largest inner product, for each row of ``vectors`` (n, d); (n,) int64."""
    faiss = import_faiss()
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(x) < 64:  # a few new turns: one thread, as a query
        with one_thread():
            _, pos = faiss.knn(x, centroids, 1, metric=faiss.METRIC_INNER_PRODUCT)
    else:
        _, pos = faiss.knn(x, centroids, 1, metric=faiss.METRIC_INNER_PRODUCT)
    return pos[:, 0].astype(np.int64)


def top_k(query: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``vectors`` with the largest inner product: ``(ids, scores)``, ties by id.

    Exact: every score is computed, and a tie at the k-th place is settled by id (the test
    suite checks it against a brute force).
    """
    n = len(ids)
    if n == 0 or k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    s = scores(query, vectors)
    ids = np.asarray(ids, dtype=np.int64)
    if k < n:
        kth = np.partition(s, n - k)[n - k]  # the k-th largest score
        keep = np.flatnonzero(s >= kth)  # ties at the k-th place included
        s, ids = s[keep], ids[keep]
    order = np.lexsort((ids, -s))[:k]
    return ids[order], s[order]
