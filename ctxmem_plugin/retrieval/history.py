"""How the running thread of a conversation shapes a search (``search(..., history=...)``).

A follow-up ("and the painting?", "what did she say about it?") names too little to be
searched alone; the thread it is asked in says what it is about. The ways to use the thread
(:data:`HISTORY_MODES`), measured held out by the conversational benchmark
(:mod:`ctxmem_plugin.evaluation.conversation`, ``benchmarks/conversation.py``):

- ``concat``: :func:`concat_query`, the last :data:`CONCAT_TURNS` turns of the thread, then
  the query, as one text; both BM25 and the dense vector see it. Needs no model.
- ``pointer``: the trained model's thread pointer (:mod:`ctxmem_plugin.reranker.thread`) picks
  the turn the query refers to, if any; that turn and the assistant's reply to it are joined to
  the query as ``concat`` joins turns. Needs a model trained with one.
- ``slots``: the trained model's focus slot, a trace of the thread's turns (rate 0.5): it
  widens the candidates and the re-ranker reads it. Needs a model with a focus slot.

:func:`decayed_query_vector` (the query vector plus a decayed mean of the thread's vectors)
is the benchmark's non-learned recurrent baseline; no search mode uses it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ctxmem_plugin.errors import InputError

HISTORY_MODES: tuple[str, ...] = ("concat", "pointer", "slots")
"""The ways a search can use the running thread; ``auto`` picks ``pointer`` when the model has a
thread pointer, else ``concat``: the best on held-out threads with and without one
(docs/benchmarks.md, conversational recall)."""

CONCAT_TURNS = 5
"""Thread turns ``concat`` joins to the query: the ``k`` that ranked the benchmark's threads of the
7 LoCoMo dev conversations best (untrained hybrid ranking, recall@10), as each fold chose it."""


def concat_query(query: str, history: Sequence[str], k: int) -> str:
    """The last ``k`` texts of ``history`` (oldest first), then ``query``, one per line.

    Args:
        query: what the user asks now.
        history: the thread before it, oldest first.
        k: how many of its latest turns to keep (0: the query alone).
    """
    if k < 0:
        raise InputError(f"k must be >= 0, got {k}")
    kept = [text for text in history[max(len(history) - k, 0) :] if text.strip()] if k else []
    return "\n".join([*kept, query])


def decay_weights(count: int, decay: float) -> np.ndarray:
    """``(count,)`` weights ``decay ** age``, age 0 for the latest turn, summing to 1.

    ``decay`` 0 keeps the latest turn alone; 1 is the plain mean.
    """
    if not 0.0 <= decay <= 1.0:
        raise InputError(f"decay must be in [0, 1], got {decay}")
    age = np.arange(count - 1, -1, -1, dtype=np.float64)  # (t,): the last turn is age 0
    w = np.power(decay, age)  # 0 ** 0 == 1: with decay 0 the latest turn keeps its weight
    return (w / w.sum()).astype(np.float32) if count else w.astype(np.float32)


def decayed_query_vector(query_vector: np.ndarray, history_vectors: np.ndarray, decay: float) -> np.ndarray:
    """``normalise(q/|q| + m/|m|)``, ``m`` the :func:`decay_weights` mean of the thread's vectors.

    Args:
        query_vector: ``(d,)`` the query's embedding.
        history_vectors: ``(t, d)`` the thread's turn embeddings, oldest first.
        decay: weight ratio of a turn to the one after it.

    Returns:
        ``(d,)`` unit float32; the query's own direction when the thread is empty (or its
        mean is zero).
    """
    q = np.asarray(query_vector, dtype=np.float32)  # (d,)
    qn = q / max(float(np.linalg.norm(q)), 1e-12)
    if len(history_vectors) == 0:
        return qn
    m = decay_weights(len(history_vectors), decay) @ np.asarray(history_vectors, dtype=np.float32)  # (d,)
    norm = float(np.linalg.norm(m))
    if norm < 1e-6:
        return qn
    v = qn + m / norm  # (d,)
    return (v / np.linalg.norm(v)).astype(np.float32)
