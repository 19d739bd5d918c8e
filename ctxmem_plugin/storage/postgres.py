"""PostgresStore: the long-term store in PostgreSQL, for deployments that outgrow one machine.

One database (the schema ``ctxmem``, :mod:`ctxmem_plugin.storage.postgres_schema`) holds the
rows, vectors (pgvector), full-text postings (``tsvector`` + GIN), BM25 statistics per
namespace, slot states and meta, so any number of stateless front ends can share one memory:
unlike the embedded store, many processes may write at once (a namespace's writes are
serialised by an advisory lock, :meth:`PostgresStore.lock_namespaces`).

Search behaves as the embedded store's, scores aside:

- lexical: the turns' tokens are those of the embedded store's tokenizer (FTS5's porter
  unicode61, run in-process), stored as a ``tsvector`` with positions, so both backends match
  the same words; BM25 is computed with the statistics of the prefix searched
  (``namespace_stats``), never the whole table's, so another tenant's turns never move a
  namespace's scores. A ``tsvector`` keeps at most 256 positions per word and none past the
  16,383rd token: only a word repeated more often, or a turn longer than that, scores
  differently from the embedded store.
- dense: inner product on pgvector. A prefix of at most ``exact_below`` turns is searched
  exactly (ties by id: the embedded store's ranking); a larger one through the HNSW index,
  approximate, with ``hnsw.ef_search`` at least ``k`` and pgvector's iterative scan so that a
  selective prefix still fills ``k``. Recall is set server-side: ``ALTER DATABASE db SET
  hnsw.ef_search = 200`` (pgvector's default is 40).

Every statement is parameterised; every read that takes a prefix restricts ``tenant`` (the
first label, the Citus distribution column) and the namespace key range.
"""

from __future__ import annotations

import json
import re
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.config import Config, bounded
from ctxmem_plugin.errors import BackendError, DependencyError, InputError
from ctxmem_plugin.filters import Filters
from ctxmem_plugin.records import StoredTurn
from ctxmem_plugin.storage import bm25 as bm25_scoring
from ctxmem_plugin.storage.base import Finding, NewRow, SlotShape, SlotState
from ctxmem_plugin.storage.postgres_filters import compile_pg_filters
from ctxmem_plugin.storage.postgres_schema import migrate, require_current

MAX_POSITIONS = 256  # a tsvector keeps at most this many positions of one word
MAX_POSITION = 16383  # ... and none past this one
MAX_LEXEME_BYTES = 2046  # a longer token cannot be a tsvector word: it is left out of the postings
MAX_TSVECTOR_BYTES = 1_000_000  # PostgreSQL refuses a tsvector over 1 MiB; stay clear of it
MAX_HNSW_DIM = 2000  # pgvector's HNSW indexes vectors of at most this width
_INDEX_LOCK = 0x63_74_78_69_64_78  # serialises building the HNSW index
_COLUMNS = ("id, namespace, key, role, speaker, content, timestamp, created_at, updated_at, metadata")


@dataclass(frozen=True)
class PostgresSettings(Config):
    """Settings of a PostgreSQL store.

    Attributes:
        pool_min, pool_max: connections the pool keeps open and may open.
        exact_below: a prefix holding at most this many turns is searched exactly (no index).
        hnsw_m, hnsw_ef_construction: build settings of the HNSW index (pgvector's defaults).
        connect_timeout: seconds to wait for the server.
    """

    pool_min: int = bounded(1, low=0, high=1000)
    pool_max: int = bounded(4, low=1, high=1000)
    exact_below: int = bounded(20_000, low=0, high=10**9)
    hnsw_m: int = bounded(16, low=2, high=100)
    hnsw_ef_construction: int = bounded(64, low=4, high=1000)
    connect_timeout: int = bounded(10, low=1, high=3600)


def is_postgres_url(location: str) -> bool:
    """Whether a memory location names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return location.startswith(("postgresql://", "postgres://"))


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"^(postgres(?:ql)?://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise DependencyError(
            "a postgresql:// memory needs psycopg 3 and psycopg_pool: pip install 'ctxmem-plugin[postgres]'"
        ) from exc
    return psycopg


def _quote(lexeme: str) -> str:
    """A word quoted for a ``tsvector`` / ``tsquery`` literal (taken as is: no parsing, no stemming)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector_literal(tokens: Sequence[str]) -> str:
    """The ``tsvector`` of a turn's tokens with their positions (1-based offsets)."""
    positions: dict[str, list[int]] = {}
    for offset, token in enumerate(tokens):
        if len(token.encode("utf-8")) <= MAX_LEXEME_BYTES:
            at = positions.setdefault(token, [])
            if len(at) < MAX_POSITIONS and (not at or at[-1] < MAX_POSITION):
                at.append(min(offset + 1, MAX_POSITION))
    return " ".join(f"{_quote(w)}:{','.join(map(str, at))}" for w, at in positions.items())


