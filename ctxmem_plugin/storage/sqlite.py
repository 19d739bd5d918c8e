"""LongTermStore: the embedded backend, one directory holding one SQLite database.

Rows, texts, metadata, vectors, the full-text postings, the approximate index's cells and the
slot states all live in ``memory.sqlite3``, in WAL mode. A write is acknowledged when its
transaction commits, and ``synchronous=FULL`` makes that durable. Nothing is kept beside the
database: dense search reads the vectors of the prefix it searches in its own snapshot
(:mod:`.prefix`; :mod:`.ann` above ``IndexConfig.exact_limit`` turns), so there is no index
file to load on open, save on close or catch up after a crash or another process's write.
Every read that takes a namespace is restricted in SQL to that prefix.
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
from ctxmem_plugin.errors import InputError
from ctxmem_plugin.filters import Filters, compile_filters
from ctxmem_plugin.records import StoredTurn
from ctxmem_plugin.storage import bm25 as bm25_scoring
from ctxmem_plugin.storage import vectors as flat
from ctxmem_plugin.storage.ann import AnnIndex, IndexConfig
from ctxmem_plugin.storage.base import Finding, NewRow, SlotShape, SlotState
from ctxmem_plugin.storage.lock import WriterLock
from ctxmem_plugin.storage.prefix import PrefixView
from ctxmem_plugin.storage.schema import migrate, require_current

DB_NAME = "memory.sqlite3"
VECTOR_DTYPES = ("float32", "float16")
_SQL_VARS = 900  # stay under SQLite's bound-parameter limit in IN (...) lists
SCRUB_PENDING = "scrub_pending"
"""``meta`` key set by the transaction that deletes turns, cleared once :meth:`LongTermStore.scrub`
has made the deletion physical: a writer that finds it on open (a crash came between) scrubs first."""
# A scrub waits at most this long (ms) for readers to let go of the log, then leaves it pending: under
# a steady stream of searches the log may not be free for long, and the writer holds its lock meanwhile.
_SCRUB_WAIT_MS = 2000
# Files of the whole-memory FAISS index that earlier versions kept beside the database.
_RETIRED_FILES = ("vectors.faiss", "vectors.json", "vectors.tmp")


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
        index: how dense search is done (exact up to a prefix size, approximate above it).
        lock_timeout: a writable store holds the directory's writer lock
            (:mod:`ctxmem_plugin.storage.lock`) until closed; seconds to wait for another
            process that holds it. ``None``: the caller holds it.
    """

    def __init__(
        self, directory: Path, *, read_only: bool = False, index: IndexConfig | None = None, lock_timeout: float | None = None
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME
        self.read_only = read_only
        self.index_config = index or IndexConfig()
        self.ann = AnnIndex(self.index_config)
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
        self._depth = 0  # open transaction() / reading() blocks: one SQL transaction for all
        self._grew = False  # the open transaction added or replaced vectors: the cells may need training
        # What one reading() block has read of each prefix: its turns, shared by the reads of one search.
        self._views: dict[str, PrefixView] | None = None
        self._decode: str | None = None
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        # Freed pages are zeroed, so deleted memories are not left readable in the file.
        self.db.execute("PRAGMA secure_delete=ON")
        # 64 MB of page cache (2 MB by default): large batches keep the indexes' hot pages in memory.
        self.db.execute("PRAGMA cache_size=-65536")
        if not read_only:
            migrate(self.db)
            for name in _RETIRED_FILES:  # derived data nothing reads any more (and may hold forgotten vectors)
                (self.directory / name).unlink(missing_ok=True)
        else:
            require_current(self.db, self.path)
        self.db.execute("PRAGMA query_only=ON" if read_only else "PRAGMA query_only=OFF")
        self.tokenizer = bm25_scoring.Tokenizer()
        if not read_only and self.scrub_pending:
            self.scrub()  # a deletion committed before a crash (or a busy close) left words in the indexes

    @property
    def location(self) -> str:
        return str(self.directory)

    def close(self) -> None:
        """Close the database (everything is in it already) and release the writer lock.

        A writer first scrubs what its deletes and key replacements left in the full-text indexes
        (:meth:`scrub`), waiting a little for readers; what a reader keeps is scrubbed on next open.
        """
        try:
            if not self.read_only and self._depth == 0 and self.scrub_pending:
                self.scrub()
        finally:
            try:
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
        """Nothing to persist: every write is in the database when its transaction commits."""

    @property
    def schema_version(self) -> int:
        """The last migration applied (``PRAGMA user_version``)."""
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    # -- transactions and meta -------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write: everything inside commits together or not at all.

        A write that takes the memory past ``exact_limit`` turns (or grows it ``retrain_growth``
        times since) trains the approximate index's cells before it commits.
        """
        self.db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
            if self._grew:
                self._train_if_due()
            self._bump_generation()
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        finally:
            self._grew = False
            self._depth -= 1

    @contextmanager
    def reading(self) -> Iterator[None]:
        """One consistent read: the SQL reads inside see one snapshot (nested blocks share it).

        The turns of a prefix read by one call (dense search) are kept until the block ends and
        serve the others (BM25 lengths, neighbours, candidate vectors): they come from the same
        snapshot.
        """
        if self._depth:
            yield
            return
        self.db.execute("BEGIN")
        self._depth += 1
        self._views = {}
        try:
            yield
        finally:
            self._views = None
            self._depth -= 1
            self.db.execute("COMMIT")

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        if key == "vector_dtype" and value not in VECTOR_DTYPES:
            raise InputError(f"vector_dtype must be one of {', '.join(VECTOR_DTYPES)}, got {value!r}")
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
        if key == "vector_dtype":
            self._decode = None

    @property
    def generation(self) -> int:
        """Counter bumped by every committed write."""
        return int(self.get_meta("generation") or 0)

    def _bump_generation(self) -> None:
        self.set_meta("generation", str(self.generation + 1))

    # -- vectors -------------------------------------------------------------------------------

    @property
    def dim(self) -> int | None:
        """Width of the stored vectors, once the memory has recorded its encoder."""
        recorded = self.get_meta("dim")
        return int(recorded) if recorded else None

    @property
    def vector_dtype(self) -> str:
        """How vectors are stored: ``float32`` (default) or ``float16`` (half the bytes; meta ``vector_dtype``)."""
        if self._decode is None:
            self._decode = self.get_meta("vector_dtype") or "float32"
        return self._decode

    def _blob(self, vector: np.ndarray) -> bytes:
        return np.asarray(vector, dtype=self.vector_dtype).tobytes()

    def _decoded(self, blobs: Sequence[bytes], dim: int | None = None) -> np.ndarray:
        """Stored vector blobs -> ``(n, dim)`` float32."""
        dtype = np.dtype(self.vector_dtype)
        if not blobs:
            return np.zeros((0, dim or 0), np.float32)
        raw = np.frombuffer(b"".join(blobs), dtype=dtype).reshape(len(blobs), -1)
        return raw.astype(np.float32, copy=dtype != np.float32)

    def prefix_count(self, prefix: ns.Namespace) -> int:
        """Turns under ``prefix``, from the per-namespace counters."""
        low, high = ns.prefix_range(prefix)
        return bm25_scoring.prefix_stats(self.db, low, high)[0]

    def _view(self, prefix: ns.Namespace) -> PrefixView | None:
        """The turns of ``prefix`` when it is small enough to search exactly (kept for the reading block)."""
        key = ns.to_key(prefix)
        if self._views is not None and key in self._views:
            return self._views[key]
        dim = self.dim
        if dim is None or self.prefix_count(prefix) > self.index_config.exact_limit:
            return None
        low, high = ns.prefix_range(prefix)
        view = PrefixView.read(self.db, low, high, dim, self.vector_dtype)
        if self._views is not None:
            self._views[key] = view
        return view

    def rebuild_index(self) -> int:
        """Drop the approximate index and train it again if the memory is large enough (inside a
        write transaction); returns the cells trained (0: the memory is searched exactly)."""
        self.ann.drop(self.db)
        dim = self.dim
        if dim is None or not self.ann.needs_training(self.db, self.count()):
            return 0
        return self.ann.train(self.db, dim, self.vector_dtype)

    def _train_if_due(self) -> None:
        dim = self.dim
        if dim is not None and self.ann.needs_training(self.db, self.count()):
            self.ann.train(self.db, dim, self.vector_dtype)

    # -- writes (call inside transaction()) ------------------------------------------------

    def lock_namespaces(self, namespaces: Sequence[ns.Namespace]) -> bool:
        """Nothing to take: the writer lock already makes this process the only writer."""
        return False

    def insert(
        self, namespace: ns.Namespace, rows: Sequence[NewRow], now: float | None = None
    ) -> tuple[list[int], list[int]]:
        """Insert rows into one namespace (:meth:`insert_many` with one namespace)."""
        return self.insert_many([(namespace, row) for row in rows], now)

    def insert_many(
        self, entries: Sequence[tuple[ns.Namespace, NewRow]], now: float | None = None
    ) -> tuple[list[int], list[int]]:
        """Insert rows of any namespaces; a row whose key exists in its namespace replaces it (keeps created_at).

        Returns ``(new ids in the order given, ids of the rows that were replaced)``. One
        statement per table for the whole batch, whatever the number of namespaces; ids are
        allocated in order after the largest ever used.
        """
        if not entries:
            return [], []
        keys = [ns.to_key(space) for space, _ in entries]
        rows = [row for _, row in entries]
        now = time.time() if now is None else now
        first = int(
            self.db.execute(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'turns'), 0),"
                " coalesce((SELECT max(id) FROM turns), 0))"
            ).fetchone()[0]
        ) + 1
        ids = list(range(first, first + len(rows)))
        created = [now] * len(rows)
        replaced: list[int] = []
        skip = self._replacements(keys, rows, ids, created, replaced)
        keep = [j for j in range(len(rows)) if j not in skip]
        tokens = self.tokenizer.tokens([rows[j].index_text for j in keep])
        self.db.executemany(
            "INSERT INTO turns(id, namespace, key, role, speaker, content, index_text, timestamp,"
            " created_at, updated_at, metadata, content_hash, vector, n_tokens)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    ids[j], keys[j], rows[j].turn.key, rows[j].turn.role, rows[j].turn.speaker, rows[j].turn.content,
                    rows[j].index_text, rows[j].turn.timestamp, created[j], now,
                    json.dumps(rows[j].turn.metadata, ensure_ascii=False), rows[j].content_hash,
                    self._blob(rows[j].vector), len(tok),
                )
                for j, tok in zip(keep, tokens)
            ],
        )
        self.db.executemany(
            "INSERT INTO turns_nsfts(rowid, terms) VALUES (?, ?)",
            [(ids[j], bm25_scoring.namespaced_terms(tok, keys[j])) for j, tok in zip(keep, tokens)],
        )
        if keep:
            vecs = np.stack([np.asarray(rows[j].vector, dtype=np.float32) for j in keep])  # (n, d)
            if self.vector_dtype != "float32":
                vecs = vecs.astype(self.vector_dtype).astype(np.float32)  # as stored
            self.ann.assign(self.db, [ids[j] for j in keep], [keys[j] for j in keep], vecs)
        self._grew = True
        return ids, replaced

    def _replacements(
        self, keys: Sequence[str], rows: Sequence[NewRow], ids: Sequence[int], created: list[float], replaced: list[int]
    ) -> set[int]:
        """Resolve caller keys: delete the stored rows that new ones replace (their created_at is
        kept); within the batch the last row with a key wins, the earlier ones count as inserted
        then replaced. Returns the positions not to insert."""
        keyed = [j for j, row in enumerate(rows) if row.turn.key is not None]
        skip: set[int] = set()
        if not keyed:
            return skip
        stored: dict[tuple[str, str], tuple[int, float]] = {}
        by_space: dict[str, list[str]] = {}
        for j in keyed:
            by_space.setdefault(keys[j], []).append(rows[j].turn.key)  # type: ignore[arg-type]
        for space, wanted in by_space.items():
            for chunk in _chunks(list(dict.fromkeys(wanted))):
                marks = ",".join("?" * len(chunk))
                for r in self.db.execute(
                    f"SELECT key, id, created_at FROM turns WHERE namespace = ? AND key IN ({marks})", (space, *chunk)
                ):
                    stored[(space, r[0])] = (int(r[1]), float(r[2]))
        last: dict[tuple[str, str], int] = {}
        for j in keyed:
            k = (keys[j], rows[j].turn.key or "")
            if k in last:
                replaced.append(ids[last[k]])
                skip.add(last[k])
                created[j] = created[last[k]]
            elif k in stored:
                replaced.append(stored[k][0])
                created[j] = stored[k][1]
            last[k] = j
        if stored:
            self._delete_ids([v[0] for v in stored.values()])
        return skip

    def _delete_ids(self, ids: Sequence[int]) -> list[int]:
        """Delete turns by id with their namespaced postings; returns the ids that existed."""
        found: list[int] = []
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT id, namespace, index_text FROM turns WHERE id IN ({marks})", chunk).fetchall()
            self._unindex(rows)
            found += [r[0] for r in rows]
            self.db.execute(f"DELETE FROM turns WHERE id IN ({marks})", chunk)
        if found:
            self.set_meta(SCRUB_PENDING, "1")
        return found

    def _unindex(self, rows: Sequence[sqlite3.Row]) -> None:
        """Take turns out of the contentless ``turns_nsfts`` (it must be told the tokens it was given)."""
        tokens = self.tokenizer.tokens([r[2] for r in rows])
        self.db.executemany(
            "INSERT INTO turns_nsfts(turns_nsfts, rowid, terms) VALUES ('delete', ?, ?)",
            [(r[0], bm25_scoring.namespaced_terms(t, r[1])) for r, t in zip(rows, tokens)],
        )

    def delete(self, ids: Sequence[int]) -> list[int]:
        """Delete turns by id; returns the ids that existed."""
        return self._delete_ids(ids)

    def set_vectors(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Replace the stored vectors of ``ids`` (``vectors``: (n, d), in the same order).

        The approximate index's cells were computed from the old vectors: they are dropped, and
        trained again from the new ones when the transaction commits (if the memory is large).
        """
        self.db.executemany(
            "UPDATE turns SET vector = ? WHERE id = ?", [(self._blob(v), int(i)) for i, v in zip(ids, vectors)]
        )
        self.ann.drop(self.db)
        self._grew = True

    def drop_slot_states(self) -> None:
        """Forget every namespace's slot state (rebuilt from the turns on next use)."""
        self.db.execute("DELETE FROM slot_states")

    def forget(self, prefix: ns.Namespace) -> list[int]:
        """Delete every turn and slot state under ``prefix``; returns the deleted turn ids."""
        low, high = ns.prefix_range(prefix)
        ids: list[int] = []
        last = -1
        while True:  # in id pages: the postings to take out are tokenized a page at a time
            rows = self.db.execute(
                "SELECT id, namespace, index_text FROM turns WHERE namespace >= ? AND namespace < ? AND id > ?"
                " ORDER BY id LIMIT 4096", (low, high, last),
            ).fetchall()
            if not rows:
                break
            self._unindex(rows)
            ids += [int(r[0]) for r in rows]
            last = ids[-1]
        self.db.execute("DELETE FROM turns WHERE namespace >= ? AND namespace < ?", (low, high))
        self.db.execute("DELETE FROM slot_states WHERE namespace >= ? AND namespace < ?", (low, high))
        if ids:
            self.set_meta(SCRUB_PENDING, "1")
        return ids

    @property
    def scrub_pending(self) -> bool:
        """Whether a committed deletion has not been scrubbed yet (:data:`SCRUB_PENDING`)."""
        return self.get_meta(SCRUB_PENDING) is not None

    def scrub(self) -> bool:
        """Make deletions physical; returns whether nothing of them is left on disk.

        FTS5 deletes by adding "delete" entries: the deleted words stay in the older segments until
        they are merged, so both full-text indexes are merged into one segment each (freed pages are
        zeroed: ``secure_delete``). SQLite (3.40) does not zero the unused middle of a page it
        rebuilds while rebalancing a b-tree, where bytes of a deleted row can stay in a live page:
        ``VACUUM`` then rewrites the file (its cost grows with the memory's size). Last, the
        write-ahead log, which holds earlier page images, is checkpointed and truncated. A reader holding a transaction keeps the log: after waiting up
        to 2 s for it this returns ``False`` and the pending mark stays, so the writer's close or
        the next writer to open the memory finishes it. Not inside a transaction: it commits its own.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("INSERT INTO turns_fts(turns_fts) VALUES ('optimize')")
            self.db.execute("INSERT INTO turns_nsfts(turns_nsfts) VALUES ('optimize')")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("VACUUM")
        (usual,) = self.db.execute("PRAGMA busy_timeout").fetchone()
        self.db.execute(f"PRAGMA busy_timeout={min(int(usual), _SCRUB_WAIT_MS)}")
        try:
            busy, _, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                return False
            if self.scrub_pending:
                self.db.execute("DELETE FROM meta WHERE key = ?", (SCRUB_PENDING,))  # autocommit
                busy, _, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return not busy
        finally:
            self.db.execute(f"PRAGMA busy_timeout={int(usual)}")

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
        The postings read are the prefix's own (``turns_nsfts``), never the whole memory's.
        """
        if not terms:
            return {}
        low, high = ns.prefix_range(prefix)
        # In a reading block the prefix's turns are read once for the whole search (dense search
        # and neighbours use them too); outside one, the few lengths needed are read by id.
        view = self._view(prefix) if self._views is not None else None
        lengths_of = None
        if view is not None:
            def lengths_of(ids: Sequence[int]) -> dict[int, int]:
                return dict(zip(ids, view.lengths[view.positions(ids)].tolist()))

        scores = bm25_scoring.scores(self.db, self.tokenizer.tokens(list(terms)), low, high, lengths_of)
        if filters:
            allowed = set(self.ids_in(prefix, filters).tolist())
            scores = {i: s for i, s in scores.items() if i in allowed}
        return scores

    def dense(
        self, vector: np.ndarray, k: int, prefix: ns.Namespace, filters: Filters | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` turns under ``prefix`` (matching ``filters``) nearest to ``vector`` by inner product.

        Exact over the prefix's own vectors up to ``exact_limit`` turns; above it, approximate
        (:mod:`.ann`), reading only the prefix's turns of the cells probed. Only turns under the
        prefix are ever scored.
        """
        empty = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        dim = self.dim
        if dim is None or k <= 0:
            return empty
        view = self._view(prefix)
        if view is not None:
            return view.search(vector, k, self.ids_in(prefix, filters) if filters else None)
        low, high = ns.prefix_range(prefix)
        cond, params = compile_filters(filters)
        found = self.ann.search(self.db, vector, k, low, high, cond, params, dim, self.vector_dtype)
        if found is not None:
            return found
        return self._exact_scan(vector, k, low, high, cond, params, dim)

    def _exact_scan(
        self, vector: np.ndarray, k: int, low: str, high: str, cond: str, params: Sequence[object], dim: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search of a large prefix without trained cells (a memory no writer has trained yet), in pages."""
        best_ids, best_scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
        last = -1
        while True:
            rows = self.db.execute(
                f"SELECT t.id, t.vector FROM turns t WHERE t.namespace >= ? AND t.namespace < ? AND {cond}"
                " AND t.id > ? ORDER BY t.id LIMIT 65536", (low, high, *params, last),
            ).fetchall()
            if not rows:
                break
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = self._decoded([r[1] for r in rows], dim)
            page_ids, page_scores = flat.top_k(vector, vecs, ids, k)
            merged_ids = np.concatenate([best_ids, page_ids])
            merged = np.concatenate([best_scores, page_scores])
            order = np.lexsort((merged_ids, -merged))[:k]
            best_ids, best_scores = merged_ids[order], merged[order]
            last = int(ids[-1])
        return best_ids, best_scores

    def _from_views(self, ids: Sequence[int]) -> list[tuple[PrefixView, np.ndarray]]:
        """The prefix views of this reading block, each with the positions of ``ids`` in it."""
        if not self._views:
            return []
        return [(view, view.positions(ids)) for view in self._views.values()]

    def vector_map(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored vectors by id, ``(dim,)`` float32 each; unknown ids are left out."""
        by_id: dict[int, np.ndarray] = {}
        ids = [int(i) for i in ids]
        for view, pos in self._from_views(ids):
            for turn_id, j in zip(ids, pos.tolist()):
                if j >= 0:
                    by_id[turn_id] = view.vectors[j]
        rest = [i for i in ids if i not in by_id]
        for chunk in _chunks(rest):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT id, vector FROM turns WHERE id IN ({marks})", chunk).fetchall()
            by_id.update(zip((int(r[0]) for r in rows), self._decoded([r[1] for r in rows])))
        return by_id

    def vectors(self, ids: Sequence[int], dim: int) -> np.ndarray:
        """Stored vectors of ``ids`` in that order, (n, dim) float32; all ids must exist."""
        for view, pos in self._from_views(ids):
            if len(pos) and (pos >= 0).all():
                return view.vectors[pos]
        by_id = self.vector_map(ids)
        out = np.zeros((len(ids), dim), dtype=np.float32)
        for i, turn_id in enumerate(ids):
            out[i] = by_id[int(turn_id)]
        return out

    def iter_vectors(self, batch: int = 4096, prefix: ns.Namespace = ()) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids, vectors) under ``prefix`` in id order, in batches (slot replays, re-encoding)."""
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
            yield ids, self._decoded([r[1] for r in rows])
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
        return ids, self._decoded([r[1] for r in rows], dim)

    def neighbours(self, ids: Sequence[int]) -> dict[int, tuple[int | None, int | None]]:
        """For each id, the previous and next turn ids in the same exact namespace."""
        out: dict[int, tuple[int | None, int | None]] = {}
        rest = [int(i) for i in ids]
        for view in (self._views or {}).values():
            found, rest = view.neighbours(rest)
            out.update(found)
            if not rest:
                return out
        for chunk in _chunks(rest):
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
        """Every exact namespace under ``prefix`` with its turn count, sorted (from the counters, not the turns)."""
        low, high = ns.prefix_range(prefix)
        rows = self.db.execute(
            "SELECT namespace, turns FROM namespace_stats WHERE namespace >= ? AND namespace < ? ORDER BY namespace",
            (low, high),
        )
        return [(ns.from_key(r[0]), int(r[1])) for r in rows]

    def count(self) -> int:
        """Turns stored (from the per-namespace counters)."""
        return int(self.db.execute("SELECT total(turns) FROM namespace_stats").fetchone()[0])

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

    # -- integrity (``ctxmem-plugin doctor``) -------------------------------------------------

    def check(self, *, slots: SlotShape | None = None) -> list[Finding]:
        """Every problem found in this memory's files (:func:`ctxmem_plugin.storage.integrity.check`)."""
        from ctxmem_plugin.storage import integrity  # it opens stores itself: imported when used

        return integrity.check(self.directory, slots=slots)

    def repair(self, *, slots: SlotShape | None = None) -> list[str]:
        """Rebuild what SQLite holds the truth for (:func:`ctxmem_plugin.storage.integrity.repair`)."""
        from ctxmem_plugin.storage import integrity

        done = integrity.repair(self.directory, slots=slots)
        self.ann = AnnIndex(self.index_config)  # its centroids may have been retrained: read again on use
        self._decode = None
        return done


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
