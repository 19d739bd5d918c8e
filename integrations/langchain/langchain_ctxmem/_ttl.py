"""Expiry times of store items, kept in a small SQLite file beside the memory.

ctxmem has no way to change a turn's metadata without rewriting (and re-embedding) it, and a
TTL refresh on every read must not bump ``updated_at``; so expiries live here, keyed by the
core namespace key and the item key. The store deletes expired items before it runs each
batch, so no read ever sees one. Writes order the two files so that a crash can at worst leave
an expiry for an item that does not exist (deleting it later is a no-op), never drop a TTL.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

TTL_FILE = "langgraph_ttl.sqlite3"

Entry = tuple[str, str]  # (core namespace key, item key)


class TTLTable:
    """The ``(namespace, key) -> (ttl minutes, expires_at)`` table of one memory directory.

    Args:
        directory: the memory directory.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / TTL_FILE
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS ttl (namespace TEXT NOT NULL, key TEXT NOT NULL, minutes REAL NOT NULL,"
            " expires_at REAL NOT NULL, PRIMARY KEY (namespace, key)) WITHOUT ROWID"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS ttl_expiry ON ttl(expires_at)")
        self._lock = threading.Lock()
        # Most stores never use TTLs: with an empty table every batch skips this file entirely.
        self._rows = int(self.db.execute("SELECT COUNT(*) FROM ttl").fetchone()[0])

    def close(self) -> None:
        self.db.close()

    @property
    def empty(self) -> bool:
        return self._rows == 0

    def _count(self) -> None:
        self._rows = int(self.db.execute("SELECT COUNT(*) FROM ttl").fetchone()[0])

    def set(self, entries: Sequence[tuple[str, str, float]], now: float) -> None:
        """Give each ``(namespace, key, minutes)`` an expiry ``minutes`` from ``now``."""
        if not entries:
            return
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(
                    "INSERT OR REPLACE INTO ttl(namespace, key, minutes, expires_at) VALUES (?,?,?,?)",
                    [(space, key, minutes, now + minutes * 60.0) for space, key, minutes in entries],
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self._count()

    def clear(self, entries: Iterable[Entry]) -> None:
        """Remove expiries (the items no longer expire, or are gone)."""
        entries = list(entries)
        if not entries or self.empty:
            return
        with self._lock:
            self.db.executemany("DELETE FROM ttl WHERE namespace = ? AND key = ?", entries)
            self._count()

    def refresh(self, entries: Iterable[Entry], now: float) -> None:
        """Restart the clock of the items that have a TTL (a read with ``refresh_ttl``)."""
        entries = list(entries)
        if not entries or self.empty:
            return
        with self._lock:
            self.db.executemany(
                "UPDATE ttl SET expires_at = ? + minutes * 60.0 WHERE namespace = ? AND key = ?",
                [(now, space, key) for space, key in entries],
            )

    def expired(self, now: float) -> list[Entry]:
        """Entries whose expiry is at or before ``now``."""
        if self.empty:
            return []
        with self._lock:
            rows = self.db.execute("SELECT namespace, key FROM ttl WHERE expires_at <= ?", (now,)).fetchall()
        return [(r[0], r[1]) for r in rows]
