"""One search as a pipeline: candidates -> the trained re-ranker (optional) -> hits.

:func:`run_search` takes an already embedded query; every read it makes happens in one
snapshot of the store (``store.reading()``), so a writer in another process can never show it
half a change. A candidate whose row is gone by then is dropped, never an error.

A search asked in a running thread (``search(..., history=...)``) is turned into plain
searches first: :func:`thread_of` reads the thread, :func:`conversational_query` says what is
searched for (:mod:`ctxmem_plugin.retrieval.history`); with ``fuse``, :func:`run_fused_search`
runs the query alone and the query joined to the thread in one snapshot and merges them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.encoders import TextEncoder
from ctxmem_plugin.errors import InputError
from ctxmem_plugin.filters import Filters
from ctxmem_plugin.records import Hit, Message, StoredTurn, Turn, to_turn
from ctxmem_plugin.retrieval.history import (
    CONCAT_TURNS,
    DEFAULT_HISTORY_MODE,
    FUSE_DEPTH,
    HISTORY_MODES,
    concat_query,
    fuse_rankings,
)
from ctxmem_plugin.retrieval.hybrid import Candidates, HybridRetriever, RetrievalConfig
from ctxmem_plugin.retrieval.text import embed_text
from ctxmem_plugin.storage.base import MemoryStore

if TYPE_CHECKING:  # torch comes with the re-ranker: imported only when a model is given
    from ctxmem_plugin.reranker.runtime import Reranker

History = Sequence[Message] | Sequence[str] | str
"""The running thread of a search: its messages, oldest first, or the namespace it is stored in."""

Thread = ns.Namespace | list[Turn]
"""A thread as :func:`thread_of` reads it: a stored one's namespace, or its turns."""

