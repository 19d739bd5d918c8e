"""``eval``: retrieval quality on labelled data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ctxmem_plugin.cli.app import UsageFailure, handle_errors, main, model_options


@main.group("eval")
def eval_group() -> None:
    """Measure retrieval quality on labelled data."""


@eval_group.command("locomo")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--k", "ks", default="1,5,10,20", show_default=True, help="Cut-offs, comma-separated.")
@click.option("--conversation", "conversations", multiple=True, help="Only these sample ids (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
@model_options
@handle_errors
def eval_locomo(file: Path, ks: str, conversations: tuple[str, ...], as_json: bool, model: Path | None,
                encoder: Path | None, device: str) -> None:
    """Turn-level recall of every method on a LoCoMo-format FILE (categories 1-4)."""
    from tqdm import tqdm

    from ctxmem_plugin.evaluation.locomo import evaluate_locomo

    try:
        cutoffs = tuple(int(x) for x in ks.split(",") if x.strip())
    except ValueError:
        raise UsageFailure(f"--k: expected comma-separated integers, got {ks!r}") from None
    if not cutoffs or min(cutoffs) < 1:
        raise UsageFailure("--k: cut-offs must be positive integers")
    with tqdm(unit="q", desc="eval", disable=as_json or None, file=sys.stderr) as bar:
        result = evaluate_locomo(
            file, encoder=encoder, model=model, ks=cutoffs, conversations=conversations or None, progress=bar.update,
        )
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    cols = [f"{m}@{k}" for k in cutoffs for m in ("recall", "hit")]
    click.echo(f"{result.questions} questions")
    click.echo(f"{'method':<8} " + " ".join(f"{c:>10}" for c in cols))
    for name, values in result.methods.items():
        click.echo(f"{name:<8} " + " ".join(f"{values[c]:>10.3f}" for c in cols))
