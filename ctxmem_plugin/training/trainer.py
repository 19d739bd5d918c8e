"""Training the ctxmem model: listwise learning-to-rank through the slot memory.

For every step, each training conversation is written into slots (chunk by chunk, with
gradients through the whole recurrence), then a batch of examples is scored from its
candidates' features and the slots of its conversation, and the listwise loss pushes the
relevant turns up. Checkpoints are ``config.json`` + ``model.safetensors`` (+ the optimiser in
``trainer_state.safetensors``); resuming continues the very same loss curve, because each
epoch's shuffle is derived from ``(seed, epoch)`` alone.

Data-parallel on several GPUs or nodes with ``torchrun`` (``DistributedDataParallel``; gloo
on CPU, NCCL on CUDA): every process takes every ``world``-th batch.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ctxmem_plugin.reranker.checkpoint import load_model, save_model
from ctxmem_plugin.config import Config, bounded
from ctxmem_plugin.errors import CheckpointError, InputError
from ctxmem_plugin.reranker.model import CtxMemModel, Member, ModelConfig
from ctxmem_plugin.retrieval.features import FEATURE_NAMES
from ctxmem_plugin.reranker.scorer import ScorerConfig, listwise_loss
from ctxmem_plugin.reranker.runtime import RuntimeSettings
from ctxmem_plugin.reranker.slots import SlotConfig
from ctxmem_plugin.training.data import TRAIN_KINDS, Dataset

TRAINER_STATE = "trainer_state.safetensors"
TRAIN_LOG = "train_log.json"


@dataclass(frozen=True)
class TrainConfig(Config):
    """Hyper-parameters of a training run (saved in ``train_log.json``).

    Attributes:
        epochs, batch_size, lr, weight_decay, seed: the optimisation (AdamW).
        num_slots, hidden: the slot memory's slots and the scorer's MLP width.
        use_slots: False trains the scorer without the slot memory (the ablation).
        write_chunk: turns folded into the slots per write; search uses the same chunks.
        cue_weight: weight of the self-supervised examples' loss where a batch also holds
            labelled questions.
        slot_feature_dim: width of the per-turn features of a slot write.
        max_grad_norm: gradient clipping.
        slot_refresh: gradients flow through the conversations' slot writes on one step in
            this many; the other steps reuse those slots detached (writing every conversation
            dominates a step's cost; the read path and the scorer still learn on every step).
        focus_rate, focus_pool: the focus slot (a trace of the latest turns) and how many turns
            near its probe join a query's candidates; 0 / 0 trains a model without one. They
            must match the gathered data.
        members: members trained alike, member k from seed ``seed + k``, and averaged.

    How the defaults were chosen: docs/experiments/.
    """

    epochs: int = bounded(5, low=1, high=100_000)
    batch_size: int = bounded(128, low=1, high=1_000_000)
    lr: float = bounded(2e-3, low=0, high=10)
    weight_decay: float = bounded(1e-4, low=0, high=10)
    seed: int = 0
    num_slots: int = bounded(16, low=1, high=1024)
    hidden: int = bounded(64, low=1, high=4096)
    use_slots: bool = True
    write_chunk: int = bounded(32, low=1, high=4096)
    cue_weight: float = bounded(0.3, low=0, high=1000)
    slot_feature_dim: int = bounded(8, low=0, high=64)
    max_grad_norm: float = bounded(1.0, low=0, high=1e6)
    slot_refresh: int = bounded(4, low=1, high=1_000_000)
    focus_rate: float = bounded(0.5, low=0, high=1)
    focus_pool: int = bounded(50, low=0, high=100_000)
    members: int = bounded(3, low=1, high=64)


def build_model(dim: int, encoder: str, cfg: TrainConfig, encoder_dir: str | None = None) -> CtxMemModel:
    """A fresh model whose scorer starts as the identity on the hybrid score.

    ``encoder_dir`` names the model directory's own tuned encoder, if it carries one.
    """
    config = ModelConfig(
        slots=SlotConfig(
            dim=dim, num_slots=cfg.num_slots, feature_dim=cfg.slot_feature_dim, focus_rate=cfg.focus_rate,
        ),
        scorer=ScorerConfig(
            num_features=len(FEATURE_NAMES), base_score_index=0, dim=dim, hidden=cfg.hidden, use_slots=cfg.use_slots,
            focus=cfg.use_slots and cfg.focus_rate > 0,
        ),
        encoder=encoder,
        feature_names=FEATURE_NAMES,
        encoder_dir=encoder_dir,
        members=cfg.members,
    )
    members = []
    for k in range(cfg.members):
        # Member k starts as a one-member model with seed ``seed + k`` would.
        torch.manual_seed(cfg.seed + k)
        members.append(Member(config))
    return CtxMemModel(config, members)


class _Batches:
    """Padded tensors of the dataset, built once; batches are index lists into them."""

    def __init__(self, data: Dataset, chunk: int, device: str) -> None:
        self.device = device
        convs = data.conversations
        dim = convs[0].vectors.shape[1]
        fdim = convs[0].features.shape[1]
        n_chunks = max(math.ceil(len(c.vectors) / chunk) for c in convs)
        c = len(convs)
        self.turns = torch.zeros(c, n_chunks * chunk, dim)  # (c, T, d)
        self.turn_feats = torch.zeros(c, n_chunks * chunk, fdim)  # (c, T, f)
        self.turn_mask = torch.zeros(c, n_chunks * chunk, dtype=torch.bool)  # (c, T)
        for i, conv in enumerate(convs):
            t = len(conv.vectors)
            self.turns[i, :t] = torch.from_numpy(conv.vectors)
            self.turn_feats[i, :t] = torch.from_numpy(conv.features)
            self.turn_mask[i, :t] = True
        self.chunk, self.n_chunks = chunk, n_chunks
        self.used_convs = sorted({e.conv for e in data.examples})
        self.examples = data.examples

    def slot_inputs(self) -> tuple[Tensor, Tensor, Tensor]:
        idx = torch.tensor(self.used_convs)
        return self.turns[idx], self.turn_feats[idx], self.turn_mask[idx]

    def batch(self, indices: list[int]) -> dict[str, Tensor]:
        exs = [self.examples[i] for i in indices]
        n = max(len(e.cand) for e in exs)
        b = len(exs)
        f = exs[0].features.shape[1]
        feats = torch.zeros(b, n, f)
        cand = torch.zeros(b, n, dtype=torch.long)
        mask = torch.zeros(b, n, dtype=torch.bool)
        labels = torch.zeros(b, n)
        conv_row = torch.tensor([self.used_convs.index(e.conv) for e in exs])
        query = torch.from_numpy(np.stack([e.query for e in exs]))
        focus = torch.from_numpy(np.stack([e.focus for e in exs]))
        weight = torch.tensor([1.0 if e.kind == "question" else 0.0 for e in exs])
        for j, e in enumerate(exs):
            k = len(e.cand)
            feats[j, :k] = torch.from_numpy(e.features)
            cand[j, :k] = torch.from_numpy(e.cand)
            mask[j, :k] = True
            labels[j, :k] = torch.from_numpy(e.labels.astype(np.float32))
        return {"features": feats, "cand": cand, "mask": mask, "labels": labels, "conv_row": conv_row, "query": query, "focus": focus, "is_question": weight}


class _LossModule(nn.Module):
    """Forward = the loss of one batch, so that ``DistributedDataParallel`` can wrap it."""

    def __init__(self, model: CtxMemModel | Member, chunk: int, cue_weight: float) -> None:
        super().__init__()
        self.model = model
        self.chunk = chunk
        self.cue_weight = cue_weight
        self.cached: Tensor | None = None

    def conversation_slots(self, turns: Tensor, feats: Tensor, mask: Tensor) -> Tensor:
        """Write every conversation into slots, chunk by chunk (all conversations batched)."""
        c = turns.shape[0]
        slots = self.model.init_slots(c)  # (c, m, d)
        for start in range(0, turns.shape[1], self.chunk):
            sl = slice(start, start + self.chunk)
            slots = self.model.write(slots, turns[:, sl], mask[:, sl], feats[:, sl] if feats.shape[-1] else None)
        return slots

    def forward(
        self, turns: Tensor, turn_feats: Tensor, turn_mask: Tensor, batch: dict[str, Tensor], refresh: bool = True
    ) -> Tensor:
        cand_vecs = turns[batch["conv_row"].unsqueeze(1), batch["cand"]]  # (b, n, d)
        if self.model.config.scorer.use_slots:
            if refresh or self.cached is None:
                all_slots = self.conversation_slots(turns, turn_feats, turn_mask)  # (c, m, d)
                self.cached = all_slots.detach()
            else:
                all_slots = self.cached
            slots = all_slots[batch["conv_row"]]  # (b, m, d)
        else:
            slots = torch.zeros(turns.shape[0], 1, turns.shape[-1])[batch["conv_row"]]
        scores = self.model(batch["features"], batch["mask"], batch["query"], cand_vecs, slots, batch["focus"])  # (b, n)
        q = batch["is_question"] > 0
        # Padded scores are -inf: a zero built from them would be NaN.
        zero = scores.masked_fill(~batch["mask"], 0.0).sum() * 0.0
        loss_q = listwise_loss(scores[q], batch["labels"][q], batch["mask"][q]) if q.any() else zero
        loss_c = listwise_loss(scores[~q], batch["labels"][~q], batch["mask"][~q]) if (~q).any() else zero
        weight_c = self.cue_weight if q.any() else 1.0
        return loss_q + weight_c * loss_c


def init_distributed(device: str) -> tuple[int, int, str]:
    """``(rank, world, device)``; initialises the process group when started by ``torchrun``.

    The backend follows the training device, not the machine: NCCL for CUDA tensors, gloo for
    CPU ones (CPU training on a machine that has a GPU needs gloo too). On CUDA each process
    takes the GPU of its ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    cuda = device.startswith("cuda")
    if cuda and device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _save_trainer_state(directory: Path, optimizer: torch.optim.Optimizer, epoch: int) -> None:
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    for pid, slots in state["state"].items():
        for name, value in slots.items():
            tensors[f"{pid}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    meta = {"epoch": str(epoch), "param_groups": json.dumps(state["param_groups"])}
    tmp = directory / (TRAINER_STATE + ".tmp")
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)
    os.replace(tmp, directory / TRAINER_STATE)


def _load_trainer_state(directory: Path, optimizer: torch.optim.Optimizer) -> None:
    from safetensors import safe_open

    path = directory / TRAINER_STATE
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    tensors = load_file(str(path))
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})


@contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic kernels while training, then the caller's setting back.

    Without this, two runs with the same seed differ after one epoch on CPU (the accumulating
    index backward of the candidate gather is not deterministic with several threads), and a
    leave-one-out fold moved by 0.016 R@10 between two identical runs. Same seed and thread
    count now give the same weights bit for bit. ``warn_only``: an op without a deterministic
    kernel (some CUDA ones) warns rather than stopping the run.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def train(
    data: Dataset,
    cfg: TrainConfig,
    out: Path | None = None,
    *,
    resume: bool = False,
    device: str = "cpu",
    progress: Callable[[int, float], None] | None = None,
    extra_log: dict[str, Any] | None = None,
    encoder_dir: str | None = None,
) -> tuple[CtxMemModel, list[dict[str, Any]]]:
    """Train a model on ``data``; with ``out``, checkpoint there after every epoch.

    Args:
        data: examples and conversation tensors (:func:`ctxmem_plugin.training_data.gather`).
        cfg: hyper-parameters.
        out: model directory to write (``config.json``, ``model.safetensors``,
            ``trainer_state.safetensors``, ``train_log.json``).
        resume: continue from the checkpoint in ``out``.
        device: ``cpu`` or ``cuda``.
        progress: called with ``(examples done, running loss)``.
        extra_log: more entries for ``train_log.json``.
        encoder_dir: ``"encoder"`` when ``out`` holds the tuned encoder ``data`` was gathered
            with (:mod:`ctxmem_plugin.training.encoder_tuning`); recorded in the model's config.

    Returns:
        The model and the per-epoch log.
    """
    if (data.focus_rate, data.focus_pool) != (cfg.focus_rate, cfg.focus_pool if cfg.focus_rate > 0 else 0):
        raise InputError(
            f"the data was gathered with focus_rate={data.focus_rate}, focus_pool={data.focus_pool}; "
            f"the training config asks for {cfg.focus_rate}, {cfg.focus_pool}: gather again with the same settings"
        )
    if not any(e.kind in TRAIN_KINDS for e in data.examples):
        raise InputError("no training examples: the logs hold no turns with enough words and no labelled questions")
    with _deterministic():
        return _train(
            data, cfg, out, resume=resume, device=device, progress=progress, extra_log=extra_log, encoder_dir=encoder_dir
        )


