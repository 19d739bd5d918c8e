"""The SQLite schema, as named migrations applied in order, each in its own transaction.

A memory directory records the last migration it applied (``PRAGMA user_version``); opening it
applies the ones after that. Never edit a released migration: append a new one.

The recorded version is checked against the tables first (:data:`TABLES`): a version that was
altered (set back to 0, to -1, to an older one) would otherwise re-run migrations over tables
that exist. Such a database is refused with :class:`MemoryCorruptError`, unchanged;
``ctxmem-plugin doctor --repair`` sets the version the tables show (:func:`tables_version`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import PurePath

from ctxmem_plugin.errors import CtxMemError, MemoryCorruptError


def _run(db: sqlite3.Connection, script: str) -> None:
    """Run statements one by one: ``executescript`` would commit the open transaction."""
    for statement in _split(script):
        db.execute(statement)


def _split(script: str) -> list[str]:
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    return [s for s in statements if s]


def _m001_initial(db: sqlite3.Connection) -> None:
    _run(
        db,
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

        -- AUTOINCREMENT: ids are never reused after a delete, so they are safe as FAISS ids.
        CREATE TABLE turns (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            namespace    TEXT NOT NULL,
            key          TEXT,
            role         TEXT NOT NULL,
            speaker      TEXT,
            content      TEXT NOT NULL,
            index_text   TEXT NOT NULL,
            timestamp    TEXT,
            created_at   REAL NOT NULL,
            updated_at   REAL NOT NULL,
            metadata     TEXT NOT NULL DEFAULT '{}',
            content_hash TEXT NOT NULL,
            vector       BLOB NOT NULL
        );
        CREATE INDEX turns_namespace ON turns(namespace, id);
        CREATE INDEX turns_hash ON turns(namespace, content_hash);
        CREATE UNIQUE INDEX turns_key ON turns(namespace, key) WHERE key IS NOT NULL;

        -- External-content FTS5 over index_text (speaker, text, captions, dates), Porter-stemmed.
        CREATE VIRTUAL TABLE turns_fts USING fts5(
            index_text, content='turns', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER turns_ai AFTER INSERT ON turns BEGIN
            INSERT INTO turns_fts(rowid, index_text) VALUES (new.id, new.index_text);
        END;
        CREATE TRIGGER turns_ad AFTER DELETE ON turns BEGIN
            INSERT INTO turns_fts(turns_fts, rowid, index_text) VALUES ('delete', old.id, old.index_text);
        END;
        CREATE TRIGGER turns_au AFTER UPDATE OF index_text ON turns BEGIN
            INSERT INTO turns_fts(turns_fts, rowid, index_text) VALUES ('delete', old.id, old.index_text);
            INSERT INTO turns_fts(rowid, index_text) VALUES (new.id, new.index_text);
        END;

        -- Slot memory state per exact namespace, for one model (model_id); rebuildable from turns.
        CREATE TABLE slot_states (
            namespace    TEXT PRIMARY KEY,
            model_id     TEXT NOT NULL,
            last_turn_id INTEGER NOT NULL,
            turns        INTEGER NOT NULL,
            state        BLOB NOT NULL,
            updated_at   REAL NOT NULL
        );
        """
    )


def _m002_namespace_bm25(db: sqlite3.Connection) -> None:
    """What BM25 needs to count its statistics per namespace prefix (:mod:`ctxmem_plugin.storage.bm25`)."""
    _run(
        db,
        """
        -- The FTS5 postings, one row per token occurrence: (term, doc, col, offset).
        CREATE VIRTUAL TABLE turns_fts_instance USING fts5vocab(turns_fts, 'instance');

        -- Each turn's length in FTS5 tokens; the store sets it on insert.
        ALTER TABLE turns ADD COLUMN n_tokens INTEGER NOT NULL DEFAULT 0;
        """,
    )
    # Turns written before this migration: their lengths as the FTS index holds them.
    lengths = db.execute("SELECT doc, count(*) FROM turns_fts_instance GROUP BY doc").fetchall()
    db.executemany("UPDATE turns SET n_tokens = ? WHERE id = ?", [(n, doc) for doc, n in lengths])
    _run(
        db,
        """
        -- Turns and tokens per exact namespace, kept by triggers in the writing transaction.
        CREATE TABLE namespace_stats (
            namespace TEXT PRIMARY KEY,
            turns     INTEGER NOT NULL,
            tokens    INTEGER NOT NULL
        );
        INSERT INTO namespace_stats(namespace, turns, tokens)
            SELECT namespace, count(*), total(n_tokens) FROM turns GROUP BY namespace;
        CREATE TRIGGER turns_stats_ai AFTER INSERT ON turns BEGIN
            INSERT INTO namespace_stats(namespace, turns, tokens) VALUES (new.namespace, 1, new.n_tokens)
                ON CONFLICT(namespace) DO UPDATE SET turns = turns + 1, tokens = tokens + excluded.tokens;
        END;
        CREATE TRIGGER turns_stats_ad AFTER DELETE ON turns BEGIN
            UPDATE namespace_stats SET turns = turns - 1, tokens = tokens - old.n_tokens
                WHERE namespace = old.namespace;
            DELETE FROM namespace_stats WHERE namespace = old.namespace AND turns = 0;
        END;
        CREATE TRIGGER turns_stats_au AFTER UPDATE OF namespace, n_tokens ON turns BEGIN
            UPDATE namespace_stats SET turns = turns - 1, tokens = tokens - old.n_tokens
                WHERE namespace = old.namespace;
            DELETE FROM namespace_stats WHERE namespace = old.namespace AND turns = 0;
            INSERT INTO namespace_stats(namespace, turns, tokens) VALUES (new.namespace, 1, new.n_tokens)
                ON CONFLICT(namespace) DO UPDATE SET turns = turns + 1, tokens = tokens + excluded.tokens;
        END;
        """,
    )


