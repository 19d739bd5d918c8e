"""The driver of a distributed ingest: read every file on the cluster, check them all, then write."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.distributed.cluster import connected, plan_workers, require_ray, unwrap
from ctxmem_plugin.distributed.tasks import ReadOutcome, Writer, read_file
from ctxmem_plugin.encoders import TextEncoder
from ctxmem_plugin.errors import InputError
from ctxmem_plugin.formats import list_paths
from ctxmem_plugin.records import IngestReport
from ctxmem_plugin.storage import is_url


@dataclass
class RayIngestReport(IngestReport):
    """An :class:`~ctxmem_plugin.records.IngestReport` and how the cluster was used.

    Attributes:
        files: files read (those skipped whole with ``skip_invalid`` included).
        turns: turns read.
        workers: writer actors started.
        gpus_per_worker: GPUs each writer was given (0 on a cluster without GPUs).
        wall_seconds: the whole ingest, with Ray's and the encoders' start-up; ``seconds`` counts
            the writing only (encoding included), as a single-process ingest counts it.
    """

    files: int = 0
    turns: int = 0
    workers: int = 0
    gpus_per_worker: float = 0.0
    wall_seconds: float = 0.0


def ingest_with_ray(
    paths: Iterable[str | Path] | str | Path,
    location: str,
    namespace: ns.Namespace | str = ("default",),
    *,
    address: str | None = None,
    fmt: str | None = None,
    skip_invalid: bool = False,
    split_conversations: bool = False,
    encoder: str | Path | TextEncoder | None = None,
    model: str | Path | None = None,
    device: str = "auto",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> RayIngestReport:
    """Ingest chat logs into a shared memory on a Ray cluster; the result equals a single-process ingest.

    Every file is read and validated on the cluster before anything is written: a bad file
    raises the error a single-process ingest raises (``file:line: ...``) and nothing is stored.
    Then writer actors (``workers``; by default one per GPU, else one per CPU) each load the
    encoder once and store whole files, one transaction per file, through
    ``ContextMemory.write``: turns already present (same content and position in the
    namespace) are skipped before encoding, so ingesting again adds nothing.

    Args:
        paths: files and directories, as :func:`~ctxmem_plugin.formats.read_paths` takes them;
            every node must see them at the same path.
        location: the shared memory, ``postgresql://...``. A directory is refused: it admits one
            writing process.
        namespace: where the turns go.
        address: ``None`` (or ``"local"``): the Ray this process joined already, else a new one on
            this machine; else a cluster address (``auto``, ``host:6379``, ``ray://host:10001``).
        fmt: the logs' format (``None``: detected per file).
        skip_invalid: leave bad records out and report them instead of failing.
        split_conversations: each conversation in ``namespace/<conversation id>``.
        encoder: a model directory (the same path on every node), a picklable encoder object,
            or ``None`` for the bundled all-MiniLM-L6-v2.
        model: a trained model directory (the same path on every node), or ``None``.
        device: for the encoder on each worker; ``auto`` uses the GPU Ray gives a worker.
        workers: writer actors to start (never more than the files).
        progress: called with a count of turns as each file is stored.

    Raises:
        InputError: a directory as ``location``, or bad input (``FormatError``).
        DependencyError: Ray is not installed.
    """
    began = time.perf_counter()
    if not is_url(location):
        raise InputError(
            f"distributed ingest writes from several processes; the memory {location} is a directory, which "
            "admits one writing process: ingest into postgresql://... or leave out --ray"
        )
    base = ns.validate(namespace)
    require_ray()
    files = list_paths(paths)
    with connected(address) as ray:
        logs, report = _read_all(ray, files, fmt, skip_invalid)
        plan = plan_workers(ray, sum(1 for _, turns in logs if turns), workers)
        actor = ray.remote(num_cpus=plan.num_cpus, num_gpus=plan.num_gpus)(Writer)
        shipped = str(encoder) if isinstance(encoder, Path) else encoder
        writers = [actor.remote(location, shipped, None if model is None else str(model), device) for _ in range(plan.workers)]
        try:
            _call(ray, [writers[0].check.remote()])  # the first records the encoder of a new memory
            _call(ray, [w.check.remote() for w in writers[1:]])
            start = time.perf_counter()
            for added, duplicates in _write_all(ray, writers, logs, base, split_conversations, progress):
                report.added += added
                report.duplicates += duplicates
            report.seconds = time.perf_counter() - start
            _call(ray, [w.close.remote() for w in writers])
        finally:
            for writer in writers:
                ray.kill(writer)
    report.workers, report.gpus_per_worker = plan.workers, plan.num_gpus
    report.wall_seconds = time.perf_counter() - began
    return report


def _read_all(
    ray: Any, files: list[tuple[Path, bool]], fmt: str | None, skip_invalid: bool
) -> tuple[list[tuple[Any, int]], RayIngestReport]:
    """Read every file in a task of its own; the first bad file in order raises, as read_paths would.

    Returns each file's parsed log (a reference: the turns stay in the object store) and its
    turn count, and a report with the files, turns and skipped records counted.
    """
    task = ray.remote(num_returns=2)(read_file)
    refs = [task.remote(str(file), found, fmt, skip_invalid) for file, found in files]
    outcomes: list[ReadOutcome] = _call(ray, [outcome for outcome, _ in refs])
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error
    report = RayIngestReport(files=len(files), turns=sum(o.turns for o in outcomes))
    report.invalid = [line for o in outcomes for line in o.skipped]
    return [(log, o.turns) for (_, log), o in zip(refs, outcomes)], report


def _write_all(
    ray: Any, writers: list[Any], logs: list[tuple[Any, int]], base: ns.Namespace, split: bool,
    progress: Callable[[int], None] | None,
) -> Iterable[tuple[int, int]]:
    """Hand the files to the writers, the largest first, each writer one file at a time."""
    queue = sorted((item for item in logs if item[1]), key=lambda item: -item[1])
    idle: list[Any] = list(writers)
    running: dict[Any, tuple[Any, int]] = {}  # result reference -> (writer, turns of its file)
    while queue or running:
        while idle and queue:
            log, turns = queue.pop(0)
            writer = idle.pop()
            running[writer.write.remote(log, base, split)] = (writer, turns)
        (done,), _ = ray.wait(list(running), num_returns=1)
        writer, turns = running.pop(done)
        yield _call(ray, done)
        idle.append(writer)
        if progress is not None:
            progress(turns)


def _call(ray: Any, refs: Any) -> Any:
    """``ray.get``, raising the library's own error that a worker raised."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayError as exc:
        raise unwrap(ray, exc) from None