def _train(
    data: Dataset,
    cfg: TrainConfig,
    out: Path | None,
    *,
    resume: bool,
    device: str,
    progress: Callable[[int, float], None] | None,
    extra_log: dict[str, Any] | None,
    encoder_dir: str | None,
) -> tuple[CtxMemModel, list[dict[str, Any]]]:
    rank, world, device = init_distributed(device)
    dim = data.conversations[0].vectors.shape[1]
    model = build_model(dim, data.encoder, cfg, encoder_dir)
    log: list[dict[str, Any]] = []
    start_epoch = 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if resume:
        if out is None or not (out / TRAIN_LOG).is_file():
            raise CheckpointError(f"nothing to resume in {out}: no {TRAIN_LOG}")
        model = load_model(out)
        if tuple(model.config.feature_names) != FEATURE_NAMES:
            # Its scorer reads other columns than this version gathers: the loss curve cannot continue.
            raise CheckpointError(
                f"{out}: the model was trained on features {list(model.config.feature_names)}, this version gathers "
                f"{list(FEATURE_NAMES)}; --resume needs the same (train a new model, or keep using this one as it is)"
            )
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        _load_trainer_state(out, optimizer)
        saved = json.loads((out / TRAIN_LOG).read_text())
        log = saved["epochs"]
        start_epoch = len(log)
        # What the first run recorded beside the epochs (encoder tuning, fusion fit) stays.
        earlier = {k: v for k, v in saved.items() if k not in ("config", "data", "epochs")}
        extra_log = {**earlier, **(extra_log or {})}
    model.to(device).train()
    modules: list[nn.Module] = []
    for member in model.members:
        module: nn.Module = _LossModule(member, cfg.write_chunk, cfg.cue_weight)
        if world > 1:
            # Steps that reuse detached slots leave the write path unused: DDP must be told.
            module = nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)
        modules.append(module)
    batches = _Batches(data, cfg.write_chunk, device)
    slot_inputs = tuple(t.to(device) for t in batches.slot_inputs())
    trainable = np.array([i for i, e in enumerate(data.examples) if e.kind in TRAIN_KINDS])
    n = len(trainable)
    running = [0.0, 0]  # loss x examples and examples, over the members so far this epoch

    def report(examples: int, loss: float) -> None:
        running[0] += loss * examples
        running[1] += examples
        if progress is not None:
            progress(examples, running[0] / max(running[1], 1))

    for epoch in range(start_epoch, cfg.epochs):
        began = time.perf_counter()
        member_losses = []
        running[:] = [0.0, 0]
        for k, (member, module) in enumerate(zip(model.members, modules)):
            # Each member is trained as a one-member model with seed ``seed + k`` would be: its own
            # batch order, its own gradient clipping. The optimiser is shared, but AdamW updates
            # each tensor from its own gradient and state, and skips tensors without a gradient.
            order = trainable[np.random.default_rng([cfg.seed + k, epoch]).permutation(n)]
            member_losses.append(
                _member_epoch(module, member, optimizer, batches, slot_inputs, order, cfg, rank, world, device, report)
            )
        entry: dict[str, Any] = {"epoch": epoch + 1, "loss": float(np.mean(member_losses)), "seconds": time.perf_counter() - began}
        if len(member_losses) > 1:
            entry["member_losses"] = member_losses
        log.append(entry)
        if out is not None and rank == 0:
            write_checkpoint(model, out, optimizer, cfg, data, log, extra_log)
    model.eval()
    return model, log


