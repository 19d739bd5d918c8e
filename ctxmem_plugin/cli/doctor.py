"""``doctor``: check a memory's files and rebuild what can be rebuilt (:mod:`ctxmem_plugin.storage.integrity`)."""

from __future__ import annotations

from pathlib import Path

import click

from ctxmem_plugin.cli.app import handle_errors, main, memory_option


@main.command()
@memory_option
@click.option("--repair", is_flag=True,
              help="Rebuild what SQLite holds the truth for: the vector index, the full-text index, slot states, "
                   "the recorded schema version and meta numbers. Waits for a writing process to finish.")
@click.option("--model", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Trained model dir: also check that the slot states are the size it needs.")
@handle_errors
def doctor(location: str, repair: bool, model: Path | None) -> None:
    """Check a memory: SQLite integrity, full-text indexes, approximate index vs turns, slot states, namespaces.

    Prints one line per problem ("problem PART: what") and exits with 1 if any remain (after
    --repair, those it could not rebuild: marked "not repairable here"); prints "DIR: no problems
    found" and exits with 0 when there is none. Without --repair nothing is changed.

    \b
    database    a whole SQLite file; PRAGMA integrity_check passes
    schema      the recorded version matches the tables and is this version's
    meta        generation and dim are numbers, vector_dtype float32 or float16; every
                vector has dim finite values
    fts         both full-text indexes, token counts and BM25 statistics match the turns
    vectors     the approximate index (large memories): centroids whole, one cell per turn
    slots       slot states finite; with --model, the size that model needs
    namespaces  every stored namespace valid and inside the root range
    """
    from ctxmem_plugin.errors import InputError, MemoryNotFoundError
    from ctxmem_plugin.storage import is_url
    from ctxmem_plugin.storage import integrity
    from ctxmem_plugin.storage.lock import WriterLock
    from ctxmem_plugin.storage.sqlite import DB_NAME

    if is_url(location):
        raise InputError("doctor checks an embedded memory (a directory); a PostgreSQL memory is checked with "
                         "PostgreSQL's own tools (amcheck, REINDEX), see docs/deployment.md")
    memory_dir = Path(location)
    if not (memory_dir / DB_NAME).is_file():
        raise MemoryNotFoundError(f"no memory at {memory_dir} (expected {DB_NAME} in it)")
    slots = None
    if model is not None:
        from ctxmem_plugin.reranker.runtime import Reranker

        reranker = Reranker.load(model, device="cpu")
        slots = integrity.SlotShape(reranker.model_id, reranker.model.state_slots * reranker.model.config.slots.dim * 4)
    if repair:
        lock = WriterLock(memory_dir / "writer.lock")
        lock.acquire()
        try:
            for line in integrity.repair(memory_dir, slots=slots):
                click.echo(f"repaired {line}")
        finally:
            lock.release()
    findings = integrity.check(memory_dir, slots=slots)
    for finding in findings:
        click.echo(f"problem {finding}")
    if findings:
        hint = "" if repair or not any(f.repairable for f in findings) else "; --repair rebuilds the repairable ones"
        click.echo(f"{memory_dir}: {len(findings)} problem(s){hint}", err=True)
        click.get_current_context().exit(1)
    click.echo(f"{memory_dir}: no problems found")
