"""``train``: a ctxmem model (slots + scorer) from chat logs (:mod:`ctxmem_plugin.training.pipeline`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from ctxmem_plugin.cli.app import handle_errors, main


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Model directory to write.")
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option("--resume", is_flag=True, help="Continue the run saved in --out.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--cues", default=200, show_default=True, type=click.IntRange(0), help="Self-supervised cues per conversation.")
@click.option("--no-slots", is_flag=True, help="Train the scorer without the slot memory (ablation).")
@click.option("--members", default=3, show_default=True, type=click.IntRange(1, 32),
              help="Members trained alike from seeds SEED, SEED+1, ...; the model scores with their mean.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda.")
@click.option("--encoder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Local sentence-transformers model dir (default: bundled all-MiniLM-L6-v2).")
@click.option("--tune-encoder/--frozen-encoder", "tune", default=None,
              help="Fine-tune the encoder on the logs' labelled questions first and keep it in --out/encoder "
                   "[default: tune when the logs hold labelled questions].")
@click.option("--encoder-epochs", default=2, show_default=True, type=click.IntRange(1, 100), help="Epochs of encoder tuning.")
@click.option("--encoder-negatives", default=10, show_default=True, type=click.IntRange(0, 1000),
              help="Encoder tuning: each question's hard negatives are drawn from its N best-ranked non-evidence turns (0: none).")
@click.option("--encoder-hard-negatives", default=1, show_default=True, type=click.IntRange(1, 50),
              help="Encoder tuning: hard negatives each question brings.")
@click.option("--fit-fusion/--shipped-fusion", "fit", default=None,
              help="Choose the BM25/dense fusion that ranks the logs' labelled questions best and keep it in the model "
                   "[default: fit when the logs hold 100 labelled questions or more].")
@handle_errors
def train(files: tuple[Path, ...], out: Path, epochs: int, resume: bool, seed: int, cues: int, no_slots: bool, members: int,
          device: str, encoder: Path | None, tune: bool | None, encoder_epochs: int,
          encoder_negatives: int, encoder_hard_negatives: int, fit: bool | None) -> None:
    """Train the ctxmem model (slots + scorer) on chat logs in any supported format.

    Needs no labels: every log gives self-supervised examples. LoCoMo-format files add their
    questions and evidence as supervised examples, and by default first fine-tune the encoder
    on them (kept in --out/encoder; memories used with the model must be built with it), then
    refit the hybrid fusion to them (kept in the model's config).
    Writes config.json, model.safetensors and train_log.json to --out after every epoch;
    --resume continues the same run.
    """
    from ctxmem_plugin.training.encoder_tuning import EncoderTuneConfig
    from ctxmem_plugin.training.pipeline import PipelineOptions, train_model
    from ctxmem_plugin.training.trainer import TrainConfig

    options = PipelineOptions(
        train=TrainConfig(epochs=epochs, seed=seed, use_slots=not no_slots, members=members),
        cues=cues, encoder=encoder, device=device, tune_encoder=tune, fit_fusion=fit, resume=resume,
        encoder_tuning=EncoderTuneConfig(epochs=encoder_epochs, seed=seed,
                                         hard_negative_pool=encoder_negatives, hard_negatives=encoder_hard_negatives),
    )
    result = train_model(files, out, options, progress=_bars)
    tuned = f" (encoder tuned on {result.tuning['encoder_tuning']['pairs']} pairs)" if result.tuning else ""
    chosen = result.fusion.get("fusion", {}).get("chosen")
    if chosen:
        tuned += (f" (fusion refit: BM25 {chosen['bm25_weight']:g}, dense floor {chosen['dense_floor']:g}, "
                  f"neighbour {chosen['neighbour_weight']:g})")
    click.echo(
        f"trained {len(result.epochs)} epochs of {result.members} member(s) on {result.examples} examples "
        f"from {result.conversations} conversations{tuned} in {result.seconds:.0f}s; "
        f"final loss {result.epochs[-1]['loss']:.4f}; wrote {out}"
    )


class _Bar:
    """A pipeline stage shown as a tqdm bar (loss in its postfix)."""

    def __init__(self, bar: object, first: str | None = None) -> None:
        self.bar = bar
        self.first = first  # the description to show once work has started, if it changes

    def advance(self, done: int, loss: float | None = None) -> None:
        if self.first is not None:
            self.bar.set_description(self.first, refresh=False)  # type: ignore[attr-defined]
            self.first = None
        if loss is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)  # type: ignore[attr-defined]
        self.bar.update(done)  # type: ignore[attr-defined]


@contextmanager
def _bars(stage: str, total: int) -> Iterator[_Bar]:
    from tqdm import tqdm

    units = {"gather": "q", "train": "ex", "encoder": "pair", "fusion": "q"}
    # Encoder tuning first mines its hard negatives: a pass of the base encoder the bar cannot count.
    desc = "encoder (mining negatives)" if stage == "encoder" else stage
    with tqdm(total=total, unit=units.get(stage, "it"), desc=desc, file=sys.stderr) as bar:
        yield _Bar(bar, first=stage if desc != stage else None)
