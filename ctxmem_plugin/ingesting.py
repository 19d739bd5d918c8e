"""Ingest: parsed chat logs -> one bulk write per file -> a report of what was added.

Shared by the memory in this process and the client of a memory server: both pass their own
``write``, so a log is turned into entries, deduplicated and counted the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.records import IngestReport

if TYPE_CHECKING:
    from ctxmem_plugin.formats import ParsedLog

Write = Callable[..., list[int]]
"""``write(entries, progress=...) -> ids``, as :meth:`ContextMemory.write`."""


def ingest_logs(
    write: Write,
    logs: Sequence[ParsedLog],
    namespace: Sequence[str] | str,
    *,
    split_conversations: bool = False,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Write each log's turns in one call of ``write`` (one transaction per file), deduplicated.

    Args:
        write: the memory's bulk write.
        logs: the parsed files.
        namespace: where their turns go.
        split_conversations: each conversation in ``namespace/<conversation id>``.
        progress: passed to ``write``.
    """
    report = IngestReport()
    start = time.perf_counter()
    base = ns.validate(namespace)
    for log in logs:
        report.invalid += [str(e) for e in log.skipped]
        ids = write(log.entries(base, split_conversations=split_conversations), progress=progress)
        added = sum(1 for i in ids if i >= 0)
        report.added += added
        report.duplicates += len(ids) - added
    report.seconds = time.perf_counter() - start
    return report
