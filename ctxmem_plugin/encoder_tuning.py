"""Fine-tuning the embedding model on labelled evidence: (question, evidence turn) pairs.

The trained scorer re-ranks candidates whose dense scores come from the encoder, so a frozen
encoder caps both the candidate pool and the dense signal. Where the training logs carry
evidence labels (LoCoMo-format files), :func:`tune_encoder` fine-tunes the encoder with a
contrastive loss: each question must pick its evidence turn among the batch's turns.

The tuned encoder is written as a sentence-transformers directory (``model.safetensors``,
JSON configs, tokenizer files; never pickle) inside the model directory, and its name carries
the hash of its weights, so a memory built with it can never be read with another encoder
(:meth:`ContextMemory._check_encoder`).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ctxmem_plugin.encoder import SentenceEncoder
from ctxmem_plugin.errors import InputError
from ctxmem_plugin.indexing import embed_text
from ctxmem_plugin.training_data import Conversation
from ctxmem_plugin.tuned_encoder import ENCODER_DIR, tuned_name


@dataclass(frozen=True)
class EncoderTuneConfig:
    """Hyper-parameters of encoder fine-tuning (saved in ``train_log.json``).

    One epoch at ``lr=2e-5`` raised dense R@10 on held-out LoCoMo conversations from 0.469 to
    0.676 (``benchmarks/encoder_finetune.py``); more is untested.
    """

    epochs: int = 1
    lr: float = 2e-5
    batch_size: int = 32
    scale: float = 20.0  # inverse temperature of the in-batch softmax over cosine similarities
    seed: int = 0


@dataclass(frozen=True)
class TuneReport:
    """What a tuning run did."""

    name: str
    pairs: int
    losses: tuple[float, ...]
    seconds: float


def evidence_pairs(conversations: Sequence[Conversation]) -> list[tuple[str, str]]:
    """``(question, evidence turn)`` for every evidence turn of every labelled question.

    The turn is the text its stored vector is computed from (:func:`embed_text`), the question
    the text a search encodes.
    """
    pairs = []
    for conv in conversations:
        texts = [embed_text(st.turn) for st in conv.turns]
        pairs += [(q, texts[p]) for q, evidence in conv.questions for p in sorted(evidence)]
    return pairs


def tune_encoder(
    pairs: Sequence[tuple[str, str]],
    out: Path,
    *,
    base: Path,
    base_name: str,
    cfg: EncoderTuneConfig = EncoderTuneConfig(),
    device: str = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> TuneReport:
    """Fine-tune the sentence-transformers model in ``base`` and save it as ``out``.

    In-batch negatives: each question's positive is its own evidence turn, the batch's other
    turns are its negatives, except turns that are evidence of the same question or the very
    same turn (those would be false negatives). ``out`` appears whole or not at all: the model
    is saved beside it and moved into place.

    Args:
        pairs: ``(question, evidence turn text)`` (:func:`evidence_pairs`).
        out: the directory to write; replaced if it exists.
        base: the local sentence-transformers directory to start from.
        base_name: the base encoder's name, the prefix of the tuned one's.
        cfg: hyper-parameters.
        device: ``cpu`` or ``cuda``.
        progress: called with ``(pairs done, running mean loss)`` after every step.

    Returns:
        The tuned encoder's name, the pairs used, the mean loss of each epoch and the time.
    """
    import torch
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the caller shows its own progress
    if len(pairs) < 2:
        raise InputError(f"encoder tuning needs at least 2 (question, evidence) pairs, got {len(pairs)}")
    began = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model = SentenceTransformer(str(base), device=device, local_files_only=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    # sentence-transformers 5 renamed tokenize() to preprocess(); either gives the model inputs.
    prepare = getattr(model, "preprocess", None) or model.tokenize
    size = min(cfg.batch_size, len(pairs))
    losses = []
    for _ in range(cfg.epochs):
        order = list(pairs)
        rng.shuffle(order)
        model.train()
        total, seen = 0.0, 0
        for i in range(0, len(order) - size + 1, size):  # a short last batch has too few negatives
            batch = order[i : i + size]
            questions, turns = [q for q, _ in batch], [t for _, t in batch]
            q = F.normalize(model(_on(prepare(questions), device))["sentence_embedding"], dim=-1)  # (b, d)
            t = F.normalize(model(_on(prepare(turns), device))["sentence_embedding"], dim=-1)  # (b, d)
            same = torch.tensor([[qa == qb or ta == tb for qb, tb in batch] for qa, ta in batch], device=q.device)
            same.fill_diagonal_(False)
            logits = (q @ t.T * cfg.scale).masked_fill(same, float("-inf"))  # (b, b)
            loss = F.cross_entropy(logits, torch.arange(len(batch), device=q.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, seen = total + float(loss.detach()) * len(batch), seen + len(batch)
            if progress is not None:
                progress(len(batch), total / seen)
        losses.append(total / max(seen, 1))
    model.eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save(str(staging), create_model_card=False, safe_serialization=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return TuneReport(tuned_name(base_name, out), len(pairs), tuple(losses), time.perf_counter() - began)


def _on(features: dict, device: str) -> dict:
    """Tokenizer output moved to the model's device."""
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


def bundle_tuned_encoder(
    pairs: Sequence[tuple[str, str]],
    model_dir: Path,
    *,
    base: SentenceEncoder,
    cfg: EncoderTuneConfig = EncoderTuneConfig(),
    device: str = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> tuple[SentenceEncoder, TuneReport | None]:
    """Tune ``base`` into ``model_dir/encoder`` and return the tuned encoder to gather with.

    Under ``torchrun`` (an initialised process group) rank 0 tunes and the other ranks wait for
    it, then all of them use the very same tuned encoder; they get ``None`` as the report.
    """
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    target = Path(model_dir) / ENCODER_DIR
    report = None
    if rank == 0:
        report = tune_encoder(pairs, target, base=base.path, base_name=base.name, cfg=cfg, device=device, progress=progress)
    if distributed:
        dist.barrier()
    name = report.name if report is not None else tuned_name(base.name, target)
    return SentenceEncoder(target, device=device, name=name), report
