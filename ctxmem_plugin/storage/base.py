"""The store contract: what :class:`~ctxmem_plugin.memory.ContextMemory` needs from a backend.

A backend keeps turns (text, metadata, vectors), answers lexical and dense searches restricted
to a namespace prefix, keeps each namespace's slot state, and commits writes atomically. Two
implement it: the embedded store (:class:`~ctxmem_plugin.storage.sqlite.LongTermStore`: SQLite
+ FAISS in one directory, one writing process) and the PostgreSQL store
(:class:`~ctxmem_plugin.storage.postgres.PostgresStore`: many writing processes). Both pass
the same tests and must behave the same, scores aside; an operation a backend cannot do
raises a :class:`~ctxmem_plugin.errors.CtxMemError` saying so, never does less in silence.
:func:`ctxmem_plugin.storage.open_store` picks one from a location.

Namespaces are a security boundary: every read that takes a prefix returns nothing outside it,
and the statistics that shape its scores (BM25's) come from the prefix alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.filters import Filters
from ctxmem_plugin.records import StoredTurn, Turn


@dataclass(frozen=True)
class NewRow:
    """A validated turn ready to insert, with what was derived from it."""

    turn: Turn
    index_text: str
    content_hash: str
    vector: np.ndarray  # (d,) float32


SlotState = tuple[str, int, int, bytes]
"""``(model id, last folded turn id, turns folded, state bytes)`` of one namespace."""


@dataclass(frozen=True)
class Finding:
    """One problem found in a memory by :meth:`MemoryStore.check`.

    Attributes:
        part: what it concerns; the embedded store's: ``database``, ``schema``, ``meta``,
            ``fts``, ``vectors``, ``slots`` or ``namespaces``.
        message: what is wrong, one line.
        repairable: whether :meth:`MemoryStore.repair` can rebuild it from the source of truth.
    """

    part: str
    message: str
    repairable: bool

    def __str__(self) -> str:
        return f"{self.part}: {self.message}" + ("" if self.repairable else " (not repairable here)")


@dataclass(frozen=True)
class SlotShape:
    """The slot state a model keeps per namespace: its id and the state's size in bytes."""

    model_id: str
    state_bytes: int


