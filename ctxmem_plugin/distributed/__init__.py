"""Distributed ingest on a Ray cluster (extra ``[ray]``): chat logs -> a shared memory, in parallel.

:func:`ingest_with_ray` reads the log files in Ray tasks, checks them all, then writes them
through writer actors, each holding the encoder (on a GPU when the cluster has them) and its own
connection to the shared store; each actor stores whole files through
:meth:`ContextMemory.write <ctxmem_plugin.memory.ContextMemory.write>`, the path of every write.
Ray is imported only when a distributed ingest runs.
"""

from __future__ import annotations

from ctxmem_plugin.distributed.ingest import RayIngestReport, ingest_with_ray

__all__ = ["RayIngestReport", "ingest_with_ray"]
