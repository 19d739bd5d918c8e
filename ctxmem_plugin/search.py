"""One search as a pipeline: candidates -> the trained re-ranker (optional) -> hits.

:func:`run_search` takes an already embedded query; every read it makes happens in one
snapshot of the store (``store.reading()``), so a writer in another process can never show it
half a change. A candidate whose row is gone by then is dropped, never an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.filters import Filters
from ctxmem_plugin.records import Hit, StoredTurn
from ctxmem_plugin.retrieval.hybrid import Candidates, HybridRetriever, RetrievalConfig
from ctxmem_plugin.storage.base import MemoryStore

if TYPE_CHECKING:  # torch comes with the re-ranker: imported only when a model is given
    from ctxmem_plugin.reranker.runtime import Reranker


def run_search(
    store: MemoryStore,
    config: RetrievalConfig,
    reranker: Reranker | None,
    query: str,
    query_vector: np.ndarray,
    space: ns.Namespace,
    *,
    k: int,
    filters: Filters | None,
    method: str,
    offset: int,
    focus: ns.Namespace | None,
) -> list[Hit]:
    """The hits ``offset`` to ``offset + k`` of ``query`` under ``space`` by ``method``.

    ``method`` is ``bm25``, ``dense``, ``hybrid`` or ``ctxmem`` (which needs ``reranker``);
    ``focus`` is the conversation a follow-up refers to (``ctxmem`` only; None: ``space``).
    """
    retriever = HybridRetriever(store, config)
    with store.reading():  # every read of this search sees the same committed state
        rows: dict[int, StoredTurn] = {}
        if method == "ctxmem":
            assert reranker is not None  # checked by the caller
            cands, rows = _reranked(store, retriever, reranker, query, query_vector, space, filters, focus)
        else:
            cands = retriever.candidates(query, query_vector, space, filters, method=method)
        top = cands.top(k + offset)
        missing = [i for i in top.ids.tolist() if i not in rows]
        rows.update((t.id, t) for t in store.get(missing))
    return [
        hit_of(row, float(top.score[j]), top.signals[j])
        for j in range(offset, len(top))
        if (row := rows.get(int(top.ids[j]))) is not None
    ]


def _reranked(
    store: MemoryStore, retriever: HybridRetriever, reranker: Reranker, query: str, qv: np.ndarray,
    space: ns.Namespace, filters: Filters | None, focus: ns.Namespace | None,
) -> tuple[Candidates, dict[int, StoredTurn]]:
    """Candidates re-scored by the trained model, and their rows (the features read them)."""
    focus_space = space if focus is None else focus
    # A prefix holds no turns of its own, so it has no focus: then none is used. The focus
    # namespace's slots are computed once and reused when re-scoring.
    known = {focus_space: reranker.slots_for(focus_space)} if focus_space else {}
    fvec = reranker.focus_of(focus_space, known[focus_space]) if known else None
    cands = retriever.candidates(
        query, qv, space, filters, method="hybrid", pool=reranker.pool,
        probe=reranker.probe(qv, fvec), probe_pool=reranker.settings.focus_pool,
    )
    if focus is not None and fvec is None:
        fvec = np.zeros_like(qv)  # the named conversation is empty: no focus at all
    rows = {t.id: t for t in store.get(cands.ids.tolist())}
    cands = reranker.rescore(cands, rows, retriever.config, focus=fvec if focus is not None else None, known=known)
    return cands, rows


def hit_of(row: StoredTurn, score: float, signals: dict[str, dict[str, float]]) -> Hit:
    """A search result from a stored turn; a turn without a speaker is shown by its role."""
    return Hit(
        id=row.id, text=row.content, score=score, namespace=row.namespace, metadata=row.metadata,
        signals=signals, speaker=row.speaker or row.role, role=row.role, timestamp=row.timestamp,
    )