def _m003_scale(db: sqlite3.Connection) -> None:
    """Search cost set by the prefix searched: postings keyed by namespace, cells for large prefixes."""
    from ctxmem_plugin.storage.bm25 import index_namespaced

    _run(
        db,
        """
        -- The postings again, each token suffixed with its turn's namespace key in hex
        -- ("dog_75312f" for "dog" in "u1/"): one term range holds a term's postings under a
        -- prefix, and nothing else. Contentless: the store writes and deletes its rows.
        CREATE VIRTUAL TABLE turns_nsfts USING fts5(terms, content='', tokenize="ascii tokenchars '_'");
        CREATE VIRTUAL TABLE turns_nsfts_instance USING fts5vocab(turns_nsfts, 'instance');

        -- The approximate index of large prefixes (storage/ann.py): trained centroids, and the
        -- cell of every turn once they exist. A deleted turn leaves its cell with it.
        CREATE TABLE ann_centroids (
            version    INTEGER PRIMARY KEY,
            nlist      INTEGER NOT NULL,
            dim        INTEGER NOT NULL,
            trained_on INTEGER NOT NULL,
            centroids  BLOB NOT NULL
        );
        CREATE TABLE ann_cells (
            cell      INTEGER NOT NULL,
            namespace TEXT NOT NULL,
            id        INTEGER NOT NULL,
            PRIMARY KEY (cell, namespace, id)
        ) WITHOUT ROWID;
        CREATE INDEX ann_cells_id ON ann_cells(id);
        CREATE TRIGGER turns_ann_ad AFTER DELETE ON turns BEGIN
            DELETE FROM ann_cells WHERE id = old.id;
        END;
        """,
    )
    index_namespaced(db)  # turns written before this migration get their namespaced postings now


MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("001_initial", _m001_initial),
    ("002_namespace_bm25", _m002_namespace_bm25),
    ("003_scale", _m003_scale),
]


TABLES: dict[int, frozenset[str]] = {
    0: frozenset(),
    1: frozenset({"meta", "turns", "turns_fts", "slot_states"}),
    2: frozenset({"meta", "turns", "turns_fts", "slot_states", "turns_fts_instance", "namespace_stats"}),
    3: frozenset({"meta", "turns", "turns_fts", "slot_states", "turns_fts_instance", "namespace_stats",
                  "turns_nsfts", "turns_nsfts_instance", "ann_centroids", "ann_cells"}),
}
"""The tables (virtual ones included) of each schema version; others in the file are not looked at."""

_KNOWN = frozenset().union(*TABLES.values())


def tables_version(db: sqlite3.Connection) -> int | None:
    """The schema version whose tables the database holds, or ``None`` if it matches none."""
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} & _KNOWN
    return next((version for version, tables in TABLES.items() if names == tables), None)


def _location(db: sqlite3.Connection) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row is not None and row[2] else "memory.sqlite3"


def recorded_version(db: sqlite3.Connection, path: object = None) -> int:
    """``PRAGMA user_version``, checked against the tables (see the module docstring).

    Raises:
        CtxMemError: a version newer than this code.
        MemoryCorruptError: a negative version, or one that does not match the tables.
    """
    (current,) = db.execute("PRAGMA user_version").fetchone()
    _refuse_newer(current)
    found = tables_version(db)
    if current < 0 or found != current:
        where = path if path is not None else _location(db)
        shows = "no known schema" if found is None else f"the tables of version {found}"
        raise MemoryCorruptError(
            f"{where}: schema version {current} does not match its tables ({shows}): altered or damaged; "
            f"`ctxmem-plugin doctor --memory {PurePath(str(where)).parent} --repair` restores the version the tables show"
        )
    return int(current)


def _refuse_newer(current: int) -> None:
    if current > len(MIGRATIONS):
        raise CtxMemError(
            f"memory schema version {current} is newer than this ctxmem-plugin understands "
            f"({len(MIGRATIONS)}); upgrade ctxmem-plugin"
        )


def migrate(db: sqlite3.Connection) -> int:
    """Apply every migration newer than the database; return the schema version reached."""
    current = recorded_version(db)
    for version, (_name, apply) in enumerate(MIGRATIONS[current:], start=current + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            apply(db)
            db.execute(f"PRAGMA user_version = {version}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


def require_current(db: sqlite3.Connection, path: object) -> None:
    """Refuse to read a memory whose schema is older than this code (reading cannot migrate it)."""
    current = recorded_version(db, path)
    if current < len(MIGRATIONS):
        raise CtxMemError(
            f"{path}: memory schema version {current} predates this ctxmem-plugin ({len(MIGRATIONS)}); "
            "upgrade it once with `ctxmem-plugin upgrade --memory DIR` (or open it for writing)"
        )
    _refuse_newer(current)
