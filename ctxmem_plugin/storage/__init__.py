"""Storage: the backends behind the store contract (:mod:`ctxmem_plugin.storage.base`), and the one place that picks one.

- the embedded store (:mod:`~ctxmem_plugin.storage.sqlite`: SQLite in a directory, its schema,
  BM25, exact and approximate dense search and writer lock), the default;
- the PostgreSQL store (:mod:`~ctxmem_plugin.storage.postgres`, extra ``[postgres]``), for
  memories shared by many processes and machines.

The only package that runs SQL. Everything else reaches the rows through the contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ctxmem_plugin.errors import InputError, MemoryNotFoundError
from ctxmem_plugin.storage.base import MemoryStore

if TYPE_CHECKING:
    from ctxmem_plugin.storage.ann import IndexConfig

URL_SCHEMES = ("postgresql", "postgres")


def is_url(location: str | Path) -> bool:
    """Whether a location is a URL (``scheme://...``) rather than a directory path."""
    return isinstance(location, str) and "://" in location


def require_memory(location: str | Path, *, read_only: bool = False, create: bool = True) -> None:
    """Refuse at once a missing embedded memory that may not be created (before any model loads).

    A database's memory is checked when the store connects (:func:`open_store`).
    """
    if is_url(location) or not (read_only or not create):
        return
    from ctxmem_plugin.storage.sqlite import DB_NAME, exists

    if not exists(Path(location)):
        raise MemoryNotFoundError(f"no memory at {location} (expected {DB_NAME} in it); create one with ingest")


def open_store(
    location: str | Path, *, read_only: bool = False, create: bool = True, lock_timeout: float = 10.0,
    index: IndexConfig | None = None,
) -> MemoryStore:
    """Open the store a location names.

    Args:
        location: ``postgresql://user@host/db`` (or ``postgres://``) for the PostgreSQL store;
            anything else is a directory holding an embedded memory.
        read_only: open without the right to write; a missing memory is then an error.
        create: create the memory if missing (``False``: a missing one is an error).
        lock_timeout: embedded store only: seconds to wait for another writing process
            (PostgreSQL admits many writers at once).
        index: embedded store only: exact and approximate dense search settings.

    Raises:
        MemoryNotFoundError: no memory there, and ``read_only`` or not ``create``.
        MemoryCorruptError: a damaged embedded memory (left as it was).
        InputError: a URL of a scheme no backend serves.
    """
    if is_url(location):
        assert isinstance(location, str)
        scheme = location.split("://", 1)[0].lower()
        if scheme not in URL_SCHEMES:
            raise InputError(f"memory location {location.split('@')[-1]!r}: no store serves {scheme}://; "
                             "expected a directory or postgresql://user@host/database")
        from ctxmem_plugin.storage.postgres import PostgresStore

        return PostgresStore(location, read_only=read_only, create=create)
    from ctxmem_plugin.storage.opening import create_private, open_embedded

    require_memory(location, read_only=read_only, create=create)
    directory = Path(location)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"memory location {directory} is a file; expected a directory or postgresql://user@host/database")
    create_private(directory)  # 0700: it holds users' conversations
    return open_embedded(directory, read_only=read_only, index=index, lock_timeout=None if read_only else lock_timeout)
