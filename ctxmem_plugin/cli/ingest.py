"""``ingest`` (chat logs -> memory) and ``import`` (a JSONL export -> memory)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from ctxmem_plugin.cli.app import (
    UsageFailure,
    handle_errors,
    main,
    memory_option,
    model_options,
    namespace_option,
    open_memory,
    parse_namespace,
)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@memory_option
@namespace_option()
@click.option("--format", "fmt", default=None, help="openai, langchain, sharegpt, locomo, transcript (default: detect).")
@click.option("--skip-invalid", is_flag=True,
              help="Ingest the valid records and report the invalid ones (and files that are not chat logs).")
@click.option("--split-conversations", is_flag=True, help="Put each conversation in NAMESPACE/<conversation id>.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Read, encode and write on a Ray cluster (extra [ray]; a postgresql:// memory): "
                   "alone, a local Ray; with an address (auto, host:6379, ray://host:10001), that cluster.")
@click.option("--ray-workers", type=click.IntRange(min=1), default=None,
              help="With --ray: writer processes, each with the encoder (default: one per GPU, else per CPU).")
@model_options
@handle_errors
def ingest(paths: tuple[Path, ...], location: str, namespace: str, fmt: str | None, skip_invalid: bool,
           split_conversations: bool, as_json: bool, ray_address: str | None, ray_workers: int | None,
           model: Path | None, encoder: Path | None, device: str) -> None:
    """Build memory from chat logs (files or directories).

    Every file is read and validated before anything is written, and each file is stored in one
    transaction: a bad file leaves the memory unchanged. Re-ingesting a file adds nothing.
    With --ray, the files are read in parallel and encoded and written by several workers.
    """
    from tqdm import tqdm

    from ctxmem_plugin.formats import read_paths

    if ray_address is not None:
        _ingest_on_ray(paths, location, namespace, fmt, skip_invalid, split_conversations, as_json,
                       ray_address, ray_workers, model, encoder, device)
        return
    if ray_workers is not None:
        raise UsageFailure("--ray-workers needs --ray")
    began = time.perf_counter()
    space = parse_namespace(namespace)
    logs = read_paths(paths, fmt, skip_invalid=skip_invalid)
    total = sum(len(log.turns) for log in logs)
    memory = open_memory(location, read_only=False, model=model, encoder=encoder, device=device)
    if not as_json:
        click.echo("loading the encoder...", err=True)
    memory.load()  # before the bar starts: the rate below counts ingesting only
    with tqdm(total=total, unit="turn", desc="ingest", disable=as_json or None, file=sys.stderr) as bar:
        report = memory.ingest(logs, space, split_conversations=split_conversations, progress=bar.update)
    memory.flush()
    wall = time.perf_counter() - began
    rate = report.added / report.seconds if report.seconds > 0 else 0.0  # turns stored per second
    summary = {
        "files": len(logs), "turns": total, "added": report.added, "duplicates": report.duplicates,
        "skipped": len(report.invalid), "seconds": round(report.seconds, 3), "wall_seconds": round(wall, 3),
        "turns_per_second": round(rate, 1),
    }
    if as_json:
        click.echo(json.dumps({**summary, "invalid": report.invalid}))
        return
    click.echo(
        f"ingested {report.added} turns from {len(logs)} file(s) into {namespace} "
        f"({report.duplicates} already present, {len(report.invalid)} invalid skipped) "
        f"in {report.seconds:.1f}s ({rate:.0f} turns/s; {wall:.1f}s with start-up)"
    )
    for line in report.invalid:
        click.echo(f"skipped: {line}", err=True)


def _ingest_on_ray(paths: tuple[Path, ...], location: str, namespace: str, fmt: str | None, skip_invalid: bool,
                   split_conversations: bool, as_json: bool, address: str, workers: int | None,
                   model: Path | None, encoder: Path | None, device: str) -> None:
    """``ingest --ray``: the same summary as a single-process ingest, and the workers used."""
    from tqdm import tqdm

    from ctxmem_plugin.distributed import ingest_with_ray

    with tqdm(unit="turn", desc="ingest", disable=as_json or None, file=sys.stderr) as bar:
        report = ingest_with_ray(
            paths, location, parse_namespace(namespace), address=address, fmt=fmt, skip_invalid=skip_invalid,
            split_conversations=split_conversations, encoder=encoder, model=model, device=device, workers=workers,
            progress=bar.update,
        )
    rate = report.added / report.seconds if report.seconds > 0 else 0.0  # turns stored per second
    summary = {
        "files": report.files, "turns": report.turns, "added": report.added, "duplicates": report.duplicates,
        "skipped": len(report.invalid), "seconds": round(report.seconds, 3), "wall_seconds": round(report.wall_seconds, 3),
        "turns_per_second": round(rate, 1), "ray_workers": report.workers, "gpus_per_worker": report.gpus_per_worker,
    }
    if as_json:
        click.echo(json.dumps({**summary, "invalid": report.invalid}))
        return
    click.echo(
        f"ingested {report.added} turns from {report.files} file(s) into {namespace} "
        f"({report.duplicates} already present, {len(report.invalid)} invalid skipped) "
        f"in {report.seconds:.1f}s ({rate:.0f} turns/s; {report.wall_seconds:.1f}s with start-up) "
        f"on {report.workers} Ray worker(s)"
    )
    for line in report.invalid:
        click.echo(f"skipped: {line}", err=True)


@main.command("import")
@memory_option
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_options
@handle_errors
def import_cmd(location: str, src: Path, model: Path | None, encoder: Path | None, device: str) -> None:
    """Load a JSONL export into a memory (vectors are reused when they fit the encoder).

    The file is read and validated whole first: a bad line leaves the memory (or the lack of
    one) as it was.
    """
    from ctxmem_plugin.formats.portable import import_records, read_export

    records = read_export(src)
    memory = open_memory(location, read_only=False, model=model, encoder=encoder, device=device)
    added, duplicates = import_records(memory, records)
    click.echo(f"imported {added} turns ({duplicates} already present) from {src}")
