"""Looking after a memory: ``stats``, ``export``, ``forget``, ``upgrade``, ``reembed``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ctxmem_plugin.cli.app import (
    UsageFailure,
    handle_errors,
    main,
    memory_option,
    model_options,
    namespace_option,
    nothing_under,
    open_memory,
    parse_namespace,
)


@main.command()
@memory_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def stats(location: str, as_json: bool) -> None:
    """Counts of turns per namespace, and sizes on disk (files, or a database's tables)."""
    info = open_memory(location, read_only=True).stats()
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"{info['path']}: {info['turns']} turns, {info['bytes'] / 1e6:.2f} MB, encoder {info['encoder']} "
               f"({info['dim']}-d, {info['vector_dtype']})")
    if info["turns"]:
        click.echo(f"per turn: {info['bytes_per_turn']:,.0f} B on disk, {info['ram_bytes_per_turn'] or 0:,.0f} B of this "
                   f"process's RAM ({(info['ram_bytes'] or 0) / 1e6:.0f} MB resident)")
    for space, count in info["namespaces"].items():
        click.echo(f"  {space}: {count}")


@main.command("export")
@memory_option
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@namespace_option(default="", help_text="Namespace prefix to export (default: everything).")
@click.option("--with-vectors", is_flag=True, help="Include each turn's vector.")
@handle_errors
def export_cmd(location: str, out: Path, namespace: str, with_vectors: bool) -> None:
    """Write the memory as portable JSONL, one object per turn (OUT's folder is created)."""
    from ctxmem_plugin.formats.portable import export_jsonl

    space = parse_namespace(namespace, allow_empty=True)
    memory = open_memory(location, read_only=True)
    empty = nothing_under(memory, space)
    if empty:
        raise UsageFailure(f"nothing exported: {empty}")
    count = export_jsonl(memory, out, space, with_vectors=with_vectors)
    click.echo(f"exported {count} turns to {out}")


@main.command()
@memory_option
@click.option("--namespace", "-n", required=True, help="Namespace (prefix) to remove, labels joined by '/'.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def forget(location: str, namespace: str, yes: bool) -> None:
    """Remove everything stored under a namespace, leaving nothing of it on disk.

    If another process is reading the memory, the deleted text stays in the database's
    write-ahead log until it stops: then this says so and exits with 1; run it again later
    (with nothing left to delete, it finishes clearing the log).
    """
    from ctxmem_plugin.storage import is_url
    from ctxmem_plugin.storage.integrity import unscrubbed_bytes

    space = parse_namespace(namespace)
    memory = open_memory(location, read_only=False, create=False)
    empty = nothing_under(memory, space)
    if empty:
        click.echo(f"nothing to forget: {empty}")
    else:
        if not yes and sys.stdin.isatty():
            click.confirm(f"Forget everything under {namespace}?", abort=True)
        click.echo(f"forgot {memory.forget(space)} turns under {namespace}")
    if is_url(location):
        return  # no write-ahead log file here: the PostgreSQL store vacuums what it forgot (docs/deployment.md)
    if empty and unscrubbed_bytes(Path(location)):
        memory.forget(space)  # nothing to delete: clears what an earlier forget left in the log
    left = unscrubbed_bytes(Path(location))
    if left:
        raise click.ClickException(
            f"another process is reading {location}: {left:,} bytes of the write-ahead log, which may hold "
            "the forgotten text, stay on disk until it stops; run this command again then"
        )


@main.command()
@memory_option
@handle_errors
def upgrade(location: str) -> None:
    """Bring a memory written by an earlier ctxmem-plugin to this version's storage schema.

    Commands that write upgrade a memory as they open it; those that only read (query, stats,
    export, explain) cannot, and ask for this. One transaction per step; the turns are unchanged.
    """
    info = open_memory(location, read_only=False, create=False).stats()
    click.echo(f"{info['path']}: storage schema version {info['schema_version']}, current")


@main.command()
@memory_option
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def reembed(location: str, model: Path | None, encoder: Path | None, device: str, as_json: bool) -> None:
    """Re-encode every stored turn with the encoder of --model (or --encoder).

    Run it once to use a memory built with one encoder with a model trained with a tuned one
    (the model keeps it in MODEL/encoder). One transaction: interrupted, the memory is unchanged.
    """
    from tqdm import tqdm

    if model is None and encoder is None:
        raise UsageFailure("reembed needs --model or --encoder: the encoder to re-encode with")
    memory = open_memory(location, read_only=False, create=False, model=model, encoder=encoder, device=device)
    before = memory.stats()
    with tqdm(total=before["turns"], unit="turn", desc="reembed", file=sys.stderr, disable=as_json) as bar:
        count = memory.reembed(progress=bar.update)
    summary = {"turns": count, "from": before["encoder"], "encoder": memory.encoder.name}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"re-encoded {count} turns with {memory.encoder.name} (was {before['encoder']})")