@runtime_checkable
class MemoryStore(Protocol):
    """A memory's storage backend.

    Writes happen inside :meth:`transaction` (all or nothing, acknowledged when it returns);
    the reads of one search happen inside :meth:`reading` (one consistent snapshot).
    """

    # -- lifecycle and meta ---------------------------------------------------------------

    @property
    def location(self) -> str:
        """Where the memory lives (a directory, a database URL), for messages."""
        ...

    @property
    def schema_version(self) -> int:
        """The last schema migration applied."""
        ...

    @property
    def generation(self) -> int:
        """A counter every committed write moves on."""
        ...

    def close(self) -> None:
        """Persist what is kept in memory (a dense index) and release resources."""
        ...

    def flush(self) -> None:
        """Persist derived state now (the embedded store's FAISS file); a no-op where there is none."""
        ...

    def transaction(self) -> AbstractContextManager[object]:
        """One atomic write: everything inside commits together or not at all."""
        ...

    def reading(self) -> AbstractContextManager[object]:
        """One consistent read: every read inside sees the same committed state."""
        ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def sizes(self) -> dict[str, int]:
        """Bytes used, by part (files of a directory, tables of a database), for ``stats``."""
        ...

    # -- writes (inside transaction()) ----------------------------------------------------

    def lock_namespaces(self, namespaces: Sequence[ns.Namespace]) -> bool:
        """Until the transaction ends, no other writer writes these namespaces.

        A write takes it before it checks what is already stored (duplicates, keys, slot
        states), so that two processes writing one namespace at once cannot both add the same
        turn. Returns whether other processes write this memory at all: ``False`` where one
        process writes at a time (the embedded store's writer lock; nothing to take), so a write
        need not check again what it checked before its transaction.
        """
        ...

    def insert(self, namespace: ns.Namespace, rows: Sequence[NewRow]) -> tuple[list[int], list[int]]:
        """Insert rows; a row whose key exists in the namespace replaces it. ``(new ids, replaced ids)``."""
        ...

    def insert_many(self, entries: Sequence[tuple[ns.Namespace, NewRow]]) -> tuple[list[int], list[int]]:
        """:meth:`insert` for rows of many namespaces at once (one round trip per table, not per
        namespace); new ids follow the order given. ``(new ids, replaced ids)``."""
        ...

    def delete(self, ids: Sequence[int]) -> list[int]:
        """Delete turns by id; returns the ids that existed."""
        ...

    def forget(self, prefix: ns.Namespace) -> list[int]:
        """Delete every turn and slot state under ``prefix``; returns the deleted ids."""
        ...

    def scrub(self) -> bool:
        """Make committed deletions physical, as far as the backend can; whether that is done.

        The embedded store leaves no deleted text in its files or pages (``False``: another
        process's read keeps some, finished on a later open). PostgreSQL runs ``VACUUM`` (the
        space is reclaimed, the bytes are overwritten only when reused; see its docs).
        """
        ...

    def set_vectors(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Replace the stored vectors of ``ids`` (re-encoding)."""
        ...

    def drop_slot_states(self) -> None: ...

    def put_slot_state(self, namespace: ns.Namespace, model_id: str, last_turn_id: int, turns: int, state: bytes) -> None: ...

    # -- reads ----------------------------------------------------------------------------

    def existing_hashes(self, namespace: ns.Namespace, hashes: Sequence[str]) -> set[str]: ...

    def get(self, ids: Sequence[int]) -> list[StoredTurn]:
        """Turns by id, in the order asked; unknown ids are left out."""
        ...

    def get_by_key(self, namespace: ns.Namespace, key: str) -> StoredTurn | None: ...

    def select(
        self, prefix: ns.Namespace, filters: Filters | None = None, *, limit: int | None = None, offset: int = 0,
        order: str = "id",
    ) -> list[StoredTurn]: ...

    def iter_select(self, prefix: ns.Namespace, batch: int = 1000) -> Iterator[list[StoredTurn]]: ...

    def namespaces(self, prefix: ns.Namespace = ()) -> list[tuple[ns.Namespace, int]]: ...

    def count(self) -> int: ...

    def ids_in(self, prefix: ns.Namespace, filters: Filters | None = None) -> np.ndarray:
        """Ids under ``prefix`` matching ``filters``, ascending (int64)."""
        ...

    def lexical(self, terms: Sequence[str], prefix: ns.Namespace, filters: Filters | None = None) -> dict[int, float]:
        """BM25 of every turn under ``prefix`` (and matching ``filters``) that holds a term.

        The statistics are the prefix's alone; ``filters`` narrow the turns scored, not them.
        """
        ...

    def dense(
        self, vector: np.ndarray, k: int, prefix: ns.Namespace, filters: Filters | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest turns to ``vector`` (inner product) under ``prefix``: ``(ids, scores)``, ties by id."""
        ...

    def neighbours(self, ids: Sequence[int]) -> dict[int, tuple[int | None, int | None]]:
        """For each id, the previous and next turn ids in the same exact namespace."""
        ...

    def vectors(self, ids: Sequence[int], dim: int) -> np.ndarray:
        """Stored vectors of ``ids`` in that order, ``(n, dim)``; all ids must exist."""
        ...

    def vector_map(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored vectors by id; unknown ids are left out."""
        ...

    def ids_after(self, namespace: ns.Namespace, last: int) -> list[int]:
        """Ids of the turns of exactly ``namespace`` after id ``last``, ascending."""
        ...

    def namespace_vectors(self, namespace: ns.Namespace, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` of the turns of exactly ``namespace``, in id order."""
        ...

    def get_slot_state(self, namespace: ns.Namespace) -> SlotState | None: ...

    # -- integrity (``ctxmem-plugin doctor``) -------------------------------------------------

    def check(self, *, slots: SlotShape | None = None) -> list[Finding]:
        """Every problem found in the stored data and what is derived from it; changes nothing.

        Args:
            slots: the slot state a model keeps, to check the stored ones against.
        """
        ...

    def repair(self, *, slots: SlotShape | None = None) -> list[str]:
        """Rebuild what can be rebuilt from the source of truth (indexes, statistics, slot
        states); returns what was done, one line each. The caller is the memory's writer."""
        ...
