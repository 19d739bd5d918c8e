"""Fine-tuning the embedding model on labelled evidence: (question, evidence turn) pairs.

The trained scorer re-ranks candidates whose dense scores come from the encoder, so a frozen
encoder caps both the candidate pool and the dense signal. Where the training logs carry
evidence labels (LoCoMo-format files), :func:`tune_encoder` fine-tunes the encoder with a
contrastive loss: each question must pick its evidence turn among the batch's turns.

The negatives have to be as hard as the ones search meets. Search ranks the turns of one
conversation, where every turn shares the speakers' names and topics; a batch drawn across
conversations mostly teaches which conversation a question belongs to. So a batch is drawn
from one conversation, and each question also brings a *hard negative*: one of the turns of its
own conversation that the base encoder ranks highest without being evidence.

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
from itertools import islice
from pathlib import Path

import numpy as np

from ctxmem_plugin.config import Config, bounded
from ctxmem_plugin.encoders import SentenceEncoder, TextEncoder
from ctxmem_plugin.errors import InputError
from ctxmem_plugin.retrieval.text import embed_text
from ctxmem_plugin.training.data import Conversation
from ctxmem_plugin.encoders.tuned import ENCODER_DIR, tuned_name


@dataclass(frozen=True)
class EncoderTuneConfig(Config):
    """Hyper-parameters of encoder fine-tuning (saved in ``train_log.json``).

    Attributes:
        epochs: passes over the (question, evidence turn) pairs.
        lr: learning rate (AdamW, constant).
        batch_size: pairs per batch; a batch is drawn from one conversation, whose other turns
            are the in-batch negatives.
        scale: inverse temperature of the in-batch softmax over cosine similarities.
        seed: batch order and hard-negative draws.
        hard_negative_pool: a question's hard negatives are drawn from the N non-evidence turns
            of its conversation that the base encoder ranks highest; 0: none.
        hard_negatives: how many hard negatives a question brings.

    How the defaults were chosen: docs/experiments/ (encoder tuning, hard negatives, epochs).
    """

    epochs: int = bounded(2, low=1, high=1000)
    lr: float = bounded(2e-5, low=0, high=1)
    batch_size: int = bounded(32, low=1, high=65536)
    scale: float = bounded(20.0, low=0, high=1000)
    seed: int = 0
    hard_negative_pool: int = bounded(10, low=0, high=100000)
    hard_negatives: int = bounded(1, low=1, high=1000)


@dataclass(frozen=True)
class TunePair:
    """One evidence turn of one labelled question, as tuning sees it.

    Attributes:
        question: the question as a search encodes it.
        turn: the evidence turn's text as a memory embeds it (:func:`embed_text`).
        group: the conversation it comes from (batches are drawn from one group).
        evidence: the texts of all the question's evidence turns: never a negative for it.
        negatives: hard negatives, non-evidence turns of the same conversation, if mined.
    """

    question: str
    turn: str
    group: int = 0
    evidence: frozenset[str] = frozenset()
    negatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class TuneReport:
    """What a tuning run did."""

    name: str
    pairs: int
    losses: tuple[float, ...]
    seconds: float
    negatives: int = 0  # pairs that brought a hard negative


def evidence_pairs(
    conversations: Sequence[Conversation],
    *,
    miner: TextEncoder | None = None,
    pool: int = EncoderTuneConfig.hard_negative_pool,
    seed: int = 0,
    per_question: int = EncoderTuneConfig.hard_negatives,
) -> list[TunePair]:
    """A :class:`TunePair` for every evidence turn of every labelled question.

    The turn is the text its stored vector is computed from (:func:`embed_text`), the question
    the text a search encodes. With a ``miner`` (the encoder tuning starts from), each question
    gets ``per_question`` hard negatives, drawn at random (seeded, without replacement) among
    the ``pool`` turns of its conversation that the miner ranks highest for it without being
    evidence. The very top ones are not taken every time: evidence labels are incomplete, and
    the best-ranked non-evidence turn is the likeliest to be an unlabelled answer.
    """
    rng = random.Random(seed)
    pairs = []
    for group, conv in enumerate(conversations):
        texts = [embed_text(st.turn) for st in conv.turns]
        sims = None
        if miner is not None and pool > 0 and conv.questions:
            sims = miner.encode([q for q, _ in conv.questions]) @ miner.encode(texts).T  # (questions, turns)
        for j, (q, evidence) in enumerate(conv.questions):
            gold = frozenset(texts[p] for p in evidence)
            negatives: tuple[str, ...] = ()
            if sims is not None:
                ranked = (texts[int(i)] for i in np.argsort(-sims[j], kind="stable"))
                top = list(islice((t for t in ranked if t not in gold), pool))
                # One draw of sample() consumes the generator as choice() did, so one negative a
                # question mines exactly what it did before the count was configurable.
                negatives = tuple(rng.sample(top, min(per_question, len(top))))
            pairs += [TunePair(q, texts[p], group, gold, negatives) for p in sorted(evidence)]
    return pairs


def tuning_batches(pairs: Sequence[TunePair], cfg: EncoderTuneConfig, rng: random.Random) -> list[list[TunePair]]:
    """One epoch's batches: full batches from one conversation, then its leftovers pooled.

    A short last batch is left out: it would have too few negatives.
    """
    size = min(cfg.batch_size, len(pairs))
    groups: dict[int, list[TunePair]] = {}
    for p in pairs:
        groups.setdefault(p.group, []).append(p)
    batches, rest = [], []
    for g in sorted(groups):
        members = groups[g]
        rng.shuffle(members)
        full = len(members) - len(members) % size
        batches += [members[i : i + size] for i in range(0, full, size)]
        rest += members[full:]
    rng.shuffle(rest)
    batches += [rest[i : i + size] for i in range(0, len(rest) - size + 1, size)]
    rng.shuffle(batches)
    return batches


def pairs_per_epoch(pairs: Sequence[TunePair], cfg: EncoderTuneConfig) -> int:
    """How many pairs an epoch of :func:`tuning_batches` uses (the rest fall in a short batch)."""
    return sum(len(b) for b in tuning_batches(pairs, cfg, random.Random(0)))


def batch_columns(batch: Sequence[TunePair]) -> list[str]:
    """The turns a batch's questions choose among: the batch's evidence turns, then its hard negatives."""
    return [p.turn for p in batch] + [n for p in batch for n in p.negatives]


def false_negatives(batch: Sequence[TunePair], columns: Sequence[str]) -> np.ndarray:
    """``(b, c)`` bool: columns to mask out of each row's softmax.

    Row ``i``'s positive is column ``i``. Any other column that is evidence of row ``i``'s
    question (the same turn under another question, another evidence turn of a multi-turn
    answer, a hard negative mined for another question) would teach it to push away a right
    answer, so it is not counted as a negative.
    """
    false = np.array([[text in p.evidence or text == p.turn for text in columns] for p in batch], dtype=bool)
    false[np.arange(len(batch)), np.arange(len(batch))] = False
    return false


def tune_encoder(
    pairs: Sequence[TunePair],
    out: Path,
    *,
    base: Path,
    base_name: str,
    cfg: EncoderTuneConfig = EncoderTuneConfig(),
    device: str = "cpu",
    progress: Callable[[int, float], None] | None = None,
    on_epoch: Callable[[int, SentenceEncoder], None] | None = None,
) -> TuneReport:
    """Fine-tune the sentence-transformers model in ``base`` and save it as ``out``.

    In-batch negatives: each question's positive is its own evidence turn; the batch's other
    turns and every hard negative in the batch are its negatives, except those that are
    evidence of the same question (false negatives). ``out`` appears whole or not at all: the
    model is saved beside it and moved into place.

    Args:
        pairs: from :func:`evidence_pairs`.
        out: the directory to write; replaced if it exists.
        base: the local sentence-transformers directory to start from.
        base_name: the base encoder's name, the prefix of the tuned one's.
        cfg: hyper-parameters.
        device: ``cpu`` or ``cuda``.
        progress: called with ``(pairs done, running mean loss)`` after every step.
        on_epoch: called with ``(epochs done, encoder)`` after every epoch, the encoder over the
            model being tuned, in eval mode, to measure it between epochs: the learning rate is
            constant, so the model after epoch k is the model an ``epochs=k`` run saves.
            Encoding with it consumes no random numbers, so it leaves the run unchanged.

    Returns:
        The tuned encoder's name, the pairs used, the mean loss of each epoch, the time and
        how many pairs had a hard negative.
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
    losses = []
    for _ in range(cfg.epochs):
        model.train()
        total, seen = 0.0, 0
        for batch in tuning_batches(pairs, cfg, rng):
            columns = batch_columns(batch)
            q = F.normalize(model(_on(prepare([p.question for p in batch]), device))["sentence_embedding"], dim=-1)  # (b, d)
            t = F.normalize(model(_on(prepare(columns), device))["sentence_embedding"], dim=-1)  # (c, d)
            false = torch.from_numpy(false_negatives(batch, columns)).to(q.device)
            logits = (q @ t.T * cfg.scale).masked_fill(false, float("-inf"))  # (b, c)
            loss = F.cross_entropy(logits, torch.arange(len(batch), device=q.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, seen = total + float(loss.detach()) * len(batch), seen + len(batch)
            if progress is not None:
                progress(len(batch), total / seen)
        losses.append(total / max(seen, 1))
        if on_epoch is not None:
            model.eval()
            on_epoch(len(losses), SentenceEncoder.over(model, base, device=device, name=f"{base_name}+epoch-{len(losses)}"))
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
    negatives = sum(bool(p.negatives) for p in pairs)
    return TuneReport(tuned_name(base_name, out), len(pairs), tuple(losses), time.perf_counter() - began, negatives)


def _on(features: dict, device: str) -> dict:
    """Tokenizer output moved to the model's device."""
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}


def bundle_tuned_encoder(
    conversations: Sequence[Conversation],
    model_dir: Path,
    *,
    base: SentenceEncoder,
    cfg: EncoderTuneConfig = EncoderTuneConfig(),
    device: str = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> tuple[SentenceEncoder, TuneReport | None]:
    """Tune ``base`` on the conversations' evidence into ``model_dir/encoder``; return it.

    ``base`` also mines the hard negatives (``cfg.hard_negative_pool``). Under ``torchrun``
    (an initialised process group) rank 0 mines and tunes while the other ranks wait for it,
    then all of them use the very same tuned encoder; they get ``None`` as the report.
    """
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    target = Path(model_dir) / ENCODER_DIR
    report = None
    if rank == 0:
        pairs = evidence_pairs(conversations, miner=base, pool=cfg.hard_negative_pool, seed=cfg.seed,
                               per_question=cfg.hard_negatives)
        report = tune_encoder(pairs, target, base=base.path, base_name=base.name, cfg=cfg, device=device, progress=progress)
    if distributed:
        dist.barrier()
    name = report.name if report is not None else tuned_name(base.name, target)
    return SentenceEncoder(target, device=device, name=name), report
