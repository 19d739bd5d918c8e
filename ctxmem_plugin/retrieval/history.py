"""How the running thread of a conversation shapes a search (``search(..., history=...)``).

A follow-up ("and the painting?", "what did she say about it?") names too little to be
searched alone; the thread it is asked in says what it is about. The ways to use the thread
(:data:`HISTORY_MODES`), measured held out by the conversational benchmark
(:mod:`ctxmem_plugin.evaluation.conversation`, ``benchmarks/conversation.py``):

- ``concat`` (the default): :func:`concat_query`, the last :data:`CONCAT_TURNS` turns of the
  thread, then the query, as one text; both BM25 and the dense vector see it. Needs no model.
- ``slots`` (opt-in): the trained model's focus slot, a trace of the thread's turns (rate
  0.5): it widens the candidates and the re-ranker reads it. Needs a model with a focus slot.

``concat`` is the default because it ranked the benchmark's held-out threads best
(docs/benchmarks.md, "Conversational recall"); the benchmark's other baseline, a decayed mean
of the thread's vectors added to the query's, is
:func:`ctxmem_plugin.evaluation.conversation.decayed_query_vector`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ctxmem_plugin.errors import InputError

HISTORY_MODES: tuple[str, ...] = ("concat", "slots")
"""The ways a search can use the running thread."""

DEFAULT_HISTORY_MODE = "concat"
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
