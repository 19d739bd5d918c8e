"""What runs on the Ray workers: reading one log file, and the writer actor.

Plain Python, wrapped with ``ray.remote`` by :mod:`.ingest`, so that importing it needs no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ctxmem_plugin.encoders import TextEncoder
from ctxmem_plugin.errors import InputError
from ctxmem_plugin.formats import ParsedLog, read_listed
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.namespaces import Namespace


@dataclass
class ReadOutcome:
    """What the driver needs to know of a file read on a worker (the turns stay in the object store).

    Attributes:
        turns: turns read.
        skipped: the errors of records left out (with ``skip_invalid``).
        error: why the file cannot be ingested, exactly as a single-process ingest says it.
    """

    turns: int = 0
    skipped: list[str] = field(default_factory=list)
    error: InputError | None = None


def read_file(file: str, found: bool, fmt: str | None, skip_invalid: bool) -> tuple[ReadOutcome, ParsedLog | None]:
    """Read and validate one file as :func:`~ctxmem_plugin.formats.read_paths` does; never raises bad input."""
    try:
        log = read_listed(Path(file), found, fmt, skip_invalid=skip_invalid)
    except InputError as error:  # returned, not raised: the driver reports the first bad file in order
        return ReadOutcome(error=error), None
    return ReadOutcome(len(log.turns), [str(e) for e in log.skipped]), log


class Writer:
    """A writer actor: the memory opened once with its encoder, storing whole files.

    Args:
        location: the shared memory (``postgresql://...``).
        encoder: as ``ContextMemory(encoder=)``: a model directory (the same path on every
            node), a picklable encoder object, or ``None`` for the bundled default.
        model: a trained model directory (the same path on every node), or ``None``.
        device: as ``ContextMemory(device=)``; ``auto`` takes the GPU Ray gave the actor, if any.
    """

    def __init__(self, location: str, encoder: str | TextEncoder | None, model: str | None, device: str) -> None:
        self.memory = ContextMemory(location, encoder=encoder, model=model, device=device)
        self.memory.encoder.dim  # noqa: B018  (loads the encoder now, while the files are read)

    def check(self) -> None:
        """Check the memory's recorded encoder against this one (recording it in a new memory)."""
        self.memory.load()

    def write(self, log: ParsedLog, namespace: Namespace, split_conversations: bool) -> tuple[int, int]:
        """Store one file in one transaction, skipping turns already present; ``(added, duplicates)``."""
        ids = self.memory.write(log.entries(namespace, split_conversations=split_conversations))
        added = sum(1 for i in ids if i >= 0)
        return added, len(ids) - added

    def close(self) -> None:
        self.memory.close()
