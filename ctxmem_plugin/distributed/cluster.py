"""Reaching Ray: the import that may be missing, joining or starting a cluster, and what it offers."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ctxmem_plugin.errors import CtxMemError, DependencyError, InputError

LOCAL = "local"
"""The address that means: start a Ray instance on this machine for this ingest."""


def require_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise DependencyError("distributed ingest needs Ray: pip install 'ctxmem-plugin[ray]'") from None
    return ray


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[Any]:
    """Ray, joined for the duration of the block.

    Args:
        address: ``None`` or :data:`LOCAL`: the Ray this process has joined already
            (``ray.init()`` done by the caller), else a new one on this machine; anything else is
            a cluster address for ``ray.init`` (``auto``, ``host:6379``, ``ray://host:10001``).

    A Ray started or joined here is left when the block ends; one the caller joined is kept.
    """
    ray = require_ray()
    local = address in (None, LOCAL)
    if ray.is_initialized():
        if not local:
            raise InputError(f"this process has joined a Ray cluster already; it cannot join {address} too")
        yield ray
        return
    if local:
        # An offline tool: a Ray started here reports no usage statistics (unless asked to).
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class WorkerPlan:
    """How many writer actors to start, and what each asks of the cluster.

    Attributes:
        workers: writer actors (each loads the encoder once).
        num_gpus: GPUs per actor: 1 (a share when there are more actors than GPUs) when the
            cluster has GPUs, else 0.
        num_cpus: CPUs per actor.
    """

    workers: int
    num_gpus: float
    num_cpus: float


def plan_workers(ray: Any, files: int, workers: int | None) -> WorkerPlan:
    """Writer actors for ``files`` files: ``workers`` if given, else one per GPU, else one per CPU.

    Never more actors than files (a file is the unit of work: one transaction, as in a
    single-process ingest), and at least one.
    """
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    if workers is not None and workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    count = max(1, min(workers if workers is not None else (gpus or cpus), files))
    # More actors than GPUs share them; a CPU-only cluster is never asked for a GPU.
    return WorkerPlan(count, min(1.0, gpus / count) if gpus else 0.0, 1.0)


def unwrap(ray: Any, exc: BaseException) -> BaseException:
    """The library's own error that a task or actor raised (Ray wraps it), else ``exc`` itself."""
    cause = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayError) else None
    return cause if isinstance(cause, CtxMemError) else exc
