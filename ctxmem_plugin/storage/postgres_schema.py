"""The PostgreSQL schema, as named migrations applied in order, each in its own transaction.

Everything lives in the schema ``ctxmem`` of the database named by the location, so the same
database can hold other applications' tables (LangGraph's checkpoints among them).
``ctxmem.migrations`` records what was applied. Several front ends may start at once: each
migration runs under a transaction-scoped advisory lock and re-reads the applied version
under it, so a migration is applied once. Never edit a released migration: append a new one.

Every table that holds a namespace's data leads with ``tenant`` (the namespace's first label):
it is the distribution column for Citus (``docs/deployment.md``), and every primary or unique
key includes it, as a distributed table requires.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ctxmem_plugin.errors import CtxMemError, MemoryNotFoundError

SCHEMA = "ctxmem"
_LOCK_KEY = 0x63_74_78_6D_65_6D  # "ctxmem": serialises concurrent migrations

Connection = Any  # psycopg.Connection, imported lazily with the optional extra


def _m001_initial(conn: Connection) -> None:
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    for statement in (
        "CREATE TABLE ctxmem.meta (key text PRIMARY KEY, value text NOT NULL)",
        "INSERT INTO ctxmem.meta(key, value) VALUES ('generation', '0')",
        # Ids come from one identity sequence and are never reused after a delete. Namespaces
        # are stored as in the embedded store ('a/b/'), byte-ordered (COLLATE "C") so that a
        # prefix is an index range. The vector column is untyped: its width is the memory's
        # encoder's, recorded later; the HNSW index is built on a cast to that width.
        """CREATE TABLE ctxmem.turns (
            tenant       text COLLATE "C" NOT NULL,
            id           bigint GENERATED ALWAYS AS IDENTITY,
            namespace    text COLLATE "C" NOT NULL,
            key          text,
            role         text NOT NULL,
            speaker      text,
            content      text NOT NULL,
            index_text   text NOT NULL,
            timestamp    text,
            created_at   double precision NOT NULL,
            updated_at   double precision NOT NULL,
            metadata     jsonb NOT NULL DEFAULT '{}',
            content_hash text NOT NULL,
            vector       vector NOT NULL,
            lexemes      tsvector NOT NULL,
            n_tokens     integer NOT NULL,
            PRIMARY KEY (tenant, id)
        )""",
        "CREATE INDEX turns_namespace ON ctxmem.turns (tenant, namespace, id)",
        "CREATE INDEX turns_id ON ctxmem.turns (id)",
        "CREATE INDEX turns_hash ON ctxmem.turns (tenant, namespace, content_hash)",
        "CREATE UNIQUE INDEX turns_key ON ctxmem.turns (tenant, namespace, key) WHERE key IS NOT NULL",
        "CREATE INDEX turns_lexemes ON ctxmem.turns USING gin (lexemes)",
        # BM25's statistics per exact namespace, kept by the store in each writing transaction.
        """CREATE TABLE ctxmem.namespace_stats (
            tenant    text COLLATE "C" NOT NULL,
            namespace text COLLATE "C" NOT NULL,
            turns     bigint NOT NULL,
            tokens    bigint NOT NULL,
            PRIMARY KEY (tenant, namespace)
        )""",
        # Slot memory state per exact namespace, for one model; shared by every front end.
        """CREATE TABLE ctxmem.slot_states (
            tenant       text COLLATE "C" NOT NULL,
            namespace    text COLLATE "C" NOT NULL,
            model_id     text NOT NULL,
            last_turn_id bigint NOT NULL,
            turns        bigint NOT NULL,
            state        bytea NOT NULL,
            updated_at   double precision NOT NULL,
            PRIMARY KEY (tenant, namespace)
        )""",
    ):
        conn.execute(statement)


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("001_initial", _m001_initial),
]


def applied(conn: Connection) -> int | None:
    """The last migration applied, or ``None`` where the database holds no ctxmem memory."""
    row = conn.execute("SELECT to_regclass('ctxmem.migrations') IS NOT NULL").fetchone()
    if not row[0]:
        return None
    return int(conn.execute("SELECT coalesce(max(version), 0) FROM ctxmem.migrations").fetchone()[0])


def _refuse_newer(current: int, where: str) -> None:
    if current > len(MIGRATIONS):
        raise CtxMemError(
            f"{where}: memory schema version {current} is newer than this ctxmem-plugin understands "
            f"({len(MIGRATIONS)}); upgrade ctxmem-plugin"
        )


def migrate(conn: Connection, where: str) -> int:
    """Create the schema if missing and apply every migration newer than it (``conn``: autocommit)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS ctxmem")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS ctxmem.migrations"
            " (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            current = applied(conn) or 0
            _refuse_newer(current, where)
            if current >= len(MIGRATIONS):
                return current
            name, apply = MIGRATIONS[current]
            apply(conn)
            conn.execute("INSERT INTO ctxmem.migrations(version, name) VALUES (%s, %s)", (current + 1, name))


def require_current(conn: Connection, where: str) -> None:
    """Refuse a database without a memory, or with a schema other than this code's (reading cannot migrate)."""
    current = applied(conn)
    if current is None:
        raise MemoryNotFoundError(f"no memory at {where} (no ctxmem schema in that database); create one with ingest")
    if current < len(MIGRATIONS):
        raise CtxMemError(
            f"{where}: memory schema version {current} predates this ctxmem-plugin ({len(MIGRATIONS)}); "
            "upgrade it once with `ctxmem-plugin upgrade --memory URL` (or open it for writing)"
        )
    _refuse_newer(current, where)