def _tsvector_bytes(literal: str) -> int:
    """An upper bound of the stored size of a ``tsvector`` literal (PostgreSQL's limit is 1 MiB)."""
    return len(literal.encode("utf-8")) * 2


# -- pgvector's binary format, read and written with numpy ----------------------------------------


def _vector_adapters(psycopg: Any, conn: Any) -> None:
    """Send numpy arrays as ``vector`` and read ``vector`` as float32 numpy arrays, both binary."""
    from psycopg.adapt import Dumper, Loader
    from psycopg.pq import Format
    from psycopg.types import TypeInfo

    info = TypeInfo.fetch(conn, "vector")
    if info is None:
        raise BackendError("the pgvector extension is not installed in this database (CREATE EXTENSION vector)")

    class VectorDumper(Dumper):
        format = Format.BINARY
        oid = info.oid

        def dump(self, obj: np.ndarray) -> bytes:
            v = np.asarray(obj, dtype=">f4").reshape(-1)
            return struct.pack(">HH", v.shape[0], 0) + v.tobytes()

    class VectorLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> np.ndarray:
            return np.frombuffer(bytes(data), dtype=">f4", offset=4).astype(np.float32)

    class VectorTextLoader(Loader):
        format = Format.TEXT

        def load(self, data: Any) -> np.ndarray:
            return np.array(bytes(data).decode()[1:-1].split(","), dtype=np.float32)

    conn.adapters.register_dumper(np.ndarray, VectorDumper)
    conn.adapters.register_loader(info.oid, VectorLoader)
    conn.adapters.register_loader(info.oid, VectorTextLoader)


