"""One writer per memory directory: an advisory ``flock`` on ``DIR/writer.lock``.

SQLite would serialise writers by itself, but the FAISS index file and the slot states are
written from memory on close; two writers would each save their own view and lose the other's.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ctxmem_plugin.errors import MemoryLockedError


class WriterLock:
    """Exclusive lock held for the life of a writing :class:`ContextMemory`.

    Args:
        path: the lock file (created if missing).
        timeout: seconds to wait for another writer to finish; 0 = fail at once.
    """

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
