"""One writer per memory directory: an advisory ``flock`` on ``DIR/writer.lock``.

SQLite would serialise writers' transactions by itself, but a write reads before it writes:
duplicates are checked, a namespace's slot state is read, folded with the new turns and written
back, and the approximate index is retrained from what is stored. Two writing processes would
each act on a view the other is changing (a turn stored twice, a slot update lost); a memory
that many processes write goes through one server, or lives in PostgreSQL.
Within one process a second writer is refused at once (its own open ``ContextMemory`` is the
one to use: it is thread-safe); another process's is waited for, up to ``timeout``.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from ctxmem_plugin.errors import MemoryLockedError

_HELD: set[Path] = set()  # lock files this process holds: flock would make it wait for itself
_HELD_GUARD = threading.Lock()


class WriterLock:
    """Exclusive lock held for the life of a writing :class:`ContextMemory`.

    Args:
        path: the lock file (created if missing).
        timeout: seconds to wait for another process to finish writing; 0 = fail at once.
    """

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None
        self._key = path.resolve()

    def acquire(self) -> None:
        with _HELD_GUARD:
            if self._key in _HELD:
                raise MemoryLockedError(
                    f"{self.path.parent}: this memory is already open for writing in this process; "
                    "use that ContextMemory (it is thread-safe) or close it first"
                )
            _HELD.add(self._key)
        try:
            self._fd = self._take()
        except BaseException:
            with _HELD_GUARD:
                _HELD.discard(self._key)
            raise

    def _take(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise MemoryLockedError(
                        f"{self.path.parent}: another process is writing to this memory "
                        f"(waited {self.timeout:g}s); retry when it is done"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            with _HELD_GUARD:
                _HELD.discard(self._key)
