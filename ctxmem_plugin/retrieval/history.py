"""How the running thread of a conversation shapes a search (``search(..., history=...)``).

A follow-up ("and the painting?", "what did she say about it?") names too little to be
searched alone; the thread it is asked in says what it is about. But a question that needs no
thread ("when did Caroline go to the LGBTQ support group?") asked in the same conversation is
hurt by the thread's words. The ways to use the thread (:data:`HISTORY_MODES`), measured held
out by the conversational benchmark (:mod:`ctxmem_plugin.evaluation.conversation`,
``benchmarks/conversation.py``):

- ``fuse`` (the default): two searches, the query alone and :func:`concat_query`, whose
  rankings :func:`fuse_rankings` merges (reciprocal rank fusion, equal weights). Needs no model.
- ``concat``: :func:`concat_query` alone, the last :data:`CONCAT_TURNS` turns of the thread,
  then the query, as one text; both BM25 and the dense vector see it. Needs no model.
- ``slots`` (opt-in): the trained model's focus slot, a trace of the thread's turns (rate
  0.5): it widens the candidates and the re-ranker reads it. Needs a model with a focus slot.

``fuse`` is the default because, on the benchmark's held-out threads, it keeps most of what
``concat`` gains on follow-ups and most of what the query alone gets right on questions that
need no thread, where ``concat`` loses more than half of it (docs/benchmarks.md,
"Conversational recall"); the benchmark's other baseline, a decayed mean of the thread's
vectors added to the query's, is :func:`ctxmem_plugin.evaluation.conversation.decayed_query_vector`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ctxmem_plugin.errors import InputError

HISTORY_MODES: tuple[str, ...] = ("fuse", "concat", "slots")
"""The ways a search can use the running thread."""

DEFAULT_HISTORY_MODE = "fuse"
"""What ``history_mode="auto"`` uses: the best method on the benchmark's held-out threads."""

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


FUSE_K = 60
"""Reciprocal rank fusion's constant: a hit at rank ``r`` (from 1) adds ``1 / (FUSE_K + r)``."""

FUSE_DEPTH = 2
"""``fuse`` merges each search's best ``FUSE_DEPTH * (k + offset)`` hits (``k`` = 10: the top 20
of each, as the benchmark measured it)."""


def fuse_rankings(alone: Sequence[int], joined: Sequence[int]) -> list[tuple[int, float]]:
    """Two rankings of turn ids (best first) merged by reciprocal rank fusion, equal weights.

    A turn both rankings hold adds up both terms, so it comes before one only either holds at
    the same rank; equal scores are ordered by id, so the result does not depend on which
    ranking is given first. Returns ``(id, score)`` pairs, best first.
    """
    scores: dict[int, float] = {}
    for ranking in (alone, joined):
        for rank, turn_id in enumerate(ranking, start=1):
            scores[turn_id] = scores.get(turn_id, 0.0) + 1.0 / (FUSE_K + rank)
    ids = np.fromiter(scores, dtype=np.int64, count=len(scores))
    vals = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
    order = np.lexsort((ids, -vals))  # score descending, then id
    return [(int(ids[j]), float(vals[j])) for j in order]
