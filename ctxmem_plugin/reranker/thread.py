"""Thread slots: the running conversation in M slots, read by the query with a learned pointer.

A follow-up leans on one earlier turn of the thread, not always the last one ("and the
painting?" after the talk moved on). The thread's latest ``M`` turns each hold a slot (written
in order, the oldest dropped: constant cost per turn). A query reads them with a softmax over
the slots and a *null* slot (the query needs no turn of the thread); the pointer is trained to
put its weight on the turn the query refers to (:mod:`ctxmem_plugin.training.threads`). Search
then joins that turn, and the assistant's reply to it, to the query (:func:`pointed_exchange`).

What each slot shows the pointer (:func:`thread_features`): the cosine of the query to the
turn, the share of the query's content words the turn holds (and holds alone in the thread),
the turn's role and length (also relative to the longest turn, and the longest user turn said
after it), and its age. The null slot sees the query's own length, how much any turn matches
it, and whether it points back ("it", "that", "her").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctxmem_plugin.config import Config, bounded
from ctxmem_plugin.retrieval.text import query_terms, words

TURN_COLUMNS: tuple[str, ...] = (
    "cosine", "overlap", "own_overlap", "user", "assistant", "length", "relative_length", "longest_user_after",
)
"""What a slot shows the pointer besides its age."""

QUERY_COLUMNS: tuple[str, ...] = ("length", "best_own_overlap", "best_cosine", "refers_back", "bias")
"""What the null slot sees."""

BACK_REFERENCES = frozenset("it that this these those there then he she they him her them his its their".split())
"""Words by which a query points back at something said before."""


@dataclass(frozen=True)
class ThreadPointerConfig(Config):
    """Hyper-parameters of :class:`ThreadPointer`; saved next to its weights.

    Attributes:
        slots: M, the thread's latest turns kept.
        hidden: width of the pointer's hidden layer.
    """

    slots: int = bounded(8, low=1, high=256)
    hidden: int = bounded(32, low=1, high=4096)

    @property
    def turn_width(self) -> int:
        return len(TURN_COLUMNS) + self.slots  # the age is one-hot


def thread_features(
    query: str, query_vector: np.ndarray, turns: Sequence[str], roles: Sequence[str], turn_vectors: np.ndarray,
    slots: int,
) -> tuple[np.ndarray, np.ndarray]:
    """What the pointer reads for a query after a thread: ``(M, turn_width)`` and ``(len(QUERY_COLUMNS),)``.

    Args:
        query: the query's text.
        query_vector: ``(d,)`` its embedding.
        turns, roles: the thread's texts and roles, oldest first (only the latest ``slots`` are read).
        turn_vectors: ``(t, d)`` their embeddings.
        slots: M.

    Returns:
        The slots' features (rows of missing turns are zero; row ``-1`` is the latest turn) and
        the null slot's.
    """
    keep = min(len(turns), slots)
    texts, kinds = list(turns)[len(turns) - keep :], list(roles)[len(roles) - keep :]
    vecs = np.asarray(turn_vectors, dtype=np.float32)[len(turns) - keep :]  # (t', d)
    q_terms = set(query_terms(query))
    q = np.asarray(query_vector, dtype=np.float32)
    qn = q / max(float(np.linalg.norm(q)), 1e-12)
    out = np.zeros((slots, len(TURN_COLUMNS) + slots), dtype=np.float32)
    cos = vecs @ qn / np.maximum(np.linalg.norm(vecs, axis=1), 1e-12) if keep else np.zeros(0, np.float32)  # (t',)
    overlaps = []
    said = [set(query_terms(text)) for text in texts]
    length = np.array([math.log1p(len(w)) / 3.0 for w in said], dtype=np.float32)  # (t',)
    # What the user said after a turn: a turn followed by answers and short user turns only
    # (small talk) is still what the talk is about; a long user turn after it changed the topic.
    after = np.zeros_like(length)
    for j in range(keep - 2, -1, -1):
        after[j] = max(after[j + 1], length[j + 1] if kinds[j + 1] == "user" else 0.0)
    longest = max(float(length.max()) if keep else 0.0, 1e-6)
    seen: dict[str, int] = {}
    for w in said:
        for term in w:
            seen[term] = seen.get(term, 0) + 1
    for j, role in enumerate(kinds):
        row = slots - keep + j  # right-aligned: the latest turn is the last row
        overlap = len(q_terms & said[j]) / max(len(q_terms), 1)
        # Words of the query that this turn alone holds: a name said in every turn points nowhere.
        own = len({t for t in q_terms & said[j] if seen[t] == 1}) / max(len(q_terms), 1)
        overlaps.append(own)
        age = keep - 1 - j
        out[row, : len(TURN_COLUMNS)] = [
            cos[j], overlap, own, float(role == "user"), float(role == "assistant"),
            length[j], length[j] / longest, after[j],
        ]
        out[row, len(TURN_COLUMNS) + age] = 1.0
    null = np.array([
        math.log1p(len(q_terms)) / 3.0, max(overlaps, default=0.0), float(cos.max()) if keep else 0.0,
        float(any(w in BACK_REFERENCES for w in words(query))), 1.0,
    ], dtype=np.float32)
    return out, null


class ThreadPointer(nn.Module):
    """The learned pointer over a thread's slots (and the null slot).

    Args:
        config: the hyper-parameters.
    """

    def __init__(self, config: ThreadPointerConfig) -> None:
        super().__init__()
        self.config = config
        self.turn = nn.Sequential(nn.Linear(config.turn_width, config.hidden), nn.GELU(), nn.Linear(config.hidden, 1))
        self.null = nn.Linear(len(QUERY_COLUMNS), 1)

    def forward(self, turns: Tensor, null: Tensor, mask: Tensor) -> Tensor:
        """Log-probabilities over ``[null, slot 1 .. slot M]``.

        Args:
            turns: ``(b, M, turn_width)`` the slots' features.
            null: ``(b, len(QUERY_COLUMNS))`` the null slot's.
            mask: ``(b, M)`` bool, True for slots that hold a turn.

        Returns:
            ``(b, M + 1)``; ``-inf`` at empty slots.
        """
        logits = self.turn(turns).squeeze(-1).masked_fill(~mask, float("-inf"))  # (b, M)
        return torch.cat([self.null(null), logits], dim=-1).log_softmax(dim=-1)  # (b, M + 1)

    @torch.no_grad()
    def point(self, turns: np.ndarray, null: np.ndarray) -> int | None:
        """The age (0: the latest turn) of the turn a query refers to; None: it needs none.

        Args:
            turns, null: :func:`thread_features` of the query and the thread.
        """
        mask = torch.from_numpy(np.abs(turns).sum(axis=1) > 0).unsqueeze(0)  # (1, M)
        logp = self(torch.from_numpy(turns).unsqueeze(0), torch.from_numpy(null).unsqueeze(0), mask)[0]  # (M + 1,)
        best = int(logp.argmax())
        return None if best == 0 else self.config.slots - best


def pointed_exchange(
    pointer: ThreadPointer, query: str, query_vector: np.ndarray, turns: Sequence[str], roles: Sequence[str],
    turn_vectors: np.ndarray,
) -> list[int]:
    """Indices into ``turns`` of what the query refers to: the pointed turn and, when the next turn
    is the assistant's, that reply too (an answer carries the words of what was asked). Empty: none."""
    f, g = thread_features(query, query_vector, turns, roles, turn_vectors, pointer.config.slots)
    age = pointer.point(f, g)
    if age is None:
        return []
    at = len(turns) - 1 - age
    return [at, at + 1] if at + 1 < len(turns) and roles[at + 1] == "assistant" else [at]


def pointer_loss(log_probs: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy of the pointer; ``target`` ``(b,)`` indexes ``[null, slot 1 .. M]``."""
    return F.nll_loss(log_probs, target)
