"""What ``ctxmem-plugin train`` runs, step by step: tune the encoder, refit the fusion, gather, train.

1. **Encoder** (:func:`training_encoder`): with labelled questions (LoCoMo-format logs), the
   encoder is fine-tuned on their evidence and kept in ``OUT/encoder``; otherwise the given one
   is used as it is.
2. **Fusion** (:func:`training_fusion`): with enough labelled questions, the BM25/dense fusion
   that ranks them best is chosen and kept in the model's config.
3. **Gathering** (:func:`ctxmem_plugin.training.data.gather`): every question, cue and
   follow-up gets its candidates and features from a throw-away memory, with that encoder and
   fusion.
4. **Training** (:func:`ctxmem_plugin.training.trainer.train`), checkpointed after each epoch.

Benchmarks call the same steps (``benchmarks/locomo_crossval.py`` runs them per fold).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ctxmem_plugin.encoders import TextEncoder, load_encoder, resolve_device
from ctxmem_plugin.encoders.tuned import ENCODER_DIR, bundled_encoder, encoder_dir_problems
from ctxmem_plugin.errors import InputError
from ctxmem_plugin.reranker.checkpoint import read_config
from ctxmem_plugin.reranker.runtime import RuntimeSettings
from ctxmem_plugin.retrieval.hybrid import RetrievalConfig
from ctxmem_plugin.training.data import FOLLOWUPS_PER_CONVERSATION, Conversation, gather, load_conversations
from ctxmem_plugin.training.encoder_tuning import EncoderTuneConfig, bundle_tuned_encoder, evidence_pairs, pairs_per_epoch
from ctxmem_plugin.training.fusion_fit import MIN_FIT_QUESTIONS, fit_fusion_on
from ctxmem_plugin.training.memo import MemoEncoder
from ctxmem_plugin.training.trainer import TrainConfig, init_distributed, resume_config, train


class Stage(Protocol):
    """Progress of one step: ``advance(done, loss)`` after each unit of work (``loss`` if any)."""

    def advance(self, done: int, loss: float | None = None) -> None: ...


Progress = Callable[[str, int], AbstractContextManager[Stage]]
"""``progress(step name, total units)`` opens a :class:`Stage` for the step (a progress bar)."""


class _Silent:
    def advance(self, done: int, loss: float | None = None) -> None:
        pass


@contextmanager
def silent(name: str, total: int) -> Iterator[Stage]:
    """A :data:`Progress` that shows nothing."""
    yield _Silent()


@dataclass(frozen=True)
class PipelineOptions:
    """Everything ``train`` is told besides the files and the output directory.

    Attributes:
        train: the model's training settings.
        cues: self-supervised cues gathered per conversation.
        encoder: the base encoder (a local sentence-transformers directory); None = the default.
        device: where the encoder and the model run (``auto``: CUDA when present).
        tune_encoder: fine-tune the encoder on labelled questions; None = when there are some.
        encoder_tuning: how.
        fit_fusion: refit the fusion on labelled questions; None = with 100 or more.
        resume: continue the run saved in the output directory.
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    cues: int = 200
    encoder: Path | None = None
    device: str = "auto"
    tune_encoder: bool | None = None
    encoder_tuning: EncoderTuneConfig = field(default_factory=EncoderTuneConfig)
    fit_fusion: bool | None = None
    resume: bool = False


@dataclass(frozen=True)
class PipelineResult:
    """What a training run did: its log (``train_log.json``) and the summary ``train`` prints."""

    epochs: list[dict[str, Any]]
    examples: int
    conversations: int
    members: int
    seconds: float
    tuning: dict[str, Any]
    fusion: dict[str, Any]


