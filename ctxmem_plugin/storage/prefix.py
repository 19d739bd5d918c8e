"""The turns of one namespace prefix, read once per search: ids, neighbours, lengths, vectors.

A search in a namespace of a thousand turns needs, for those turns only, their vectors (dense
search and candidate scores), each turn's previous and next turn in its namespace (neighbour
expansion) and their lengths (BM25). One SQL range read over the ``(namespace, id)`` index gives
all of it, in the search's snapshot, whatever else the memory holds: the cost is set by the
prefix, not by the memory. Larger prefixes go to the approximate index (:mod:`.ann`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ctxmem_plugin.storage import vectors as flat


@dataclass(frozen=True)
class PrefixView:
    """Every turn under a prefix, ordered by ``(namespace, id)``.

    Attributes:
        ids: ``(n,)`` int64 turn ids.
        group: ``(n,)`` int64, equal for the turns of one exact namespace, ascending.
        lengths: ``(n,)`` int64 token counts (BM25's turn lengths).
        vectors: ``(n, d)`` float32, as stored.
    """

    ids: np.ndarray
    group: np.ndarray
    lengths: np.ndarray
    vectors: np.ndarray

    @classmethod
    def read(cls, db: sqlite3.Connection, low: str, high: str, dim: int, decode: str) -> PrefixView:
        """Read the turns with a namespace key in ``[low, high)``; vectors stored as ``decode`` ("float32"/"float16")."""
        rows = db.execute(
            "SELECT id, namespace, n_tokens, vector FROM turns WHERE namespace >= ? AND namespace < ? ORDER BY namespace, id",
            (low, high),
        ).fetchall()
        n = len(rows)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        lengths = np.fromiter((r[2] for r in rows), dtype=np.int64, count=n)
        group = np.zeros(n, dtype=np.int64)
        last = None
        g = -1
        for j, r in enumerate(rows):
            if r[1] != last:
                g, last = g + 1, r[1]
            group[j] = g
        raw = b"".join(r[3] for r in rows)
        vecs = np.frombuffer(raw, dtype=np.dtype(decode)).reshape(n, dim).astype(np.float32, copy=decode != "float32")
        return cls(ids, group, lengths, vecs)

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row of each id in the view, ``-1`` for ids not in it."""
        want = np.asarray(ids, dtype=np.int64)
        if not len(self.ids) or not len(want):
            return np.full(len(want), -1, dtype=np.int64)
        order = self.id_order
        at = np.searchsorted(self.ids[order], want)
        at = np.clip(at, 0, len(order) - 1)
        found = self.ids[order][at] == want
        return np.where(found, order[at], -1)

    @cached_property
    def id_order(self) -> np.ndarray:
        """Rows in id order (ids ascend within a namespace, not across them)."""
        return np.argsort(self.ids, kind="stable")

    def neighbours(self, ids: Sequence[int]) -> tuple[dict[int, tuple[int | None, int | None]], list[int]]:
        """Previous and next turn of each id in its namespace; and the ids not in the view."""
        pos = self.positions(ids)
        out: dict[int, tuple[int | None, int | None]] = {}
        outside: list[int] = []
        n = len(self.ids)
        for turn_id, j in zip(ids, pos.tolist()):
            if j < 0:
                outside.append(int(turn_id))
                continue
            prev = int(self.ids[j - 1]) if j > 0 and self.group[j - 1] == self.group[j] else None
            nxt = int(self.ids[j + 1]) if j + 1 < n and self.group[j + 1] == self.group[j] else None
            out[int(turn_id)] = (prev, nxt)
        return out, outside

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k`` by inner product, among ``allowed`` ids if given: ``(ids, scores)``, ties by id."""
        if allowed is None:
            return flat.top_k(query, self.vectors, self.ids, k)
        pos = self.positions(allowed)
        pos = np.sort(pos[pos >= 0])
        return flat.top_k(query, self.vectors[pos], self.ids[pos], k)