def _member_epoch(
    module: nn.Module,
    member: Member,
    optimizer: torch.optim.Optimizer,
    batches: _Batches,
    slot_inputs: tuple[Tensor, ...],
    order: np.ndarray,
    cfg: TrainConfig,
    rank: int,
    world: int,
    device: str,
    report: Callable[[int, float], None],
) -> float:
    """One epoch of one member over the examples in ``order``; its mean loss over all processes.

    ``report(examples, loss)`` is called after every step.
    """
    steps = [order[i : i + cfg.batch_size].tolist() for i in range(0, len(order), cfg.batch_size)]
    # Every process runs the same number of steps (DDP all-reduces in each backward); like
    # DistributedSampler, the last round wraps around to the first batches when uneven.
    rounds = math.ceil(len(steps) / world)
    mine = [steps[(r * world + rank) % len(steps)] for r in range(rounds)]
    total, count = 0.0, 0
    for r, idx in enumerate(mine):
        batch = {key: v.to(device) for key, v in batches.batch(idx).items()}
        loss = module(*slot_inputs, batch, r % cfg.slot_refresh == 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(member.parameters(), cfg.max_grad_norm)
        optimizer.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
        report(len(idx), float(loss.detach()))
    if world > 1:
        sums = torch.tensor([total, float(count)])
        dist.all_reduce(sums)
        total, count = float(sums[0]), int(sums[1])
    return total / max(count, 1)


def write_checkpoint(
    model: CtxMemModel,
    out: Path,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    data: Dataset,
    log: list[dict[str, Any]],
    extra_log: dict[str, Any] | None = None,
) -> None:
    """Weights + config, optimiser state, then the log (the log last: it marks the epoch done)."""
    out.mkdir(parents=True, exist_ok=True)
    settings = RuntimeSettings(pool=data.pool, write_chunk=cfg.write_chunk, retrieval=data.retrieval, focus_pool=data.focus_pool)
    save_model(model, out, extra={"runtime": settings.to_dict(), "train": asdict(cfg)})
    _save_trainer_state(out, optimizer, len(log))
    document = {"config": asdict(cfg), "data": data.describe(), "epochs": log, **(extra_log or {})}
    tmp = out / (TRAIN_LOG + ".tmp")
    tmp.write_text(json.dumps(document, indent=1))
    os.replace(tmp, out / TRAIN_LOG)


def resume_config(out: Path, cfg: TrainConfig) -> TrainConfig:
    """The saved run's hyper-parameters, with ``epochs`` taken from ``cfg`` (to train longer)."""
    saved = dict(json.loads((out / TRAIN_LOG).read_text())["config"])
    # A run saved before the focus slot existed was trained without one: resuming it must not
    # switch the focus on (its weights have no focus inputs).
    saved.setdefault("focus_rate", 0.0)
    saved.setdefault("focus_pool", 0)
    saved.setdefault("members", 1)  # saved before models had members
    for key, only in _RETIRED.items():  # settings of experiments that were not kept
        if key in saved and saved.pop(key) != only:
            raise CheckpointError(f"{out}: the run was trained with {key}, which this version no longer has; train a new model")
    return replace(TrainConfig.from_dict(saved), epochs=cfg.epochs)


_RETIRED = {"slot_write_rule": "route", "slot_gate": False, "ignore_evidence_neighbours": False}
"""Settings earlier runs saved, with the one value this version still trains with."""


@torch.no_grad()
def score_examples(model: CtxMemModel, data: Dataset, indices: list[int], chunk: int, batch_size: int = 64) -> list[np.ndarray]:
    """Model scores for the candidates of the given examples (for evaluation)."""
    model.eval()
    batches = _Batches(data, chunk, "cpu")
    module = _LossModule(model, chunk, 0.0)
    turns, feats, mask = batches.slot_inputs()
    slots_all = module.conversation_slots(turns, feats, mask) if model.config.scorer.use_slots else None
    out: list[np.ndarray] = []
    for s in range(0, len(indices), batch_size):
        idx = indices[s : s + batch_size]
        b = batches.batch(idx)
        cand_vecs = turns[b["conv_row"].unsqueeze(1), b["cand"]]
        slots = slots_all[b["conv_row"]] if slots_all is not None else torch.zeros(len(idx), 1, turns.shape[-1])
        scores = model(b["features"], b["mask"], b["query"], cand_vecs, slots, b["focus"])
        for j, i in enumerate(idx):
            out.append(scores[j, : len(data.examples[i].cand)].double().numpy())
    return out
