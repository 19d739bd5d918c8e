"""``query`` (ask the memory) and ``explain`` (what the slots attend to)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
from ctxmem_plugin.records import Hit
from ctxmem_plugin.retrieval.history import HISTORY_MODES

SHOWN_CHARS = 300
"""Longest text shown per hit in text output (``--json`` gives it whole)."""


@main.command()
@click.argument("text")
@memory_option
@namespace_option(default="", help_text="Namespace prefix to search under (default: everything).")
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(1, 1000), help="Number of hits.")
@click.option("--method", default="auto", show_default=True, type=click.Choice(["auto", "ctxmem", "hybrid", "bm25", "dense"]),
              help="Ranking: auto = ctxmem with --model, else hybrid.")
@click.option("--filter", "filter_json", default=None, help='Metadata filter as JSON, e.g. \'{"session": {"$gte": 2}}\'.')
@click.option("--json", "as_json", is_flag=True, help="Print hits as a JSON array.")
@click.option("--history", "history_file", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The conversation TEXT is asked in (a chat log in any supported format, oldest first): "
                   "a follow-up such as 'and the painting?' is searched for what it refers to.")
@click.option("--history-namespace", default=None, metavar="NAMESPACE",
              help="The same, for a conversation stored in the memory under NAMESPACE.")
@click.option("--history-mode", default="auto", show_default=True, type=click.Choice(["auto", *HISTORY_MODES]),
              help="How the conversation is used: fuse = TEXT alone and TEXT after the conversation's last 5 "
                   "turns, both searched, merged (auto); concat = only the latter; slots = the --model's focus "
                   "slot (opt-in).")
@model_options
@handle_errors
def query(text: str, location: str, namespace: str, k: int, method: str, filter_json: str | None, as_json: bool,
          history_file: Path | None, history_namespace: str | None, history_mode: str, model: Path | None,
          encoder: Path | None, device: str) -> None:
    """Ask the memory: the turns most relevant to TEXT (asked after --history, if given)."""
    from ctxmem_plugin.namespaces import format_namespace
    from ctxmem_plugin.retrieval.context import format_hit

    space = parse_namespace(namespace, allow_empty=True)
    if history_file is not None and history_namespace is not None:
        raise UsageFailure("give --history or --history-namespace, not both")
    history: Any = None
    if history_file is not None:
        from ctxmem_plugin.formats import read_log

        history = [st.turn for st in read_log(history_file).turns]
    elif history_namespace is not None:
        history = parse_namespace(history_namespace)
    filters = _parse_filter(filter_json)
    memory = open_memory(location, read_only=True, model=model, encoder=encoder, device=device)
    empty = nothing_under(memory, space)
    hits = [] if empty else memory.search(text, space, k=k, filters=filters, method=method, history=history,
                                          history_mode=history_mode)
    if as_json:
        click.echo(dumps_hits(hits))
        if empty:
            click.echo(empty, err=True)
        return
    if not hits:
        click.echo(f"no memories found: {empty}" if empty else "no memories found")
    for rank, hit in enumerate(hits, 1):
        found_by = ", ".join(sorted(hit.signals))
        line = format_hit(hit)
        if len(line) > SHOWN_CHARS:
            line = line[:SHOWN_CHARS] + f"... [{len(hit.text):,} characters; --json for all]"
        click.echo(f"{rank:>2}. {hit.score:6.3f}  {line}  [{format_namespace(hit.namespace)}; {found_by}]")


def dumps_hits(hits: Sequence[Hit]) -> str:
    """Hits as a JSON array (``--json`` output); texts whole."""
    from ctxmem_plugin.namespaces import format_namespace

    return json.dumps(
        [
            {
                "id": h.id, "score": h.score, "namespace": format_namespace(h.namespace), "speaker": h.speaker,
                "role": h.role, "timestamp": h.timestamp, "text": h.text, "metadata": h.metadata, "signals": h.signals,
            }
            for h in hits
        ],
        ensure_ascii=False,
    )


def _parse_filter(text: str | None) -> dict[str, Any] | None:
    from ctxmem_plugin import safejson
    from ctxmem_plugin.formats.document import json_problem

    if text is None:
        return None
    try:
        value = safejson.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageFailure(f"--filter: invalid JSON: {json_problem(exc)}") from None
    if not isinstance(value, dict):
        raise UsageFailure("--filter: expected a JSON object")
    return value


@main.command()
@click.argument("text")
@memory_option
@click.option("--namespace", "-n", required=True, help="Exact namespace whose slots to inspect.")
@click.option("--model", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Trained model dir.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def explain(text: str, location: str, namespace: str, model: Path, as_json: bool) -> None:
    """Which memory slots TEXT attends to, and which turns those slots hold most of."""
    memory = open_memory(location, read_only=True, model=model)
    info = memory.explain(text, parse_namespace(namespace))
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"slot attention entropy {info['entropy']:.2f} (1 = spread evenly, 0 = one slot)")
    for slot in info["top_slots"]:
        click.echo(f"slot {slot['slot']:>2}  attention {slot['attention']:.3f}")
        for turn in slot["turns"]:
            click.echo(f"    {turn['similarity']:.2f}  {turn['speaker']}: {turn['text'][:100]}")
