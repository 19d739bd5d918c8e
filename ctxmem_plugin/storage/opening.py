"""Opening the embedded store of a memory directory, with the cheap checks that come first.

A damaged or altered directory must give one clear error, not a ``sqlite3.DatabaseError`` or a
``ValueError`` from deep inside a read, and must be left as it was. Before SQLite touches the
file: it is a SQLite database (its 16-byte magic) at least as long as its header says (a
truncated copy). As it opens: the schema version matches the tables (:mod:`.schema`). Once
open: the ``meta`` values read as numbers are numbers. A new database is created readable by
its owner only (SQLite gives its ``-wal`` and ``-shm`` files the same mode).

``ctxmem-plugin doctor`` (:mod:`.integrity`) runs the thorough checks and repairs.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ctxmem_plugin.errors import CtxMemError, MemoryCorruptError, MemoryLockedError
from ctxmem_plugin.storage.ann import IndexConfig
from ctxmem_plugin.storage.base import MemoryStore
from ctxmem_plugin.storage.sqlite import DB_NAME, LongTermStore

FILE_MODE = 0o600
"""Mode of the files a memory creates: they hold users' conversations."""

DIRECTORY_MODE = 0o700

_MAGIC = b"SQLite format 3\x00"
_NUMBER = re.compile(r"[0-9]{1,18}")
NUMERIC_META = ("generation", "dim")
"""``meta`` keys whose values the store reads as integers."""

# SQLite's primary result codes (https://sqlite.org/rescode.html) for a damaged file and a busy one.
_CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED

DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.DatabaseError,)
"""What the embedded store's database raises; :func:`as_memory_error` says what it means."""


def repair_hint(directory: Path | str) -> str:
    return f"`ctxmem-plugin doctor --memory {directory}` says more"


def database_file_problem(path: Path) -> str | None:
    """What keeps ``path`` from being a whole SQLite database, from its header alone (``None``: nothing)."""
    try:
        size = path.stat().st_size
        if size == 0:
            return None  # what SQLite itself creates first: an empty database
        with open(path, "rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if len(header) < 100 or not header.startswith(_MAGIC):
        return "not a SQLite database (damaged or replaced)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"damaged SQLite header (page size {page_size})"
    pages = int.from_bytes(header[28:32], "big")
    # The page count in the header is valid when the change counter matches the version-valid-for
    # number (both written by every transaction that updates it); then the file holds them all.
    if pages and header[24:28] == header[92:96] and size < pages * page_size:
        return f"truncated: {size:,} bytes, its header says {pages * page_size:,}"
    return None


def check_database_file(path: Path) -> None:
    """Raise :class:`MemoryCorruptError` if ``path`` is not a whole SQLite database (header only)."""
    problem = database_file_problem(path)
    if problem is not None:
        raise MemoryCorruptError(f"{path}: {problem}; {repair_hint(path.parent)}")


def meta_problems(get_meta: Callable[[str], object]) -> list[str]:
    """What is wrong with the ``meta`` values read as numbers (empty: nothing)."""
    problems = []
    for key in NUMERIC_META:
        value = get_meta(key)
        if value is not None and not (isinstance(value, str) and _NUMBER.fullmatch(value)):
            problems.append(f"meta {key} is {value!r:.40}, not a number (altered or damaged)")
    dtype = get_meta("vector_dtype")
    if dtype is not None and dtype not in ("float32", "float16"):
        problems.append(f"meta vector_dtype is {dtype!r:.40}, not float32 or float16 (altered or damaged)")
    dim = get_meta("dim")
    if isinstance(dim, str) and _NUMBER.fullmatch(dim) and not 1 <= int(dim) <= 65536:
        problems.append(f"meta dim is {dim}, not a vector width")
    return problems


def meta_number(store: MemoryStore, key: str) -> int | None:
    """A ``meta`` value read as a number (``None`` when not recorded), or :class:`MemoryCorruptError`.

    Checked on open already (:func:`open_embedded`); read through this, a value another process
    damaged since is still an error that says so, not a ``ValueError``.
    """
    value = store.get_meta(key)
    if value is None:
        return None
    if not (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise MemoryCorruptError(f"{store.location}: meta {key} is {value!r:.40}, not a number; {repair_hint(store.location)}")
    return int(value)


def as_memory_error(exc: BaseException, location: Path | str) -> CtxMemError | None:
    """The library error a database error means (damaged file, busy), or ``None`` for any other."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return None
    code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    if code in _CORRUPT or type(exc) is sqlite3.DatabaseError:
        return MemoryCorruptError(f"{location}: the database is damaged ({exc}); {repair_hint(location)}")
    if code in _BUSY:
        return MemoryLockedError(f"{location}: the database stayed locked by another process ({exc}); retry when it is done")
    return None


@contextmanager
def reported(location: Path | str) -> Iterator[None]:
    """Database errors that mean a damaged or busy memory, raised as the library's errors."""
    try:
        yield
    except DATABASE_ERRORS as exc:
        error = as_memory_error(exc, location)
        if error is None:
            raise
        raise error from None


def create_private(directory: Path) -> None:
    """Create a memory directory readable by its owner only (existing ones keep their mode)."""
    directory.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)


def open_embedded(
    directory: Path, *, read_only: bool = False, index: IndexConfig | None = None, lock_timeout: float | None = None
) -> LongTermStore:
    """The embedded store of ``directory``, checked as the module docstring says.

    Raises:
        MemoryCorruptError: the database is not a whole SQLite file, its schema version does not
            match its tables, or a numeric meta value is not a number. Nothing is written.
    """
    path = Path(directory) / DB_NAME
    if path.exists():
        check_database_file(path)
    elif not read_only:
        # Created here, not by SQLite, to get the owner-only mode whatever the umask.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))  # no O_EXCL: another opener may race us
    with reported(directory):
        store = LongTermStore(Path(directory), read_only=read_only, index=index, lock_timeout=lock_timeout)
    try:
        with reported(directory):
            problems = meta_problems(store.get_meta)
        if problems:
            raise MemoryCorruptError(f"{path}: {problems[0]}; {repair_hint(directory)}")
    except BaseException:
        store.close()
        raise
    return store
