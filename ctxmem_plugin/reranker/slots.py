"""The trainable neural context memory: a conversation compressed into M learned slots.

The state is passed in and out explicitly (``write(slots, turns) -> slots``) and never kept in
the module, so one module serves any number of sessions, batched, on any device. Each write
costs the same whatever the length of the history: only the ``(m, d)`` slots are carried over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctxmem_plugin.config import Config, bounded
from ctxmem_plugin.errors import ConfigError

@dataclass(frozen=True)
class SlotConfig(Config):
    """Hyper-parameters of :class:`SlotMemory`; saved next to the weights.

    A chunk of turns reaches the slots by *routing*: each turn goes to the slots it resembles
    (cosine, softmax over the slots, with a penalty on slots that already hold much), and a slot
    accumulates what it wins: ``slot <- decay * slot + gate * won * content``. The slot's norm is
    its accumulated mass, so a slot that wins nothing keeps its content and a topic from turn 50
    is still there at turn 5,000.

    Args:
        dim: width of the turn embeddings and of each slot (384 for all-MiniLM-L6-v2).
        num_slots: number of memory slots M.
        feature_dim: extra per-turn features (speaker, time, position); 0 for none.
        ffn_mult: width multiplier of the feed-forward refinement of the candidate update.
        init_std: standard deviation of the learned initial slots.
        gate_bias: initial bias of the update gate; negative keeps more of the old memory at first.
        focus_rate: with a value above 0 the last slot is the *focus*: a trace of the latest
            turns, ``focus <- (1 - rate) * focus + rate * turn`` for each turn written, with no
            learned parameter. It is what a follow-up ("and what did she say about it?") refers
            to; 0 (the default of an untrained config) means no focus slot.
    """

    dim: int = bounded(384, low=1, high=8192)
    num_slots: int = bounded(16, low=1, high=1024)
    feature_dim: int = bounded(8, low=0, high=64)
    ffn_mult: int = bounded(2, low=1, high=16)
    init_std: float = bounded(0.02, low=0, high=10)
    gate_bias: float = bounded(0.0, low=-100, high=100)
    focus_rate: float = bounded(0.0, low=0, high=1)

    def check(self) -> None:
        if self.focus_rate > 0 and self.num_slots < 2:
            raise ConfigError("a focus slot needs num_slots >= 2 (one or more slots plus the focus)")

    @property
    def has_focus(self) -> bool:
        """Whether the last slot is the focus trace."""
        return self.focus_rate > 0


def focus_trace(focus: Tensor, turns: Tensor, mask: Tensor | None, rate: float) -> Tensor:
    """The focus after the real turns of a chunk, in order: ``f <- (1 - rate) * f + rate * x``.

    No learned parameter on purpose: the same trace is computed when training data is gathered
    (to widen the candidate pool of follow-up queries) and inside the memory at search time.

    Args:
        focus: current focus ``(b, d)`` (zeros for a new session).
        turns: turn embeddings ``(b, t, d)``.
        mask: ``(b, t)`` bool, True for real turns; ``None`` means all real.
        rate: weight of each new turn.

    Returns:
        The new focus ``(b, d)``.
    """
    if mask is None:
        mask = torch.ones(turns.shape[:2], dtype=torch.bool, device=turns.device)
    m = mask.to(turns.dtype)  # (b, t)
    x = turns.masked_fill(~mask.to(torch.bool).unsqueeze(-1), 0.0)  # (b, t, d)
    later = m.flip(-1).cumsum(-1).flip(-1) - m  # (b, t): real turns written after each one
    keep = 1.0 - rate
    weight = rate * torch.pow(torch.full_like(m, keep), later) * m  # (b, t)
    kept = torch.pow(torch.full_like(m[:, 0], keep), m.sum(dim=-1))  # (b,)
    return focus * kept.unsqueeze(-1) + (weight.unsqueeze(-1) * x).sum(dim=1)  # (b, d)


def _eye_linear(dim: int) -> nn.Linear:
    """A bias-free linear layer that starts as the identity.

    Used for the value/output paths so that an untrained memory stores (mixtures of) the turn
    embeddings themselves: slot-to-turn cosine similarity is meaningful before any training.
    """
    layer = nn.Linear(dim, dim, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dim))
    return layer


class SlotMemory(nn.Module):
    """M slots of width d, updated turn by turn: ``memory(t) = f(input(t), memory(t-1))``.

    Write: each new turn is routed to the slots it resembles; a slot's candidate update is the
    mean of the turns it won, and a GRU-style gate scales what it adds to the slot.
    Read: a query attends over the slots (single-head softmax) and the weighted slots come back.
    Contextualise: ``query + residual(read)``, the residual starting at exactly zero, so an
    untrained module returns the query unchanged and training is judged only by what it adds.

    Args:
        config: the hyper-parameters.
    """

    def __init__(self, config: SlotConfig) -> None:
        super().__init__()
        self.config = config
        d, m = config.dim, config.num_slots
        # Distinct random starts break the symmetry between slots so they can specialise. The
        # focus slot, if any, starts at zero (nothing said yet) and is not a parameter.
        self.initial = nn.Parameter(torch.randn(m - int(config.has_focus), d) * config.init_std)

        # Write path.
        self.feature_proj = (
            nn.Linear(config.feature_dim, d, bias=False) if config.feature_dim else None
        )
        self.slot_norm = nn.LayerNorm(d)
        self.turn_norm = nn.LayerNorm(d)
        # Routing starts as plain cosine similarity (identity projections), so an untrained
        # memory already files a turn with the slots holding similar turns.
        self.w_query = _eye_linear(d)
        self.w_key = _eye_linear(d)
        if self.feature_proj is not None:
            # Random projections of the 0/1 speaker features have norm ~4 and would swamp
            # the unit-norm embeddings; start from the embeddings alone.
            nn.init.zeros_(self.feature_proj.weight)
        # Scale 40 and balance 2 were picked on how an untrained memory files one dev conversation
        # (slots spread over its topics, none left empty), not on retrieval scores.
        self.route_log_scale = nn.Parameter(torch.tensor(math.log(40.0)))
        self.route_balance = nn.Parameter(torch.tensor(2.0))
        # Forgetting per turn written; e^-0.0005 per turn keeps ~74% of a slot after 600 turns.
        self.route_log_forget = nn.Parameter(torch.tensor(math.log(5e-4)))
        self.w_value = _eye_linear(d)
        self.w_out = _eye_linear(d)
        ffn_out = nn.Linear(config.ffn_mult * d, d)
        # Zero last layer: the untrained candidate is the attention read-out itself, i.e. lives in
        # embedding space (a random FFN would swamp unit-norm embeddings of width 384).
        nn.init.zeros_(ffn_out.weight)
        nn.init.zeros_(ffn_out.bias)
        self.ffn = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, config.ffn_mult * d), nn.GELU(), ffn_out
        )
        self.gate = nn.Linear(2 * d, d)
        with torch.no_grad():
            self.gate.bias.fill_(config.gate_bias)

        # Read path: identity projections so an untrained query attends to the slots it resembles.
        self.read_norm = nn.LayerNorm(d)
        self.r_query = _eye_linear(d)
        self.r_key = _eye_linear(d)
        # Zero-initialised so that contextualise() starts as the identity, bit-exact.
        self.read_out = nn.Linear(d, d)
        nn.init.zeros_(self.read_out.weight)
        nn.init.zeros_(self.read_out.bias)

    @staticmethod
    def weight_shapes(config: SlotConfig) -> dict[str, tuple[int, ...]]:
        """Name and shape of every weight of a ``SlotMemory(config)``, without building it.

        A model directory's weights are checked against these before anything is allocated
        (:mod:`ctxmem_plugin.reranker.checkpoint`); tests hold them equal to a built module's.
        """
        d, wide = config.dim, config.ffn_mult * config.dim
        shapes: dict[str, tuple[int, ...]] = {"initial": (config.num_slots - int(config.has_focus), d)}
        if config.feature_dim:
            shapes["feature_proj.weight"] = (d, config.feature_dim)
        for norm in ("slot_norm", "turn_norm"):
            shapes.update({f"{norm}.weight": (d,), f"{norm}.bias": (d,)})
        shapes.update({"w_query.weight": (d, d), "w_key.weight": (d, d)})
        shapes.update({"route_log_scale": (), "route_balance": (), "route_log_forget": ()})
        shapes.update({"w_value.weight": (d, d), "w_out.weight": (d, d)})
        shapes.update({"ffn.0.weight": (d,), "ffn.0.bias": (d,), "ffn.1.weight": (wide, d), "ffn.1.bias": (wide,),
                       "ffn.3.weight": (d, wide), "ffn.3.bias": (d,)})
        shapes.update({"gate.weight": (d, 2 * d), "gate.bias": (d,)})
        shapes.update({"read_norm.weight": (d,), "read_norm.bias": (d,), "r_query.weight": (d, d), "r_key.weight": (d, d)})
        shapes.update({"read_out.weight": (d, d), "read_out.bias": (d,)})
        return shapes

    def init_slots(self, batch: int) -> Tensor:
        """The learned initial slots for ``batch`` new sessions, shape ``(batch, m, d)``.

        The result is an expanded view of the parameter; :meth:`write` never modifies its input.
        """
        start = self.initial
        if self.config.has_focus:
            start = torch.cat([start, start.new_zeros(1, self.config.dim)])  # (m, d)
        return start.unsqueeze(0).expand(batch, -1, -1)  # (b, m, d)

    def focus(self, slots: Tensor) -> Tensor | None:
        """The focus slot ``(b, d)`` (a trace of the latest turns), or None without one."""
        return slots[:, -1] if self.config.has_focus else None

    def write(
        self,
        slots: Tensor,
        turns: Tensor,
        mask: Tensor | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        """Fold a chunk of new turns into the slots.

        Call repeatedly to process a conversation in chunks (one turn, one ``add()`` call or one
        session per call); the cost depends on the chunk only, never on the history.

        Args:
            slots: current memory, ``(b, m, d)``.
            turns: new turn embeddings, ``(b, t, d)``.
            mask: ``(b, t)`` bool, True for real turns; masked turns have no effect at all, and a
                row with no real turn gets its slots back unchanged (exactly).
            features: extra per-turn features ``(b, t, f)``; ``None`` means all zeros.

        Returns:
            The new memory, ``(b, m, d)``.
        """
        b, t, d = turns.shape
        cfg = self.config
        if slots.shape != (b, cfg.num_slots, d) or d != cfg.dim:
            raise ValueError(
                f"slots {tuple(slots.shape)} / turns {tuple(turns.shape)} do not match {cfg}"
            )
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=turns.device)
        mask = mask.to(torch.bool)
        # Zero padded turns so that NaN/inf padding cannot leak through 0 * x.
        x = turns.masked_fill(~mask.unsqueeze(-1), 0.0)  # (b, t, d)
        if features is not None and self.feature_proj is None:
            raise ValueError("features given but this SlotMemory has feature_dim=0")
        if self.feature_proj is not None and features is not None:
            feats = features.masked_fill(~mask.unsqueeze(-1), 0.0)  # (b, t, f)
            x = x + self.feature_proj(feats)  # (b, t, d)

        # The focus slot follows its own fixed rule; routing sees the other slots only.
        body = slots[:, :-1] if cfg.has_focus else slots  # (b, m', d)
        new = self._route(body, x, mask)
        if cfg.has_focus:
            focus = focus_trace(slots[:, -1], turns, mask, cfg.focus_rate)  # (b, d)
            new = torch.cat([new, focus.unsqueeze(1)], dim=1)  # (b, m, d)
        # A row with nothing new keeps its slots bit-exactly (a gate of 0 would only be close).
        has_turn = mask.any(dim=1)[:, None, None]  # (b, 1, 1)
        return torch.where(has_turn, new, slots)  # (b, m, d)

    def _route(self, slots: Tensor, x: Tensor, mask: Tensor) -> Tensor:
        """The write: turns go to the slots they resemble; slots accumulate them."""
        s_dir = F.normalize(self.w_query(self.slot_norm(slots)), dim=-1)  # (b, m, d)
        x_dir = F.normalize(self.w_key(self.turn_norm(x)), dim=-1)  # (b, t, d)
        mass = slots.norm(dim=-1)  # (b, m): what a slot holds grows its norm
        # The penalty on full slots keeps one slot from winning everything: a slot that already
        # holds much is only chosen when it is clearly the most similar.
        logits = self.route_log_scale.exp() * (x_dir @ s_dir.transpose(-1, -2))  # (b, t, m)
        logits = logits - self.route_balance * torch.log1p(mass).unsqueeze(1)  # (b, t, m)
        assign = logits.softmax(dim=-1) * mask.unsqueeze(-1).to(x.dtype)  # (b, t, m)
        won = assign.sum(dim=1)  # (b, m)
        content = assign.transpose(1, 2) @ self.w_value(x) / (won.unsqueeze(-1) + 1e-6)  # (b, m, d)
        msg = self.w_out(content)  # (b, m, d): mean of the turns each slot won
        candidate = msg + self.ffn(msg)  # (b, m, d)
        gate = torch.sigmoid(self.gate(torch.cat([self.slot_norm(slots), msg], dim=-1)))  # (b, m, d)
        written = mask.sum(dim=1).to(x.dtype)  # (b,)
        decay = torch.exp(-self.route_log_forget.exp() * written)[:, None, None]  # (b, 1, 1)
        return decay * slots + gate * won.unsqueeze(-1) * candidate  # (b, m, d)

    def read(self, slots: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """Softmax attention of the query over the slots.

        Args:
            slots: memory, ``(b, m, d)``.
            query: ``(b, q, d)`` or ``(b, d)``.

        Returns:
            ``(context, attention)``: the attention-weighted slots ``(b, q, d)`` and the
            attention ``(b, q, m)``; without the ``q`` axis when the query had none.
        """
        squeeze = query.dim() == 2
        qs = query.unsqueeze(1) if squeeze else query  # (b, q, d)
        q = self.r_query(self.read_norm(qs))  # (b, q, d)
        k = self.r_key(self.read_norm(slots))  # (b, m, d)
        # Untrained, a logit is sqrt(d) x the query-slot correlation: about +-1 for unrelated
        # vectors, near 10 for close ones at d=384, so attention starts selective, not one-hot.
        attn = (q @ k.transpose(-1, -2) / math.sqrt(self.config.dim)).softmax(dim=-1)  # (b, q, m)
        # Routed slots carry their mass in their norm; the read returns their directions.
        values = F.normalize(slots, dim=-1)
        context = attn @ values  # (b, q, d)
        if squeeze:
            return context.squeeze(1), attn.squeeze(1)
        return context, attn

    def contextualise(self, slots: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """The query made context-aware: ``query + read_out(read(slots, query))``.

        ``read_out`` starts at zero, so an untrained module returns the query bit-exactly.

        Args:
            slots: memory, ``(b, m, d)``.
            query: ``(b, q, d)`` or ``(b, d)``.

        Returns:
            ``(query', attention)`` with the shapes of :meth:`read`.
        """
        context, attn = self.read(slots, query)
        return query + self.read_out(context), attn  # (b, [q,] d), (b, [q,] m)
