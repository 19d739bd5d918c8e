"""LongTermStore: the embedded backend, one directory holding SQLite (the truth) and a FAISS index.

Rows, texts, metadata, vectors and slot states all live in ``memory.sqlite3``, in WAL mode; the
FAISS index (:mod:`ctxmem_plugin.storage.vectors`) is derived from it and can always be rebuilt.
A write is acknowledged when its transaction commits, and ``synchronous=FULL`` makes that
durable; the index follows the commit in memory and is saved on :meth:`flush` / :meth:`close`
with the generation it matches, so a crash in between loses nothing (it is caught up on open).
Every read that takes a namespace is restricted in SQL (and in FAISS, by id) to that prefix.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.filters import Filters, compile_filters
from ctxmem_plugin.records import StoredTurn
from ctxmem_plugin.storage import bm25 as bm25_scoring
from ctxmem_plugin.storage.base import NewRow, SlotState
from ctxmem_plugin.storage.lock import WriterLock
from ctxmem_plugin.storage.schema import migrate, require_current
from ctxmem_plugin.storage.vectors import VectorIndex

DB_NAME = "memory.sqlite3"
_SQL_VARS = 900  # stay under SQLite's bound-parameter limit in IN (...) lists


def _chunks(items: Sequence[Any], size: int = _SQL_VARS) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def exists(directory: Path) -> bool:
    """Whether ``directory`` holds an embedded memory."""
    return (Path(directory) / DB_NAME).is_file()


class LongTermStore:
    """The embedded store of a memory directory (:class:`~ctxmem_plugin.storage.base.MemoryStore`).

    Args:
        directory: the memory directory (must exist).
        read_only: open without the right to write (``query``, ``stats``, ``export``).
        lock_timeout: a writable store holds the directory's writer lock
            (:mod:`ctxmem_plugin.storage.lock`) until closed; seconds to wait for another
            process that holds it. ``None``: the caller holds it.
    """

    def __init__(self, directory: Path, *, read_only: bool = False, lock_timeout: float | None = None) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME
        self.read_only = read_only
        self._lock: WriterLock | None = None
        if not read_only and lock_timeout is not None:
            self._lock = WriterLock(self.directory / "writer.lock", timeout=lock_timeout)
            self._lock.acquire()
        try:
            self._open()
        except BaseException:
            self._release()
            raise

    def _open(self) -> None:
        read_only = self.read_only
        self._index: VectorIndex | None = None
        # Index changes of the open transaction, applied once it commits: (ids to add, vectors, ids to drop).
        self._pending: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]] = []
        self._rebuild = False  # the open transaction replaced vectors: the index is rebuilt after it
        self._depth = 0  # open transaction() / reading() blocks: one SQL transaction for all
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        # Freed pages are zeroed, so deleted memories are not left readable in the file.
        self.db.execute("PRAGMA secure_delete=ON")
        if not read_only:
            migrate(self.db)
        else:
            require_current(self.db, self.path)
        self.db.execute("PRAGMA query_only=ON" if read_only else "PRAGMA query_only=OFF")
        self.tokenizer = bm25_scoring.Tokenizer()

    @property
    def location(self) -> str:
        return str(self.directory)

    def close(self) -> None:
        """Save the dense index if it changed, close the database, release the writer lock."""
        try:
            self.flush()
            self.db.close()
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def sizes(self) -> dict[str, int]:
        """Bytes of each file in the memory directory."""
        return {p.name: p.stat().st_size for p in sorted(self.directory.iterdir()) if p.is_file()}

    def flush(self) -> None:
        """Save the dense index now if it changed since it was loaded or saved."""
        if self._index is not None and self._index.dirty and not self.read_only:
            self._index.save(self.generation)

    @property
    def schema_version(self) -> int:
        """The last migration applied (``PRAGMA user_version``)."""
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    # -- transactions and meta -------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write: everything inside commits together or not at all.

        The dense index follows the commit (in memory; saved by :meth:`flush`), never a write
        that rolled back.
        """
        self.db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
            self._bump_generation()
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            self._pending.clear()
            self._rebuild = False
            raise
        finally:
            self._depth -= 1
        self._apply_pending()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """One consistent read: the SQL reads inside see one snapshot (nested blocks share it)."""
        if self._depth:
            yield
            return
        self.db.execute("BEGIN")
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            self.db.execute("COMMIT")

    # -- the dense index ------------------------------------------------------------------------

    @property
    def dim(self) -> int | None:
        """Width of the stored vectors, once the memory has recorded its encoder."""
        recorded = self.get_meta("dim")
        return int(recorded) if recorded else None

    def _loaded_index(self) -> VectorIndex | None:
        """The FAISS index, loaded on first use and caught up with SQLite if stale or missing."""
        if self._index is None:
            dim = self.dim
            if not dim:
                return None
            index = VectorIndex(dim, self.directory)
            generation = self.generation
            if not index.load(generation):
                index.sync(self.all_ids(), lambda ids: self.vectors(ids, dim))
                if not self.read_only:  # record the generation it now matches
                    index.save(generation)
            self._index = index
        return self._index

    def index_ids(self) -> np.ndarray:
        """The ids the dense index holds, ascending (it is loaded and caught up first)."""
        index = self._loaded_index()
        return np.zeros(0, dtype=np.int64) if index is None else index.ids()

    def _apply_pending(self) -> None:
        """Mirror a committed write in the loaded index (an unloaded one catches up when loaded)."""
        pending, self._pending = self._pending, []
        if self._rebuild:
            self._rebuild = False
            self._index = None  # the commit's new generation makes the saved file stale: rebuilt on use
            return
        if self._index is None:
            return
        for add_ids, vectors, drop_ids in pending:
            self._index.remove(drop_ids)
            if vectors is not None and len(add_ids):
                self._index.add(add_ids, vectors)

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    @property
    def generation(self) -> int:
        """Counter bumped by every committed write; the FAISS file records the one it matches."""
        return int(self.get_meta("generation") or 0)

    def _bump_generation(self) -> None:
        self.set_meta("generation", str(self.generation + 1))

    # -- writes (call inside transaction()) ------------------------------------------------

    def lock_namespaces(self, namespaces: Sequence[ns.Namespace]) -> None:
        """Nothing to take: the writer lock already makes this process the only writer."""

    def insert(
        self, namespace: ns.Namespace, rows: Sequence[NewRow], now: float | None = None
    ) -> tuple[list[int], list[int]]:
        """Insert rows; a row whose key exists in the namespace replaces it (keeps created_at).

        Returns ``(new ids, ids of the rows that were replaced)``.
        """
        key = ns.to_key(namespace)
        now = time.time() if now is None else now
        ids: list[int] = []
        replaced: list[int] = []
        lengths = self.tokenizer.lengths([row.index_text for row in rows])
        for row, n_tokens in zip(rows, lengths):
            turn = row.turn
            created = now
            if turn.key is not None:
                old = self.db.execute(
                    "SELECT id, created_at FROM turns WHERE namespace = ? AND key = ?", (key, turn.key)
                ).fetchone()
                if old is not None:
                    created = old["created_at"]
                    replaced.append(old["id"])
                    self.db.execute("DELETE FROM turns WHERE id = ?", (old["id"],))
            cur = self.db.execute(
                "INSERT INTO turns(namespace, key, role, speaker, content, index_text, timestamp,"
                " created_at, updated_at, metadata, content_hash, vector, n_tokens)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    key,
                    turn.key,
                    turn.role,
                    turn.speaker,
                    turn.content,
                    row.index_text,
                    turn.timestamp,
                    created,
                    now,
                    json.dumps(turn.metadata, ensure_ascii=False),
                    row.content_hash,
                    np.asarray(row.vector, dtype=np.float32).tobytes(),
                    n_tokens,
                ),
            )
            ids.append(int(cur.lastrowid))  # type: ignore[arg-type]
        # A row can be both new and replaced when one call upserts the same key twice.
        gone = set(replaced)
        keep = [j for j, i in enumerate(ids) if i not in gone]
        vectors = np.stack([np.asarray(rows[j].vector, dtype=np.float32) for j in keep]) if keep else None
        self._pending.append((np.asarray([ids[j] for j in keep], dtype=np.int64), vectors, np.asarray(sorted(gone), dtype=np.int64)))
        return ids, replaced

    def delete(self, ids: Sequence[int]) -> list[int]:
        """Delete turns by id; returns the ids that existed."""
        found: list[int] = []
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            found += [r[0] for r in self.db.execute(f"SELECT id FROM turns WHERE id IN ({marks})", chunk)]
            self.db.execute(f"DELETE FROM turns WHERE id IN ({marks})", chunk)
        self._pending.append((np.zeros(0, np.int64), None, np.asarray(found, dtype=np.int64)))
        return found

    def set_vectors(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Replace the stored vectors of ``ids`` (``vectors``: (n, d), in the same order)."""
        self.db.executemany(
            "UPDATE turns SET vector = ? WHERE id = ?",
            [(np.asarray(v, dtype=np.float32).tobytes(), int(i)) for i, v in zip(ids, vectors)],
        )
        self._rebuild = True

    def drop_slot_states(self) -> None:
        """Forget every namespace's slot state (rebuilt from the turns on next use)."""
        self.db.execute("DELETE FROM slot_states")

    def forget(self, prefix: ns.Namespace) -> list[int]:
        """Delete every turn and slot state under ``prefix``; returns the deleted turn ids."""
        low, high = ns.prefix_range(prefix)
        ids = [r[0] for r in self.db.execute("SELECT id FROM turns WHERE namespace >= ? AND namespace < ?", (low, high))]
        self.db.execute("DELETE FROM turns WHERE namespace >= ? AND namespace < ?", (low, high))
        self.db.execute("DELETE FROM slot_states WHERE namespace >= ? AND namespace < ?", (low, high))
        self._pending.append((np.zeros(0, np.int64), None, np.asarray(ids, dtype=np.int64)))
        return ids

    def scrub(self) -> None:
        """Make deletions physical: merge FTS segments (drops deleted tokens), truncate the WAL,
        and save the dense index without the deleted vectors."""
        self.db.execute("INSERT INTO turns_fts(turns_fts) VALUES ('optimize')")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        index = self._loaded_index()  # loading catches it up: deleted ids leave it
        if index is not None and not self.read_only:
            index.save(self.generation)

    # -- reads ------------------------------------------------------------------------------

    def existing_hashes(self, namespace: ns.Namespace, hashes: Sequence[str]) -> set[str]:
        key = ns.to_key(namespace)
        found: set[str] = set()
        for chunk in _chunks(list(hashes)):
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0]
                for r in self.db.execute(
                    f"SELECT content_hash FROM turns WHERE namespace = ? AND content_hash IN ({marks})", (key, *chunk)
                )
            )
        return found

    def get(self, ids: Sequence[int]) -> list[StoredTurn]:
        """Turns by id, in the order asked; unknown ids are left out."""
        by_id: dict[int, StoredTurn] = {}
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            for r in self.db.execute(f"SELECT * FROM turns WHERE id IN ({marks})", chunk):
                by_id[r["id"]] = _stored(r)
        return [by_id[i] for i in ids if i in by_id]

    def get_by_key(self, namespace: ns.Namespace, key: str) -> StoredTurn | None:
        r = self.db.execute(
            "SELECT * FROM turns WHERE namespace = ? AND key = ?", (ns.to_key(namespace), key)
        ).fetchone()
        return None if r is None else _stored(r)

    def select(
        self,
        prefix: ns.Namespace,
        filters: Filters | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        order: str = "id",
    ) -> list[StoredTurn]:
        """Turns under ``prefix`` matching ``filters``, ordered by ``id`` or ``-updated_at``."""
        low, high = ns.prefix_range(prefix)
        cond, params = compile_filters(filters)
        order_sql = {"id": "t.id", "-updated_at": "t.updated_at DESC, t.id"}[order]
        rows = self.db.execute(
            f"SELECT * FROM turns t WHERE t.namespace >= ? AND t.namespace < ? AND {cond}"
            f" ORDER BY {order_sql} LIMIT ? OFFSET ?",
            (low, high, *params, -1 if limit is None else limit, offset),
        )
        return [_stored(r) for r in rows]

    def iter_select(self, prefix: ns.Namespace, batch: int = 1000) -> Iterator[list[StoredTurn]]:
        """Every turn under ``prefix`` in id order, ``batch`` at a time (keyset paging: no OFFSET scans)."""
        low, high = ns.prefix_range(prefix)
        last = -1
        while True:
            rows = self.db.execute(
                "SELECT * FROM turns WHERE namespace >= ? AND namespace < ? AND id > ? ORDER BY id LIMIT ?",
                (low, high, last, batch),
            ).fetchall()
            if not rows:
                return
            yield [_stored(r) for r in rows]
            last = int(rows[-1]["id"])

    def ids_in(self, prefix: ns.Namespace, filters: Filters | None = None) -> np.ndarray:
        """Ids of the turns under ``prefix`` matching ``filters`` (int64, ascending)."""
        low, high = ns.prefix_range(prefix)
        cond, params = compile_filters(filters)
        rows = self.db.execute(
            f"SELECT t.id FROM turns t WHERE t.namespace >= ? AND t.namespace < ? AND {cond} ORDER BY t.id",
            (low, high, *params),
        ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def lexical(self, terms: Sequence[str], prefix: ns.Namespace, filters: Filters | None = None) -> dict[int, float]:
        """BM25 of every turn under ``prefix`` (matching ``filters``) that holds a term; higher is better.

        The statistics are those of the prefix alone (:mod:`ctxmem_plugin.storage.bm25`): turns
        outside it never change these scores, and filters narrow the turns scored, not them.
        """
        if not terms:
            return {}
        low, high = ns.prefix_range(prefix)
        scores = bm25_scoring.scores(self.db, self.tokenizer.tokens(list(terms)), low, high)
        if filters:
            allowed = set(self.ids_in(prefix, filters).tolist())
            scores = {i: s for i, s in scores.items() if i in allowed}
        return scores

    def dense(
        self, vector: np.ndarray, k: int, prefix: ns.Namespace, filters: Filters | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` turns under ``prefix`` (matching ``filters``) nearest to ``vector`` by inner product.

        FAISS scores only the ids under the prefix (an ``IDSelectorBatch``), never the others.
        """
        index = self._loaded_index()
        if index is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return index.search(vector, k, self.ids_in(prefix, filters))

    def vector_map(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored vectors by id, ``(dim,)`` float32 each; unknown ids are left out."""
        by_id: dict[int, np.ndarray] = {}
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            for turn_id, blob in self.db.execute(f"SELECT id, vector FROM turns WHERE id IN ({marks})", chunk):
                by_id[int(turn_id)] = np.frombuffer(blob, dtype=np.float32)
        return by_id

    def vectors(self, ids: Sequence[int], dim: int) -> np.ndarray:
        """Stored vectors of ``ids`` in that order, (n, dim) float32; all ids must exist."""
        by_id = self.vector_map(ids)
        out = np.zeros((len(ids), dim), dtype=np.float32)
        for i, turn_id in enumerate(ids):
            out[i] = by_id[turn_id]
        return out

    def iter_vectors(self, batch: int = 4096, prefix: ns.Namespace = ()) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids, vectors) under ``prefix`` in id order, in batches (for index rebuilds, slot replays)."""
        low, high = ns.prefix_range(prefix)
        last = -1
        while True:
            rows = self.db.execute(
                "SELECT id, vector FROM turns WHERE namespace >= ? AND namespace < ? AND id > ? ORDER BY id LIMIT ?",
                (low, high, last, batch),
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            yield ids, vecs
            last = int(ids[-1])

    def ids_after(self, namespace: ns.Namespace, last: int) -> list[int]:
        """Ids of the turns of exactly ``namespace`` after id ``last``, ascending."""
        rows = self.db.execute(
            "SELECT id FROM turns WHERE namespace = ? AND id > ? ORDER BY id", (ns.to_key(namespace), last)
        ).fetchall()
        return [int(r[0]) for r in rows]

    def namespace_vectors(self, namespace: ns.Namespace, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` of the turns of exactly ``namespace``, in id order; ``(t,)`` and ``(t, dim)``."""
        rows = self.db.execute(
            "SELECT id, vector FROM turns WHERE namespace = ? ORDER BY id", (ns.to_key(namespace),)
        ).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if not rows:
            return ids, np.zeros((0, dim), np.float32)
        return ids, np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])

    def neighbours(self, ids: Sequence[int]) -> dict[int, tuple[int | None, int | None]]:
        """For each id, the previous and next turn ids in the same exact namespace."""
        out: dict[int, tuple[int | None, int | None]] = {}
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                "SELECT c.id,"
                " (SELECT MAX(p.id) FROM turns p WHERE p.namespace = c.namespace AND p.id < c.id),"
                " (SELECT MIN(n.id) FROM turns n WHERE n.namespace = c.namespace AND n.id > c.id)"
                f" FROM turns c WHERE c.id IN ({marks})",
                chunk,
            )
            out.update((r[0], (r[1], r[2])) for r in rows)
        return out

    def namespace_of(self, ids: Sequence[int]) -> dict[int, ns.Namespace]:
        out: dict[int, ns.Namespace] = {}
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            out.update((r[0], ns.from_key(r[1])) for r in self.db.execute(f"SELECT id, namespace FROM turns WHERE id IN ({marks})", chunk))
        return out

    def namespaces(self, prefix: ns.Namespace = ()) -> list[tuple[ns.Namespace, int]]:
        """Every exact namespace under ``prefix`` with its turn count, sorted."""
        low, high = ns.prefix_range(prefix)
        rows = self.db.execute(
            "SELECT namespace, COUNT(*) FROM turns WHERE namespace >= ? AND namespace < ? GROUP BY namespace ORDER BY namespace",
            (low, high),
        )
        return [(ns.from_key(r[0]), int(r[1])) for r in rows]

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM turns").fetchone()[0])

    def all_ids(self) -> np.ndarray:
        rows = self.db.execute("SELECT id FROM turns ORDER BY id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    # -- slot states --------------------------------------------------------------------------

    def get_slot_state(self, namespace: ns.Namespace) -> SlotState | None:
        """``(model_id, last_turn_id, turns, state bytes)`` of one exact namespace, if any."""
        r = self.db.execute(
            "SELECT model_id, last_turn_id, turns, state FROM slot_states WHERE namespace = ?", (ns.to_key(namespace),)
        ).fetchone()
        return None if r is None else (r[0], int(r[1]), int(r[2]), bytes(r[3]))

    def put_slot_state(self, namespace: ns.Namespace, model_id: str, last_turn_id: int, turns: int, state: bytes) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO slot_states(namespace, model_id, last_turn_id, turns, state, updated_at)"
            " VALUES (?,?,?,?,?,?)",
            (ns.to_key(namespace), model_id, last_turn_id, turns, state, time.time()),
        )


def _stored(r: sqlite3.Row) -> StoredTurn:
    return StoredTurn(
        id=r["id"],
        namespace=ns.from_key(r["namespace"]),
        role=r["role"],
        speaker=r["speaker"],
        content=r["content"],
        timestamp=r["timestamp"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        metadata=json.loads(r["metadata"]),
        key=r["key"],
    )