class PostgresStore:
    """The store of a memory kept in a PostgreSQL database (:class:`~ctxmem_plugin.storage.base.MemoryStore`).

    Args:
        url: ``postgresql://user[:password]@host[:port]/database`` (libpq's URL; a Unix socket
            as ``postgresql://user@/db?host=/path/to/socket/dir``).
        read_only: open without the right to write; the connections are read-only too.
        create: create the schema if the database holds no memory yet.
        settings: pool, exact-search and HNSW settings.
    """

    def __init__(self, url: str, *, read_only: bool = False, create: bool = True, settings: PostgresSettings | None = None) -> None:
        psycopg = _psycopg()
        from psycopg_pool import ConnectionPool

        self.url = url
        self.read_only = read_only
        self.settings = settings or PostgresSettings()
        self._where = shown(url)
        self._local = threading.local()
        self.tokenizer = bm25_scoring.Tokenizer()
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=self.settings.connect_timeout) as conn:
                if read_only or not create:
                    require_current(conn, self._where)
                if not read_only:
                    migrate(conn, self._where)
        except psycopg.Error as exc:  # unreachable, refused, or not allowed to create the schema
            raise BackendError(f"{self._where}: cannot open the database: {_first_line(exc)}") from None

        def configure(conn: Any) -> None:
            _vector_adapters(psycopg, conn)
            if read_only:
                conn.execute("SET default_transaction_read_only = on")

        self._psycopg = psycopg
        self.pool = ConnectionPool(
            url, min_size=self.settings.pool_min, max_size=self.settings.pool_max, open=True, configure=configure,
            kwargs={"autocommit": True, "connect_timeout": self.settings.connect_timeout}, name="ctxmem",
        )

    @property
    def location(self) -> str:
        return self._where

    def close(self) -> None:
        """Close the connection pool."""
        self.pool.close()

    def flush(self) -> None:
        """Nothing to do: every committed write is in the database."""

    @property
    def schema_version(self) -> int:
        with self._conn() as conn:
            return int(conn.execute("SELECT coalesce(max(version), 0) FROM ctxmem.migrations").fetchone()[0])

    # -- connections, transactions and meta -------------------------------------------------

    @contextmanager
    def _conn(self) -> Iterator[Any]:
        """The connection of the open block in this thread, else one from the pool (autocommit)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        try:
            with self.pool.connection() as conn:
                yield conn
        except self._psycopg.OperationalError as exc:
            raise BackendError(f"{self._where}: {_first_line(exc)}") from None

    def _block(self, what: str) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or not getattr(self._local, "writing", False):
            raise RuntimeError(f"PostgresStore.{what} runs inside transaction()")
        return conn

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write (READ COMMITTED); the generation moves on as its last statement."""
        if getattr(self._local, "conn", None) is not None:
            if not getattr(self._local, "writing", False):
                raise RuntimeError("a write cannot start inside a read snapshot (reading())")
            yield
            return
        if self.read_only:
            raise InputError(f"{self._where}: this memory was opened read-only")
        try:
            with self.pool.connection() as conn, conn.transaction():
                self._local.conn, self._local.writing = conn, True
                try:
                    yield
                    conn.execute("UPDATE ctxmem.meta SET value = (value::bigint + 1)::text WHERE key = 'generation'")
                finally:
                    self._local.conn, self._local.writing = None, False
        except self._psycopg.OperationalError as exc:
            raise BackendError(f"{self._where}: {_first_line(exc)}") from None

    @contextmanager
    def reading(self) -> Iterator[None]:
        """One consistent read: a REPEATABLE READ snapshot (nested blocks share it)."""
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        try:
            with self.pool.connection() as conn:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                self._local.conn = conn
                try:
                    yield
                finally:
                    self._local.conn = None
                    conn.execute("COMMIT")
        except self._psycopg.OperationalError as exc:
            raise BackendError(f"{self._where}: {_first_line(exc)}") from None

    def get_meta(self, key: str) -> str | None:
        with self._conn() as conn:
            row = conn.execute("SELECT value FROM ctxmem.meta WHERE key = %s", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        conn = self._block("set_meta")
        conn.execute(
            "INSERT INTO ctxmem.meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
        if key == "dim":  # the memory's vector width is known: index it
            self._ensure_hnsw(conn, int(value))

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    def _dim(self) -> int | None:
        recorded = self.get_meta("dim")
        return int(recorded) if recorded else None

    def _ensure_hnsw(self, conn: Any, dim: int) -> None:
        """The HNSW index over the vectors cast to ``dim`` (an index of another width is dropped)."""
        sql = self._psycopg.sql
        if dim > MAX_HNSW_DIM:
            raise InputError(f"{self._where}: pgvector's HNSW index takes vectors of at most {MAX_HNSW_DIM} dimensions; this encoder's have {dim}")
        name = f"turns_vector_{dim}"
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INDEX_LOCK,))  # first writers racing: one builds it
        for (other,) in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'ctxmem' AND tablename = 'turns'"
            " AND indexname LIKE 'turns\\_vector\\_%%' AND indexname <> %s", (name,),
        ).fetchall():
            conn.execute(sql.SQL("DROP INDEX ctxmem.{}").format(sql.Identifier(other)))
        conn.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON ctxmem.turns USING hnsw ((vector::vector({})) vector_ip_ops)"
                " WITH (m = {}, ef_construction = {})"
            ).format(sql.Identifier(name), sql.Literal(dim), sql.Literal(self.settings.hnsw_m), sql.Literal(self.settings.hnsw_ef_construction))
        )

    # -- writes (call inside transaction()) ------------------------------------------------

    def lock_namespaces(self, namespaces: Sequence[ns.Namespace]) -> bool:
        """Until the transaction ends, no other writer writes these namespaces (advisory locks).

        Taken in sorted order, so two writers that lock overlapping sets never deadlock.
        """
        conn = self._block("lock_namespaces")
        for key in sorted({ns.to_key(space) for space in namespaces}):
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
        return True

    def insert(
        self, namespace: ns.Namespace, rows: Sequence[NewRow], now: float | None = None
    ) -> tuple[list[int], list[int]]:
        """Insert rows; a row whose key exists in the namespace replaces it (keeps created_at).

        Returns ``(new ids, ids of the rows that were replaced)``.

        Raises:
            InputError: a turn PostgreSQL cannot store (a NUL character, a NaN in its
                metadata, more full text than a ``tsvector`` holds); nothing is written.
        """
        conn = self._block("insert")
        tenant, key = namespace[0], ns.to_key(namespace)
        now = time.time() if now is None else now
        tokens = self.tokenizer.tokens([row.index_text for row in rows])
        values = [self._values(j, row, toks, tenant, key, now) for j, (row, toks) in enumerate(zip(rows, tokens))]
        insert_sql = (
            "INSERT INTO ctxmem.turns(tenant, namespace, key, role, speaker, content, index_text, timestamp,"
            " created_at, updated_at, metadata, content_hash, vector, lexemes, n_tokens)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s::jsonb,%s,%s,%s::tsvector,%s) RETURNING id"
        )
        ids: list[int] = []
        replaced: list[int] = []
        removed_tokens = 0
        if any(row.turn.key is not None for row in rows):
            self.lock_namespaces([namespace])  # two upserts of one key must not both insert
            for row, vals in zip(rows, values):
                if row.turn.key is not None:
                    old = conn.execute(
                        "DELETE FROM ctxmem.turns WHERE tenant = %s AND namespace = %s AND key = %s"
                        " RETURNING id, created_at, n_tokens", (tenant, key, row.turn.key),
                    ).fetchone()
                    if old is not None:
                        replaced.append(int(old[0]))
                        removed_tokens += int(old[2])
                        vals = (*vals[:8], old[1], *vals[9:])  # keeps created_at
                ids.append(int(conn.execute(insert_sql, vals).fetchone()[0]))
        elif values:
            with conn.cursor() as cur:
                cur.executemany(insert_sql, values, returning=True)
                while True:
                    ids.append(int(cur.fetchone()[0]))
                    if not cur.nextset():
                        break
        if not rows:
            return ids, replaced
        added_tokens = sum(v[-1] for v in values)
        conn.execute(
            "INSERT INTO ctxmem.namespace_stats(tenant, namespace, turns, tokens) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (tenant, namespace) DO UPDATE SET turns = ctxmem.namespace_stats.turns + excluded.turns,"
            " tokens = ctxmem.namespace_stats.tokens + excluded.tokens",
            (tenant, key, len(rows) - len(replaced), added_tokens - removed_tokens),
        )
        return ids, replaced

    def insert_many(
        self, entries: Sequence[tuple[ns.Namespace, NewRow]], now: float | None = None
    ) -> tuple[list[int], list[int]]:
        """:meth:`insert` for rows of many namespaces: one batch per run of one namespace, ids in the order given."""
        ids: list[int] = []
        replaced: list[int] = []
        start = 0
        while start < len(entries):
            end = start
            while end < len(entries) and entries[end][0] == entries[start][0]:
                end += 1
            new, old = self.insert(entries[start][0], [row for _, row in entries[start:end]], now)
            ids += new
            replaced += old
            start = end
        return ids, replaced

    def _values(self, j: int, row: NewRow, tokens: list[str], tenant: str, key: str, now: float) -> tuple[Any, ...]:
        turn = row.turn
        for name, text in (("content", turn.content), ("speaker", turn.speaker), ("key", turn.key), ("timestamp", turn.timestamp)):
            if text is not None and "\x00" in text:
                raise InputError(f"turn {j}: its {name} holds a NUL character, which PostgreSQL text cannot store")
        try:
            metadata = json.dumps(turn.metadata, ensure_ascii=False, allow_nan=False)
        except ValueError:
            raise InputError(f"turn {j}: its metadata holds NaN or infinity, which PostgreSQL's jsonb cannot store") from None
        if "\\u0000" in metadata:
            raise InputError(f"turn {j}: its metadata holds a NUL character, which PostgreSQL's jsonb cannot store")
        lexemes = tsvector_literal(tokens)
        if _tsvector_bytes(lexemes) > MAX_TSVECTOR_BYTES:
            raise InputError(f"turn {j}: too much text for PostgreSQL full text (a tsvector holds at most 1 MiB)")
        vector = np.asarray(row.vector, dtype=np.float32).reshape(-1)
        return (tenant, key, turn.key, turn.role, turn.speaker, turn.content, row.index_text, turn.timestamp,
                now, now, metadata, row.content_hash, vector, lexemes, len(tokens))

    def _drop_counts(self, conn: Any, gone: Sequence[tuple[Any, ...]]) -> None:
        """Take deleted turns ``(tenant, namespace, n_tokens)`` off the BM25 counters."""
        per: dict[tuple[str, str], list[int]] = {}
        for tenant, space, n_tokens in gone:
            count = per.setdefault((tenant, space), [0, 0])
            count[0] += 1
            count[1] += int(n_tokens)
        for (tenant, space), (turns, tokens) in sorted(per.items()):
            conn.execute(
                "UPDATE ctxmem.namespace_stats SET turns = turns - %s, tokens = tokens - %s WHERE tenant = %s AND namespace = %s",
                (turns, tokens, tenant, space),
            )
            conn.execute("DELETE FROM ctxmem.namespace_stats WHERE tenant = %s AND namespace = %s AND turns <= 0", (tenant, space))

    def delete(self, ids: Sequence[int]) -> list[int]:
        """Delete turns by id; returns the ids that existed."""
        conn = self._block("delete")
        rows = conn.execute(
            "DELETE FROM ctxmem.turns WHERE id = ANY(%s) RETURNING id, tenant, namespace, n_tokens", ([int(i) for i in ids],)
        ).fetchall()
        self._drop_counts(conn, [r[1:] for r in rows])
        found = {int(r[0]) for r in rows}
        return [int(i) for i in dict.fromkeys(ids) if int(i) in found]

    def set_vectors(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Replace the stored vectors of ``ids`` (``vectors``: (n, d), in the same order)."""
        conn = self._block("set_vectors")
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE ctxmem.turns SET vector = %s WHERE id = %s",
                [(np.asarray(v, dtype=np.float32), int(i)) for i, v in zip(ids, vectors)],
            )

    def drop_slot_states(self) -> None:
        self._block("drop_slot_states").execute("DELETE FROM ctxmem.slot_states")

    def forget(self, prefix: ns.Namespace) -> list[int]:
        """Delete every turn, BM25 counter and slot state under ``prefix``; returns the deleted ids."""
        conn = self._block("forget")
        where, params = _prefix(prefix, "t")
        ids = [int(r[0]) for r in conn.execute(f"DELETE FROM ctxmem.turns t WHERE {where} RETURNING id", params)]
        conn.execute(f"DELETE FROM ctxmem.namespace_stats t WHERE {where}", params)
        conn.execute(f"DELETE FROM ctxmem.slot_states t WHERE {where}", params)
        return sorted(ids)

    def scrub(self) -> bool:
        """After a forget: ``VACUUM`` the tables, so the dead rows' space (and GIN/HNSW entries) is
        reclaimed; ``True`` once it has run (what VACUUM does not erase is said below).

        VACUUM does not lock out other front ends, and it does not overwrite the freed space:
        the deleted bytes stay in data pages until reused, and in the WAL (and any archive or
        replica) until it is recycled. ``VACUUM FULL ctxmem.turns`` rewrites the table into new
        files (an exclusive lock: run it in a maintenance window); see ``docs/deployment.md``.
        """
        with self.pool.connection() as conn:
            for table in ("turns", "namespace_stats", "slot_states"):
                conn.execute(self._psycopg.sql.SQL("VACUUM ctxmem.{}").format(self._psycopg.sql.Identifier(table)))
        return True

    # -- reads ------------------------------------------------------------------------------

    def existing_hashes(self, namespace: ns.Namespace, hashes: Sequence[str]) -> set[str]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT content_hash FROM ctxmem.turns WHERE tenant = %s AND namespace = %s AND content_hash = ANY(%s)",
                (namespace[0], ns.to_key(namespace), list(hashes)),
            ).fetchall()
        return {r[0] for r in rows}

    def get(self, ids: Sequence[int]) -> list[StoredTurn]:
        """Turns by id, in the order asked; unknown ids are left out."""
        if not ids:
            return []
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM ctxmem.turns WHERE id = ANY(%s)", ([int(i) for i in ids],), binary=True).fetchall()
        by_id = {int(r[0]): _stored(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def get_by_key(self, namespace: ns.Namespace, key: str) -> StoredTurn | None:
        with self._conn() as conn:
            r = conn.execute(
                f"SELECT {_COLUMNS} FROM ctxmem.turns WHERE tenant = %s AND namespace = %s AND key = %s",
                (namespace[0], ns.to_key(namespace), key), binary=True,
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
        where, params = _prefix(prefix, "t")
        cond, fparams = compile_pg_filters(filters)
        order_sql = {"id": "t.id", "-updated_at": "t.updated_at DESC, t.id"}[order]
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT {_aliased('t')} FROM ctxmem.turns t WHERE {where} AND {cond} ORDER BY {order_sql} LIMIT %s OFFSET %s",
                (*params, *fparams, limit, offset), binary=True,
            ).fetchall()
        return [_stored(r) for r in rows]

    def iter_select(self, prefix: ns.Namespace, batch: int = 1000) -> Iterator[list[StoredTurn]]:
        """Every turn under ``prefix`` in id order, ``batch`` at a time (keyset paging)."""
        where, params = _prefix(prefix, "t")
        last = -1
        while True:
            with self._conn() as conn:
                rows = conn.execute(
                    f"SELECT {_aliased('t')} FROM ctxmem.turns t WHERE {where} AND t.id > %s ORDER BY t.id LIMIT %s",
                    (*params, last, batch), binary=True,
                ).fetchall()
            if not rows:
                return
            yield [_stored(r) for r in rows]
            last = int(rows[-1][0])

    def ids_in(self, prefix: ns.Namespace, filters: Filters | None = None) -> np.ndarray:
        """Ids of the turns under ``prefix`` matching ``filters`` (int64, ascending)."""
        where, params = _prefix(prefix, "t")
        cond, fparams = compile_pg_filters(filters)
        with self._conn() as conn:
            rows = conn.execute(f"SELECT t.id FROM ctxmem.turns t WHERE {where} AND {cond} ORDER BY t.id", (*params, *fparams)).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def _prefix_counts(self, conn: Any, prefix: ns.Namespace) -> tuple[int, int]:
        """``(turns, tokens)`` under the prefix, from the per-namespace counters."""
        where, params = _prefix(prefix, "s")
        turns, tokens = conn.execute(
            f"SELECT coalesce(sum(s.turns), 0), coalesce(sum(s.tokens), 0) FROM ctxmem.namespace_stats s WHERE {where}", params
        ).fetchone()
        return int(turns), int(tokens)

    def lexical(self, terms: Sequence[str], prefix: ns.Namespace, filters: Filters | None = None) -> dict[int, float]:
        """BM25 of every turn under ``prefix`` (matching ``filters``) that holds a term; higher is better.

        The statistics (turns, mean length, document frequencies) are the prefix's alone, as
        in the embedded store (:mod:`ctxmem_plugin.storage.bm25`); filters narrow the turns
        scored, not them. A query word the tokenizer splits (``snake_case``) is a phrase: its
        tokens must follow each other.
        """
        phrases = [p for p in self.tokenizer.tokens(list(terms)) if p]
        if not phrases:
            return {}
        words = sorted({w for p in phrases for w in p})
        where, params = _prefix(prefix, "t")
        cond, fparams = compile_pg_filters(filters)
        with self._conn() as conn:
            turns, tokens = self._prefix_counts(conn, prefix)
            if turns == 0:
                return {}
            query = " | ".join(_quote(w) for w in words)
            rows = conn.execute(
                "SELECT t.id, t.n_tokens, u.lexeme, u.positions, u.in_filter FROM ("
                f" SELECT t.id, t.n_tokens, t.lexemes, ({cond}) AS in_filter FROM ctxmem.turns t"
                f" WHERE {where} AND t.lexemes @@ %s::tsquery) t"
                " CROSS JOIN LATERAL (SELECT v.lexeme, v.positions, t.in_filter FROM unnest(t.lexemes) v"
                " WHERE v.lexeme = ANY(%s)) u",
                (*fparams, *params, query, words), binary=True,
            ).fetchall()
        postings: dict[str, dict[int, list[int]]] = {}
        lengths: dict[int, int] = {}
        allowed: set[int] = set()
        for doc, n_tokens, word, positions, in_filter in rows:
            postings.setdefault(word, {})[int(doc)] = list(positions)
            lengths[int(doc)] = int(n_tokens)
            if in_filter:
                allowed.add(int(doc))
        avg = tokens / turns
        out: dict[int, float] = {}
        counted: dict[tuple[str, ...], dict[int, int]] = {}
        for phrase in phrases:
            key = tuple(phrase)
            if key not in counted:
                counted[key] = _phrase_counts(postings, phrase)
            counts = counted[key]
            weight = bm25_scoring.idf(turns, len(counts))
            for doc, f in counts.items():
                if doc not in allowed:
                    continue
                norm = bm25_scoring.K1 * (1.0 - bm25_scoring.B + bm25_scoring.B * lengths[doc] / avg)
                out[doc] = out.get(doc, 0.0) + weight * (f * (bm25_scoring.K1 + 1.0)) / (f + norm)
        return out

    def dense(
        self, vector: np.ndarray, k: int, prefix: ns.Namespace, filters: Filters | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` turns under ``prefix`` (matching ``filters``) nearest to ``vector`` by inner product.

        Exact on a prefix of at most ``settings.exact_below`` turns; else through the HNSW
        index (approximate). Scores are recomputed in float32 from the stored vectors and the
        result is ordered by score, ties by id.
        """
        empty = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        dim = self._dim()
        if dim is None or k <= 0:
            return empty
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        where, params = _prefix(prefix, "t")
        cond, fparams = compile_pg_filters(filters)
        sql = self._psycopg.sql
        distance = sql.SQL("(t.vector::vector({d})) <#> %s::vector({d})").format(d=sql.Literal(dim))
        with self._conn() as conn:
            exact = self._prefix_counts(conn, prefix)[0] <= self.settings.exact_below
            order = sql.SQL("{}, t.id").format(distance) if exact else distance  # the tie-break keeps the index out
            query = sql.SQL("SELECT t.id, t.vector FROM ctxmem.turns t WHERE {} AND {} ORDER BY {} LIMIT %s").format(
                sql.SQL(where), sql.SQL(cond), order
            )
            args = (*params, *fparams, q, k)
            if exact:
                rows = conn.execute(query, args, binary=True).fetchall()
            else:
                with self._snapshot(conn):
                    conn.execute(
                        "SELECT set_config('hnsw.ef_search', least(greatest(coalesce(current_setting('hnsw.ef_search', true), '40')::int, %s), 1000)::text, true),"
                        " set_config('hnsw.iterative_scan', 'relaxed_order', true)", (k,),
                    )
                    rows = conn.execute(query, args, binary=True).fetchall()
        if not rows:
            return empty
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        scores = np.stack([r[1] for r in rows]) @ q  # (n,) float32, as the embedded store scores
        order_idx = np.lexsort((ids, -scores))
        return ids[order_idx], scores[order_idx]

    @contextmanager
    def _snapshot(self, conn: Any) -> Iterator[None]:
        """A transaction for ``SET LOCAL``-style settings: the open block's, else a new one."""
        if getattr(self._local, "conn", None) is conn:
            yield
            return
        with conn.transaction():
            yield

    def vector_map(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored vectors by id, ``(dim,)`` float32 each; unknown ids are left out."""
        if not len(ids):
            return {}
        with self._conn() as conn:
            rows = conn.execute("SELECT id, vector FROM ctxmem.turns WHERE id = ANY(%s)", ([int(i) for i in ids],), binary=True).fetchall()
        return {int(i): v for i, v in rows}

    def vectors(self, ids: Sequence[int], dim: int) -> np.ndarray:
        """Stored vectors of ``ids`` in that order, (n, dim) float32; all ids must exist."""
        by_id = self.vector_map(ids)
        out = np.zeros((len(ids), dim), dtype=np.float32)
        for i, turn_id in enumerate(ids):
            out[i] = by_id[int(turn_id)]
        return out

    def ids_after(self, namespace: ns.Namespace, last: int) -> list[int]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT id FROM ctxmem.turns WHERE tenant = %s AND namespace = %s AND id > %s ORDER BY id",
                (namespace[0], ns.to_key(namespace), last),
            ).fetchall()
        return [int(r[0]) for r in rows]

    def namespace_vectors(self, namespace: ns.Namespace, dim: int) -> tuple[np.ndarray, np.ndarray]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT id, vector FROM ctxmem.turns WHERE tenant = %s AND namespace = %s ORDER BY id",
                (namespace[0], ns.to_key(namespace)), binary=True,
            ).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if not rows:
            return ids, np.zeros((0, dim), np.float32)
        return ids, np.stack([r[1] for r in rows])

    def neighbours(self, ids: Sequence[int]) -> dict[int, tuple[int | None, int | None]]:
        """For each id, the previous and next turn ids in the same exact namespace."""
        if not ids:
            return {}
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT c.id,"
                " (SELECT max(p.id) FROM ctxmem.turns p WHERE p.tenant = c.tenant AND p.namespace = c.namespace AND p.id < c.id),"
                " (SELECT min(n.id) FROM ctxmem.turns n WHERE n.tenant = c.tenant AND n.namespace = c.namespace AND n.id > c.id)"
                " FROM ctxmem.turns c WHERE c.id = ANY(%s)",
                ([int(i) for i in ids],),
            ).fetchall()
        return {int(r[0]): (r[1], r[2]) for r in rows}

    def namespaces(self, prefix: ns.Namespace = ()) -> list[tuple[ns.Namespace, int]]:
        """Every exact namespace under ``prefix`` with its turn count, sorted."""
        where, params = _prefix(prefix, "s")
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT s.namespace, s.turns FROM ctxmem.namespace_stats s WHERE {where} AND s.turns > 0 ORDER BY s.namespace", params
            ).fetchall()
        return [(ns.from_key(r[0]), int(r[1])) for r in rows]

    def count(self) -> int:
        with self._conn() as conn:
            return self._prefix_counts(conn, ())[0]

    # -- integrity (``MemoryStore.check``) -------------------------------------------------------

    _STATS_DIFF = (
        "SELECT count(*) FROM (SELECT tenant, namespace, count(*) AS turns, sum(n_tokens) AS tokens FROM ctxmem.turns"
        " GROUP BY tenant, namespace) t FULL JOIN ctxmem.namespace_stats s USING (tenant, namespace)"
        " WHERE t.turns IS DISTINCT FROM s.turns OR t.tokens IS DISTINCT FROM s.tokens"
    )

    def check(self, *, slots: SlotShape | None = None) -> list[Finding]:
        """The per-namespace BM25 statistics against the turns, and every slot state; changes nothing.

        Table and index integrity are PostgreSQL's own (``amcheck``), see docs/deployment.md.
        """
        from ctxmem_plugin.storage.integrity import slot_problem

        found = []
        with self._conn() as conn:
            (differ,) = conn.execute(self._STATS_DIFF).fetchone()
            if differ:
                found.append(Finding("fts", f"the BM25 statistics of {differ} namespace(s) do not match their turns", True))
            dim = self._dim()
            for key, model_id, state in conn.execute("SELECT namespace, model_id, state FROM ctxmem.slot_states"):
                problem = slot_problem(model_id, bytes(state), True, dim, slots)
                if problem:
                    found.append(Finding("slots", f"the slot state of {key!r:.60} {problem}", True))
        return found

    def repair(self, *, slots: SlotShape | None = None) -> list[str]:
        """Rebuild the BM25 statistics from the turns and drop damaged slot states (rebuilt on use)."""
        from ctxmem_plugin.storage.integrity import slot_problem

        done = []
        found = {f.part for f in self.check(slots=slots)}
        with self.transaction():
            conn = self._block("repair")
            if "fts" in found:
                conn.execute("DELETE FROM ctxmem.namespace_stats")
                conn.execute(
                    "INSERT INTO ctxmem.namespace_stats(tenant, namespace, turns, tokens)"
                    " SELECT tenant, namespace, count(*), sum(n_tokens) FROM ctxmem.turns GROUP BY tenant, namespace"
                )
                done.append("fts: BM25 statistics rebuilt from the turns")
            if "slots" in found:
                dim = self._dim()
                bad = [(t, k) for t, k, m, st in conn.execute("SELECT tenant, namespace, model_id, state FROM ctxmem.slot_states")
                       if slot_problem(m, bytes(st), True, dim, slots)]
                for tenant, key in bad:
                    conn.execute("DELETE FROM ctxmem.slot_states WHERE tenant = %s AND namespace = %s", (tenant, key))
                done.append(f"slots: {len(bad)} damaged slot state(s) dropped; they are rebuilt from the turns on use")
        return done

    def sizes(self) -> dict[str, int]:
        """Bytes of each ctxmem table with its indexes and TOAST (``pg_total_relation_size``)."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'ctxmem' AND c.relkind = 'r' ORDER BY c.relname"
            ).fetchall()
        return {str(name): int(size) for name, size in rows}

    # -- slot states --------------------------------------------------------------------------

    def get_slot_state(self, namespace: ns.Namespace) -> SlotState | None:
        with self._conn() as conn:
            r = conn.execute(
                "SELECT model_id, last_turn_id, turns, state FROM ctxmem.slot_states WHERE tenant = %s AND namespace = %s",
                (namespace[0], ns.to_key(namespace)),
            ).fetchone()
        return None if r is None else (r[0], int(r[1]), int(r[2]), bytes(r[3]))

    def put_slot_state(self, namespace: ns.Namespace, model_id: str, last_turn_id: int, turns: int, state: bytes) -> None:
        self._block("put_slot_state").execute(
            "INSERT INTO ctxmem.slot_states(tenant, namespace, model_id, last_turn_id, turns, state, updated_at)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (tenant, namespace) DO UPDATE SET model_id = excluded.model_id,"
            " last_turn_id = excluded.last_turn_id, turns = excluded.turns, state = excluded.state, updated_at = excluded.updated_at",
            (namespace[0], ns.to_key(namespace), model_id, last_turn_id, turns, state, time.time()),
        )


def _prefix(prefix: ns.Namespace, alias: str) -> tuple[str, list[Any]]:
    """The condition restricting rows aliased ``alias`` to a namespace prefix (the tenant first)."""
    if not prefix:
        return "TRUE", []
    low, high = ns.prefix_range(prefix)
    return f"{alias}.tenant = %s AND {alias}.namespace >= %s AND {alias}.namespace < %s", [prefix[0], low, high]


def _aliased(alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in _COLUMNS.split(","))


def _phrase_counts(postings: dict[str, dict[int, list[int]]], phrase: Sequence[str]) -> dict[int, int]:
    """Occurrences per turn of a phrase of tokens (each token right after the one before)."""
    first = postings.get(phrase[0], {})
    if len(phrase) == 1:
        return {doc: len(at) for doc, at in first.items()}
    counts: dict[int, int] = {}
    for doc, at in first.items():
        n = sum(1 for p in at if all(p + k in postings.get(w, {}).get(doc, ()) for k, w in enumerate(phrase[1:], start=1)))
        if n:
            counts[doc] = n
    return counts


def _stored(r: Sequence[Any]) -> StoredTurn:
    metadata = r[9]
    return StoredTurn(
        id=int(r[0]), namespace=ns.from_key(r[1]), key=r[2], role=r[3], speaker=r[4], content=r[5], timestamp=r[6],
        created_at=float(r[7]), updated_at=float(r[8]), metadata=json.loads(metadata) if isinstance(metadata, (str, bytes)) else metadata,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