def train_model(files: Sequence[Path], out: Path, options: PipelineOptions, progress: Progress = silent) -> PipelineResult:
    """Train a model on chat logs into ``out``: the four steps of this module.

    Raises:
        InputError: ``--resume`` without a run to resume, tuning or fitting asked for without
            labelled questions, or logs with nothing to learn from.
    """
    began = time.perf_counter()
    cfg = options.train
    if options.resume:
        if not (out / "train_log.json").is_file():
            raise InputError(f"--resume: no train_log.json in {out}")
        cfg = resume_config(out, cfg)
    convs = load_conversations(files)
    # Under torchrun the process group comes first: rank 0 tunes the encoder, the others wait.
    _, _, device = init_distributed(resolve_device(options.device))
    encoder, encoder_dir, tuning = training_encoder(convs, out, options, device, progress)
    # The fusion fit and the gathering embed the same turns and questions: the second takes the first's vectors.
    memo = MemoEncoder(encoder)
    retrieval, fusion = training_fusion(convs, out, memo, cfg, options.fit_fusion, options.resume, progress)
    followups = FOLLOWUPS_PER_CONVERSATION if cfg.focus_rate > 0 else 0
    queries = sum(len(c.questions) for c in convs) + (options.cues + followups) * len(convs)
    with progress("gather", queries) as stage:
        data = gather(convs, memo, retrieval=retrieval, cues_per_conversation=options.cues,
                      followups_per_conversation=followups, seed=cfg.seed, slot_feature_dim=cfg.slot_feature_dim,
                      focus_rate=cfg.focus_rate, focus_pool=cfg.focus_pool, progress=stage.advance)
    with progress("train", len(data.examples) * cfg.epochs) as stage:
        _, log = train(
            data, cfg, out, resume=options.resume, device=device, progress=stage.advance, encoder_dir=encoder_dir,
            extra_log={"files": [str(f) for f in files], "conversations": [c.name for c in convs], **tuning, **fusion,
                       "embedding": {"texts_encoded": memo.encoded, "texts_reused": memo.reused}},
        )
    return PipelineResult(log, data.describe()["examples"], len(convs), cfg.members, time.perf_counter() - began, tuning, fusion)


def training_encoder(
    convs: Sequence[Conversation], out: Path, options: PipelineOptions, device: str, progress: Progress = silent
) -> tuple[TextEncoder, str | None, dict[str, Any]]:
    """The encoder to gather with, the model's ``encoder_dir``, and the tuning's log entry.

    A resumed run keeps the encoder it was gathered with: the tuned one in ``out``, if any.
    """
    if options.resume:
        config, _ = read_config(out)
        if config.encoder_dir is None:
            return load_encoder(options.encoder, device=device), None, {}
        problems = encoder_dir_problems(out / config.encoder_dir, config.encoder)
        if problems:
            raise InputError(f"--resume: the tuned encoder in {out} is unusable: {'; '.join(problems)}")
        return bundled_encoder(out, config.encoder_dir, config.encoder, device), config.encoder_dir, {}
    base = load_encoder(options.encoder, device=device)
    pairs = evidence_pairs(convs)
    tunable = isinstance(getattr(base, "path", None), Path)  # a local sentence-transformers model
    if options.tune_encoder and not pairs:
        raise InputError("--tune-encoder needs labelled questions (LoCoMo-format files); these logs have none")
    if options.tune_encoder and not tunable:
        raise InputError("--tune-encoder needs a local sentence-transformers model as the encoder")
    # By default: tune wherever it can (contrastive tuning needs 2 pairs at least).
    wanted = options.tune_encoder if options.tune_encoder is not None else len(pairs) >= 2 and tunable
    if not wanted:
        return base, None, {}
    cfg = options.encoder_tuning
    # Mining the hard negatives (one pass of the base encoder over the turns) comes first.
    with progress("encoder", pairs_per_epoch(pairs, cfg) * cfg.epochs) as stage:
        tuned, report = bundle_tuned_encoder(
            convs, out, base=base, cfg=cfg, device=device, progress=stage.advance  # type: ignore[arg-type]
        )
    entry: dict[str, Any] = {"base": base.name, "name": tuned.name, "config": asdict(cfg), "pairs": len(pairs)}
    if report is not None:
        entry.update(losses=list(report.losses), seconds=report.seconds, hard_negatives=report.negatives)
    return tuned, ENCODER_DIR, {"encoder_tuning": entry}


def training_fusion(
    convs: Sequence[Conversation], out: Path, encoder: TextEncoder, cfg: TrainConfig, fit: bool | None, resume: bool,
    progress: Progress = silent,
) -> tuple[RetrievalConfig | None, dict[str, Any]]:
    """The retrieval settings to gather with, and the fit's log entry (empty when none was made).

    A resumed run keeps the settings its model was trained with.
    """
    if resume:
        saved = RuntimeSettings.from_extra(read_config(out)[1]).retrieval
        return (RetrievalConfig(**saved) if saved else None), {}
    questions = sum(len(c.questions) for c in convs)
    if fit and not questions:
        raise InputError("--fit-fusion needs labelled questions (LoCoMo-format files); these logs have none")
    if fit is False or (fit is None and questions < MIN_FIT_QUESTIONS):
        return None, {}
    with progress("fusion", questions) as stage:
        result = fit_fusion_on(convs, encoder, focus_rate=cfg.focus_rate, focus_pool=cfg.focus_pool,
                               slot_feature_dim=cfg.slot_feature_dim, min_questions=1, progress=stage.advance)
    assert result is not None  # there are questions, and min_questions=1
    return result.config, {"fusion": result.describe()}
