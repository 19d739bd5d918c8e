"""The ``ctxmem-plugin`` command line: a thin layer over :class:`ctxmem_plugin.memory.ContextMemory`.

Quick start::

    ctxmem-plugin ingest examples/chat_logs --memory ./mem --namespace maya
    ctxmem-plugin query "what is the name of Maya's dog?" --memory ./mem --namespace maya

Heavy imports (torch, sentence-transformers, faiss) happen inside the commands that need them,
so ``--help``, ``stats`` and ``forget`` answer at once.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ctxmem_plugin import __version__
from ctxmem_plugin.errors import CtxMemError

if TYPE_CHECKING:  # torch comes with these: imported only where a command needs them
    from ctxmem_plugin.encoders import TextEncoder
    from ctxmem_plugin.retrieval.hybrid import RetrievalConfig
    from ctxmem_plugin.training.trainer import TrainConfig

F = TypeVar("F", bound=Callable[..., Any])


class UsageFailure(click.ClickException):
    """A one-line error with exit code 2 (bad input or usage), as click's own usage errors."""

    exit_code = 2


def handle_errors(func: F) -> F:
    """Turn library errors into one-line click errors; the exit code comes from the error."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CtxMemError as exc:
            error = UsageFailure(str(exc)) if exc.exit_code == 2 else click.ClickException(str(exc))
            raise error from None

    return wrapper  # type: ignore[return-value]


def memory_option(func: F) -> F:
    return click.option(
        "--memory", "-m", "memory_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
        envvar="CTXMEM_MEMORY", help="Memory directory (env CTXMEM_MEMORY).",
    )(func)


def namespace_option(default: str | None = "default", help_text: str = "Namespace, labels joined by '/'.") -> Callable[[F], F]:
    def deco(func: F) -> F:
        return click.option("--namespace", "-n", default=default, show_default=default is not None, help=help_text)(func)

    return deco


def model_options(func: F) -> F:
    func = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")(func)
    func = click.option(
        "--encoder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
        help="Local sentence-transformers model dir (default: bundled all-MiniLM-L6-v2).",
    )(func)
    return click.option(
        "--model", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
        help="Trained ctxmem model dir (config.json + model.safetensors).",
    )(func)


def open_memory(path: Path, *, read_only: bool, model: Path | None = None, encoder: Path | None = None, device: str = "auto") -> Any:
    from ctxmem_plugin.memory import ContextMemory

    memory = ContextMemory(path, read_only=read_only, model=model, encoder=encoder, device=device)
    click.get_current_context().call_on_close(memory.close)
    return memory


def parse_namespace(text: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    from ctxmem_plugin.namespaces import validate

    return validate(text, allow_empty=allow_empty)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ctxmem-plugin")
def main() -> None:
    """Offline long-term memory for LLM agents.

    \b
    Build a memory from chat logs, then ask it:
      ctxmem-plugin ingest examples/chat_logs --memory ./mem --namespace maya
      ctxmem-plugin query "what is the name of Maya's dog?" --memory ./mem --namespace maya
    """


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@memory_option
@namespace_option()
@click.option("--format", "fmt", default=None, help="openai, langchain, sharegpt, locomo, transcript (default: detect).")
@click.option("--skip-invalid", is_flag=True, help="Ingest the valid records and report the invalid ones.")
@click.option("--split-conversations", is_flag=True, help="Put each conversation in NAMESPACE/<conversation id>.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@model_options
@handle_errors
def ingest(paths: tuple[Path, ...], memory_dir: Path, namespace: str, fmt: str | None, skip_invalid: bool,
           split_conversations: bool, as_json: bool, model: Path | None, encoder: Path | None, device: str) -> None:
    """Build memory from chat logs (files or directories).

    Every file is read and validated before anything is written, and each file is stored in one
    transaction: a bad file leaves the memory unchanged. Re-ingesting a file adds nothing.
    """
    from tqdm import tqdm

    from ctxmem_plugin.formats import read_paths

    space = parse_namespace(namespace)
    logs = read_paths(paths, fmt, skip_invalid=skip_invalid)
    total = sum(len(log.turns) for log in logs)
    memory = open_memory(memory_dir, read_only=False, model=model, encoder=encoder, device=device)
    _ = memory.index  # load the encoder and the vector index first: the rate below counts ingesting only
    with tqdm(total=total, unit="turn", desc="ingest", disable=as_json or None, file=sys.stderr) as bar:
        report = memory.ingest(logs, space, split_conversations=split_conversations, progress=bar.update)
    memory.flush()
    rate = total / report.seconds if report.seconds > 0 else 0.0
    summary = {
        "files": len(logs), "turns": total, "added": report.added, "duplicates": report.duplicates,
        "skipped": len(report.invalid), "seconds": round(report.seconds, 3), "turns_per_second": round(rate, 1),
    }
    if as_json:
        click.echo(json.dumps({**summary, "invalid": report.invalid}))
        return
    click.echo(
        f"ingested {report.added} turns from {len(logs)} file(s) into {namespace} "
        f"({report.duplicates} already present, {len(report.invalid)} invalid skipped) "
        f"in {report.seconds:.1f}s, {rate:.0f} turns/s"
    )
    for line in report.invalid:
        click.echo(f"skipped: {line}", err=True)


@main.command()
@click.argument("text")
@memory_option
@namespace_option(default="", help_text="Namespace prefix to search under (default: everything).")
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(1, 1000), help="Number of hits.")
@click.option("--method", default="auto", show_default=True, type=click.Choice(["auto", "ctxmem", "hybrid", "bm25", "dense"]),
              help="Ranking: auto = ctxmem with --model, else hybrid.")
@click.option("--filter", "filter_json", default=None, help='Metadata filter as JSON, e.g. \'{"session": {"$gte": 2}}\'.')
@click.option("--json", "as_json", is_flag=True, help="Print hits as a JSON array.")
@click.option("--focus", "focus", default=None, metavar="NAMESPACE",
              help="The conversation going on: a follow-up in TEXT refers to its latest turns (ctxmem; "
                   "default: the searched namespace).")
@model_options
@handle_errors
def query(text: str, memory_dir: Path, namespace: str, k: int, method: str, filter_json: str | None, as_json: bool,
          focus: str | None, model: Path | None, encoder: Path | None, device: str) -> None:
    """Ask the memory: the turns most relevant to TEXT."""
    from ctxmem_plugin.memory import dumps_hits, format_hit

    space = parse_namespace(namespace, allow_empty=True)
    focus_space = parse_namespace(focus) if focus is not None else None
    filters = _parse_filter(filter_json)
    memory = open_memory(memory_dir, read_only=True, model=model, encoder=encoder, device=device)
    hits = memory.search(text, space, k=k, filters=filters, method=method, focus=focus_space)
    if as_json:
        click.echo(dumps_hits(hits))
        return
    if not hits:
        click.echo("no memories found")
    for rank, hit in enumerate(hits, 1):
        found_by = ", ".join(sorted(hit.signals))
        click.echo(f"{rank:>2}. {hit.score:6.3f}  {format_hit(hit)}  [{'/'.join(hit.namespace)}; {found_by}]")


def _parse_filter(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageFailure(f"--filter: invalid JSON at column {exc.colno}: {exc.msg}") from None
    if not isinstance(value, dict):
        raise UsageFailure("--filter: expected a JSON object")
    return value


@main.command()
@memory_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def stats(memory_dir: Path, as_json: bool) -> None:
    """Counts of turns per namespace, and sizes on disk."""
    from ctxmem_plugin.memory import ContextMemory

    with ContextMemory(memory_dir, read_only=True, encoder=_NoEncoder()) as memory:
        info = memory.stats()
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"{info['path']}: {info['turns']} turns, {info['bytes'] / 1e6:.2f} MB, encoder {info['encoder']} ({info['dim']}-d)")
    for space, count in info["namespaces"].items():
        click.echo(f"  {space}: {count}")


class _NoEncoder:
    """Stands in for the encoder in commands that never embed anything (fast start-up)."""

    name = "unused"
    dim = 0

    def encode(self, texts: Any) -> Any:
        raise RuntimeError("this command does not embed text")

    def encode_query(self, text: str) -> Any:
        raise RuntimeError("this command does not embed text")


@main.command()
@memory_option
@click.option("--namespace", "-n", required=True, help="Namespace (prefix) to remove, labels joined by '/'.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def forget(memory_dir: Path, namespace: str, yes: bool) -> None:
    """Remove everything stored under a namespace, leaving nothing of it on disk."""
    from ctxmem_plugin.memory import ContextMemory

    space = parse_namespace(namespace)
    if not (memory_dir / "memory.sqlite3").is_file():
        from ctxmem_plugin.errors import MemoryNotFoundError

        raise MemoryNotFoundError(f"no memory at {memory_dir}")
    if not yes and sys.stdin.isatty():
        click.confirm(f"Forget everything under {namespace}?", abort=True)
    with ContextMemory(memory_dir, encoder=_stand_in_encoder(memory_dir)) as memory:
        count = memory.forget(space)
    click.echo(f"forgot {count} turns under {namespace}")


@main.command()
@memory_option
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def reembed(memory_dir: Path, model: Path | None, encoder: Path | None, device: str, as_json: bool) -> None:
    """Re-encode every stored turn with the encoder of --model (or --encoder).

    Run it once to use a memory built with one encoder with a model trained with a tuned one
    (the model keeps it in MODEL/encoder). One transaction: interrupted, the memory is unchanged.
    """
    from tqdm import tqdm

    from ctxmem_plugin.errors import MemoryNotFoundError

    if not (memory_dir / "memory.sqlite3").is_file():
        raise MemoryNotFoundError(f"no memory at {memory_dir}")
    if model is None and encoder is None:
        raise UsageFailure("reembed needs --model or --encoder: the encoder to re-encode with")
    memory = open_memory(memory_dir, read_only=False, model=model, encoder=encoder, device=device)
    before = memory.store.get_meta("encoder")
    with tqdm(total=memory.store.count(), unit="turn", desc="reembed", file=sys.stderr, disable=as_json) as bar:
        count = memory.reembed(progress=bar.update)
    summary = {"turns": count, "from": before, "encoder": memory.encoder.name}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"re-encoded {count} turns with {memory.encoder.name} (was {before})")


def _stand_in_encoder(memory_dir: Path) -> Any:
    """An encoder stand-in with the memory's own name and width (forget and upgrade embed nothing).

    Read from the ``meta`` table directly, which every schema version has, so that a memory
    written by an earlier version can still be opened for writing (and upgraded) this way.
    """
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(memory_dir / "memory.sqlite3", timeout=30.0)) as db:
        db.execute("PRAGMA query_only=ON")
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('encoder', 'dim')").fetchall())
    enc = _NoEncoder()
    enc.name = meta.get("encoder") or "unused"
    enc.dim = int(meta.get("dim") or 0)
    return enc


@main.command()
@memory_option
@handle_errors
def upgrade(memory_dir: Path) -> None:
    """Bring a memory written by an earlier ctxmem-plugin to this version's storage schema.

    Commands that write upgrade a memory as they open it; those that only read (query, stats,
    export, explain) cannot, and ask for this. One transaction per step; the turns are unchanged.
    """
    from ctxmem_plugin.errors import MemoryNotFoundError
    from ctxmem_plugin.memory import ContextMemory

    if not (memory_dir / "memory.sqlite3").is_file():
        raise MemoryNotFoundError(f"no memory at {memory_dir}")
    with ContextMemory(memory_dir, encoder=_stand_in_encoder(memory_dir)) as memory:
        version = memory.store.schema_version
    click.echo(f"{memory_dir}: storage schema version {version}, current")


@main.command("export")
@memory_option
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@namespace_option(default="", help_text="Namespace prefix to export (default: everything).")
@click.option("--with-vectors", is_flag=True, help="Include each turn's vector.")
@handle_errors
def export_cmd(memory_dir: Path, out: Path, namespace: str, with_vectors: bool) -> None:
    """Write the memory as portable JSONL, one object per turn."""
    from ctxmem_plugin.formats.portable import export_jsonl

    count = export_jsonl(memory_dir, out, parse_namespace(namespace, allow_empty=True), with_vectors=with_vectors)
    click.echo(f"exported {count} turns to {out}")


@main.command("import")
@memory_option
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_options
@handle_errors
def import_cmd(memory_dir: Path, src: Path, model: Path | None, encoder: Path | None, device: str) -> None:
    """Load a JSONL export into a memory (vectors are reused when they fit the encoder)."""
    from ctxmem_plugin.formats.portable import import_jsonl

    memory = open_memory(memory_dir, read_only=False, model=model, encoder=encoder, device=device)
    added, duplicates = import_jsonl(memory, src)
    click.echo(f"imported {added} turns ({duplicates} already present) from {src}")


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
    import time

    from tqdm import tqdm

    from ctxmem_plugin.encoders import resolve_device
    from ctxmem_plugin.training.memo import MemoEncoder
    from ctxmem_plugin.training.trainer import TrainConfig, init_distributed, resume_config
    from ctxmem_plugin.training.trainer import train as run_training
    from ctxmem_plugin.training.data import FOLLOWUPS_PER_CONVERSATION, gather, load_conversations

    cfg = TrainConfig(epochs=epochs, seed=seed, use_slots=not no_slots, members=members)
    if resume:
        if not (out / "train_log.json").is_file():
            raise UsageFailure(f"--resume: no train_log.json in {out}")
        cfg = resume_config(out, cfg)
    began = time.perf_counter()
    convs = load_conversations(files)
    # Under torchrun the process group comes first: rank 0 tunes the encoder, the others wait.
    _, _, dev = init_distributed(resolve_device(device))
    tuned_enc, encoder_dir, tuning = _training_encoder(
        convs, out, encoder, dev, tune, encoder_epochs, (encoder_negatives, encoder_hard_negatives), seed, resume)
    # The fusion fit and the gathering embed the same turns and questions: the second takes the first's vectors.
    enc = MemoEncoder(tuned_enc)
    retrieval, fusion = _training_fusion(convs, out, enc, cfg, fit, resume)
    followups = FOLLOWUPS_PER_CONVERSATION if cfg.focus_rate > 0 else 0
    queries = sum(len(c.questions) for c in convs) + (cues + followups) * len(convs)
    with tqdm(total=queries, unit="q", desc="gather", file=sys.stderr) as bar:
        data = gather(convs, enc, retrieval=retrieval, cues_per_conversation=cues, followups_per_conversation=followups,
                      seed=seed, slot_feature_dim=cfg.slot_feature_dim, focus_rate=cfg.focus_rate,
                      focus_pool=cfg.focus_pool, progress=bar.update)
    with tqdm(total=len(data.examples) * cfg.epochs, unit="ex", desc="train", file=sys.stderr) as bar:
        def progress(done: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.update(done)

        _, log = run_training(
            data, cfg, out, resume=resume, device=dev, progress=progress, encoder_dir=encoder_dir,
            extra_log={"files": [str(f) for f in files], "conversations": [c.name for c in convs], **tuning, **fusion,
                       "embedding": {"texts_encoded": enc.encoded, "texts_reused": enc.reused}},
        )
    tuned = f" (encoder tuned on {tuning['encoder_tuning']['pairs']} pairs)" if tuning else ""
    if fusion.get("fusion", {}).get("chosen"):
        chosen = fusion["fusion"]["chosen"]
        tuned += f" (fusion refit: BM25 {chosen['bm25_weight']:g}, dense floor {chosen['dense_floor']:g}, neighbour {chosen['neighbour_weight']:g})"
    click.echo(
        f"trained {len(log)} epochs of {cfg.members} member(s) on {data.describe()['examples']} examples from {len(convs)} conversations{tuned} "
        f"in {time.perf_counter() - began:.0f}s; final loss {log[-1]['loss']:.4f}; wrote {out}"
    )


def _training_fusion(
    convs: list[Any], out: Path, encoder: TextEncoder, cfg: TrainConfig, fit: bool | None, resume: bool
) -> tuple[RetrievalConfig | None, dict[str, Any]]:
    """The retrieval settings to gather with, and the fit's log entry (empty when none was made).

    A resumed run keeps the settings its model was trained with.
    """
    from tqdm import tqdm

    from ctxmem_plugin.reranker.checkpoint import read_config
    from ctxmem_plugin.training.fusion_fit import MIN_FIT_QUESTIONS, fit_fusion_on
    from ctxmem_plugin.retrieval.hybrid import RetrievalConfig
    from ctxmem_plugin.reranker.runtime import RuntimeSettings

    if resume:
        saved = RuntimeSettings.from_extra(read_config(out)[1]).retrieval
        return (RetrievalConfig(**saved) if saved else None), {}
    questions = sum(len(c.questions) for c in convs)
    if fit and not questions:
        raise UsageFailure("--fit-fusion needs labelled questions (LoCoMo-format files); these logs have none")
    if fit is False or (fit is None and questions < MIN_FIT_QUESTIONS):
        return None, {}
    with tqdm(total=questions, unit="q", desc="fusion", file=sys.stderr) as bar:
        result = fit_fusion_on(convs, encoder, focus_rate=cfg.focus_rate, focus_pool=cfg.focus_pool,
                               slot_feature_dim=cfg.slot_feature_dim, min_questions=1, progress=bar.update)
    assert result is not None  # there are questions, and min_questions=1
    return result.config, {"fusion": result.describe()}


def _training_encoder(
    convs: list[Any], out: Path, encoder: Path | None, device: str, tune: bool | None, epochs: int,
    negatives: tuple[int, int], seed: int, resume: bool,
) -> tuple[Any, str | None, dict[str, Any]]:
    """The encoder to gather with, the model's ``encoder_dir``, and the tuning's log entry.

    A resumed run keeps the encoder it was gathered with: the tuned one in ``out``, if any.
    ``negatives`` is (the pool a question's hard negatives are drawn from, how many it brings).
    """
    from dataclasses import asdict

    from tqdm import tqdm

    from ctxmem_plugin.reranker.checkpoint import read_config
    from ctxmem_plugin.encoders import load_encoder
    from ctxmem_plugin.training.encoder_tuning import EncoderTuneConfig, bundle_tuned_encoder, evidence_pairs, pairs_per_epoch
    from ctxmem_plugin.encoders.tuned import bundled_encoder, encoder_dir_problems

    if resume:
        config, _ = read_config(out)
        if config.encoder_dir is None:
            return load_encoder(encoder, device=device), None, {}
        problems = encoder_dir_problems(out / config.encoder_dir, config.encoder)
        if problems:
            raise UsageFailure(f"--resume: the tuned encoder in {out} is unusable: {'; '.join(problems)}")
        return bundled_encoder(out, config.encoder_dir, config.encoder, device), config.encoder_dir, {}
    base = load_encoder(encoder, device=device)
    pairs = evidence_pairs(convs)
    tunable = isinstance(getattr(base, "path", None), Path)  # a local sentence-transformers model
    if tune and not pairs:
        raise UsageFailure("--tune-encoder needs labelled questions (LoCoMo-format files); these logs have none")
    if tune and not tunable:
        raise UsageFailure("--tune-encoder needs a local sentence-transformers model as the encoder")
    # By default: tune wherever it can (contrastive tuning needs 2 pairs at least).
    if not (tune if tune is not None else len(pairs) >= 2 and tunable):
        return base, None, {}
    cfg = EncoderTuneConfig(epochs=epochs, seed=seed, hard_negative_pool=negatives[0], hard_negatives=negatives[1])
    # Mining the hard negatives (one pass of the base encoder over the turns) comes first.
    with tqdm(total=pairs_per_epoch(pairs, cfg) * epochs, unit="pair", desc="encoder (mining negatives)" if negatives[0] else "encoder", file=sys.stderr) as bar:
        def progress(done: int, loss: float) -> None:
            bar.set_description("encoder", refresh=False)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.update(done)

        tuned, report = bundle_tuned_encoder(convs, out, base=base, cfg=cfg, device=device, progress=progress)
    entry: dict[str, Any] = {"base": base.name, "name": tuned.name, "config": asdict(cfg), "pairs": len(pairs)}
    if report is not None:
        entry.update(losses=list(report.losses), seconds=report.seconds, hard_negatives=report.negatives)
    return tuned, "encoder", {"encoder_tuning": entry}


@main.command()
@click.argument("text")
@memory_option
@click.option("--namespace", "-n", required=True, help="Exact namespace whose slots to inspect.")
@click.option("--model", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Trained model dir.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def explain(text: str, memory_dir: Path, namespace: str, model: Path, as_json: bool) -> None:
    """Which memory slots TEXT attends to, and which turns those slots hold most of."""
    memory = open_memory(memory_dir, read_only=True, model=model)
    info = memory.explain(text, parse_namespace(namespace))
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"slot attention entropy {info['entropy']:.2f} (1 = spread evenly, 0 = one slot)")
    for slot in info["top_slots"]:
        click.echo(f"slot {slot['slot']:>2}  attention {slot['attention']:.3f}")
        for turn in slot["turns"]:
            click.echo(f"    {turn['similarity']:.2f}  {turn['speaker']}: {turn['text'][:100]}")


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


if __name__ == "__main__":
    main()