Focus = ns.Namespace | np.ndarray | None
"""What a re-ranking search follows up on: ``None`` for the searched namespace's own focus, a
namespace for that one's, or a vector (zeros: no focus at all)."""


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
    focus: Focus,
) -> list[Hit]:
    """The hits ``offset`` to ``offset + k`` of ``query`` under ``space`` by ``method``.

    ``method`` is ``bm25``, ``dense``, ``hybrid`` or ``ctxmem`` (which needs ``reranker``);
    ``focus`` is what a follow-up refers to (:data:`Focus`; ``ctxmem`` only).
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


def run_fused_search(
    store: MemoryStore,
    config: RetrievalConfig,
    reranker: Reranker | None,
    alone: tuple[str, np.ndarray],
    joined: tuple[str, np.ndarray],
    space: ns.Namespace,
    *,
    k: int,
    filters: Filters | None,
    method: str,
    offset: int,
) -> list[Hit]:
    """``fuse``: the query ``alone`` and ``joined`` to the thread, each a ``(text, vector)``
    searched, their best ``FUSE_DEPTH * (k + offset)`` merged by :func:`fuse_rankings`.

    Both searches read one snapshot. No focus: the thread is in the joined text. A hit's
    ``score`` is its fused score; ``signals["fuse"]`` holds its rank in each search (0: absent)
    beside the signals of the query-alone search (the joined one's where only it found it).
    """
    depth = FUSE_DEPTH * (k + offset)
    with store.reading():
        first, second = (
            run_search(store, config, reranker, text, vector, space, k=depth, filters=filters, method=method, offset=0,
                       focus=np.zeros_like(vector))
            for text, vector in (alone, joined)
        )
    rank_alone = {h.id: r for r, h in enumerate(first, start=1)}
    rank_joined = {h.id: r for r, h in enumerate(second, start=1)}
    hit = {h.id: h for h in [*second, *first]}  # the query alone's hit where it has one
    return [
        replace(hit[i], score=score, signals={
            **hit[i].signals,
            "fuse": {"rank_alone": float(rank_alone.get(i, 0)), "rank_with_thread": float(rank_joined.get(i, 0))},
        })
        for i, score in fuse_rankings([h.id for h in first], [h.id for h in second])[offset : offset + k]
    ]


def _reranked(
    store: MemoryStore, retriever: HybridRetriever, reranker: Reranker, query: str, qv: np.ndarray,
    space: ns.Namespace, filters: Filters | None, focus: Focus,
) -> tuple[Candidates, dict[int, StoredTurn]]:
    """Candidates re-scored by the trained model, and their rows (the features read them)."""
    focus_space = space if focus is None else focus if isinstance(focus, tuple) else None
    # A prefix holds no turns of its own, so it has no focus: then none is used. The focus
    # namespace's slots are computed once and reused when re-scoring.
    known = {focus_space: reranker.slots_for(focus_space)} if focus_space else {}
    if isinstance(focus, np.ndarray):
        fvec: np.ndarray | None = focus if float(np.linalg.norm(focus)) > 0 else None
    else:
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


def thread_of(history: History | None) -> Thread | None:
    """A search's thread: its namespace, its messages as turns, or None (no thread, or an empty one)."""
    if history is None:
        return None
    if isinstance(history, str):
        return ns.validate(history)
    if isinstance(history, (Turn, Mapping)):
        raise InputError("history must be a list of messages or a namespace, not one message")
    items = list(history)
    if not items:
        return None
    if all(isinstance(item, str) for item in items):
        return ns.validate(items)  # type: ignore[arg-type]
    return [to_turn(m, f"history[{i}]") for i, m in enumerate(items)]  # type: ignore[arg-type]


def history_mode_of(mode: str, method: str, *, thread_given: bool) -> str:
    """The mode ``auto`` stands for (:data:`~ctxmem_plugin.retrieval.history.DEFAULT_HISTORY_MODE`),
    or ``mode`` checked against the method (when a thread is given: without one, every mode
    searches the query alone)."""
    chosen = DEFAULT_HISTORY_MODE if mode == "auto" else mode
    if chosen not in HISTORY_MODES:
        raise InputError(f"unknown history_mode {mode!r}; expected auto, {', '.join(HISTORY_MODES)}")
    if not thread_given:
        return chosen
    if chosen == "slots" and method != "ctxmem":
        raise InputError("history_mode 'slots' needs a trained model and method ctxmem")
    return chosen


def conversational_query(
    store: MemoryStore, encoder: TextEncoder | None, reranker: Reranker | None, query: str, thread: Thread, mode: str,
    dim: int,
) -> tuple[str, Focus]:
    """What a search asked after ``thread`` looks for: the text searched, and the re-ranker's focus.

    ``mode`` is a :data:`~ctxmem_plugin.retrieval.history.HISTORY_MODES` one (see
    :func:`history_mode_of`). ``concat`` and ``fuse`` put the thread in the text (no focus:
    zeros; ``fuse`` searches the query alone as well, :func:`run_fused_search`);
    ``slots`` keeps the query and makes the thread the focus (its namespace, or the trace its
    messages leave). ``encoder`` and ``reranker`` are needed by ``slots`` only.
    """
    none = np.zeros(dim, np.float32)  # the thread is in the text: the model follows up on nothing else
    if mode in ("concat", "fuse"):  # fuse searches this joined text beside the query alone
        return concat_query(query, _thread_texts(store, thread, CONCAT_TURNS), CONCAT_TURNS), none
    assert encoder is not None and reranker is not None  # slots: history_mode_of checked the method
    if isinstance(thread, tuple):
        return query, thread
    focus = reranker.focus_of_turns(encoder.encode([embed_text(t) for t in thread]))  # (d,) or None
    return query, focus if focus is not None else none


def _thread_texts(store: MemoryStore, thread: Thread, count: int) -> list[str]:
    """The last ``count`` texts of a thread, oldest first (read from its namespace if stored)."""
    if isinstance(thread, tuple):
        return [t.content for t in store.get(store.ids_in(thread)[-count:].tolist())]
    return [t.content for t in thread[-count:]]


def hit_of(row: StoredTurn, score: float, signals: dict[str, dict[str, float]]) -> Hit:
    """A search result from a stored turn; a turn without a speaker is shown by its role."""
    return Hit(
        id=row.id, text=row.content, score=score, namespace=row.namespace, metadata=row.metadata,
        signals=signals, speaker=row.speaker or row.role, role=row.role, timestamp=row.timestamp,
    )
