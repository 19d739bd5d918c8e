"""The re-ranking head: how the slot memory helps retrieval.

Upstream retrieval (FAISS + BM25 + neighbours) yields a candidate set per query with cheap
per-candidate features, one of which is the fused upstream score. The scorer adds a learned
residual to that score, computed from the features and, unless ablated, from how each candidate
relates to the query's context in the slot memory. The residual starts at exactly zero, so an
untrained scorer returns the upstream score and changes no ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctxmem_plugin.config import Config, bounded
from ctxmem_plugin.errors import ConfigError

SLOT_FEATURE_NAMES: tuple[str, ...] = (
    "cos_query",  # cos(contextualised query, candidate)
    "slot_focus",  # candidate-slot similarity weighted by the query's slot attention
    "slot_max",  # best similarity of the candidate to any slot: is it in memory at all?
    "slot_overlap",  # overlap of the candidate's and the query's distributions over slots
    "bilinear",  # learned low-rank bilinear form of (contextualised query, candidate)
)
"""The per-candidate features derived from the slots, in the order the scorer uses them."""

FOCUS_FEATURE_NAMES: tuple[str, ...] = (
    "focus_cand",  # cos(candidate, focus): does the turn match what was just being discussed?
    "focus_query",  # cos(contextualised query, focus): how much the query itself says already
    "focus_probe",  # cos(candidate, query + focus): the probe that widened the candidate pool
)
"""Features from the focus slot (the latest turns), after the slot features, with ``focus=True``."""


@dataclass(frozen=True)
class ScorerConfig(Config):
    """Hyper-parameters of :class:`CtxMemScorer`; saved next to the weights.

    Args:
        num_features: F, the number of upstream per-candidate features.
        base_score_index: the feature column holding the upstream fused score; an untrained
            scorer returns exactly this column.
        dim: embedding width of queries, candidates and slots.
        hidden: width of the residual MLP.
        depth: number of hidden layers of the residual MLP.
        bilinear_rank: rank of the learned bilinear query-candidate term.
        use_slots: False is the ablation: the same scorer on the upstream features alone.
        overlap_temperature: temperature of the candidate's softmax over slots (``slot_overlap``).
        focus: also use :data:`FOCUS_FEATURE_NAMES` (needs a slot memory with a focus slot).
    """

    num_features: int = bounded(8, low=1, high=1024)
    base_score_index: int = bounded(0, low=0, high=1023)
    dim: int = bounded(384, low=1, high=8192)
    hidden: int = bounded(64, low=1, high=4096)
    depth: int = bounded(2, low=1, high=16)
    bilinear_rank: int = bounded(32, low=1, high=1024)
    use_slots: bool = True
    overlap_temperature: float = bounded(0.1, low=1e-6, high=1000)
    focus: bool = False

    def check(self) -> None:
        if self.base_score_index >= self.num_features:
            raise ConfigError(f"base_score_index must be in [0, {self.num_features}), got {self.base_score_index}")
        if self.focus and not self.use_slots:
            raise ConfigError("focus=True needs use_slots=True (the focus is a slot)")


def _symlog(x: Tensor) -> Tensor:
    # BM25 scores and ranks run into the tens or hundreds; compress them without losing sign.
    return torch.sign(x) * torch.log1p(x.abs())


def _list_standardise(x: Tensor, mask: Tensor) -> Tensor:
    """Z-score each column across the valid candidates of its row.

    Scores are only comparable within one candidate list (BM25 scale depends on the query), so
    the scorer sees each value relative to its list as well as in absolute terms.

    Args:
        x: ``(b, n, k)``, already zero at masked candidates.
        mask: ``(b, n)`` bool, True for real candidates.
    """
    w = mask.unsqueeze(-1).to(x.dtype)  # (b, n, 1)
    count = w.sum(dim=1, keepdim=True).clamp_min(1.0)  # (b, 1, 1)
    mean = (x * w).sum(dim=1, keepdim=True) / count  # (b, 1, k)
    var = (((x - mean) * w) ** 2).sum(dim=1, keepdim=True) / count  # (b, 1, k)
    return (x - mean) * w / torch.sqrt(var + 1e-6)  # (b, n, k)


class CtxMemScorer(nn.Module):
    """Scores candidates as ``base_score * scale + mlp(features ++ slot_features)``.

    The MLP's last layer and ``log(scale)`` start at zero, so an untrained scorer returns the
    ``base_score_index`` column exactly. With ``use_slots=False`` the slot features are left out
    and the scorer needs only ``features`` and ``mask`` (the no-slots ablation).

    Args:
        config: the hyper-parameters.
    """

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__()
        self.config = config
        n_slot = len(SLOT_FEATURE_NAMES) if config.use_slots else 0
        n_slot += len(FOCUS_FEATURE_NAMES) if config.focus else 0
        in_dim = 2 * (config.num_features + n_slot)  # absolute and list-standardised versions

        if config.use_slots:
            r = config.bilinear_rank
            self.bil_query = nn.Parameter(torch.randn(r, config.dim) / math.sqrt(config.dim))
            self.bil_cand = nn.Parameter(torch.randn(r, config.dim) / math.sqrt(config.dim))

        # Zero output layer: the residual adds nothing until trained, so no ranking changes at init.
        self.mlp = _zero_out_mlp(in_dim, config.hidden, config.depth)
        # A learnable temperature on the base score lets the listwise loss sharpen or flatten it;
        # exp(0) == 1 exactly, so the untrained output is still the base column bit for bit.
        self.log_base_scale = nn.Parameter(torch.zeros(()))

    @staticmethod
    def weight_shapes(config: ScorerConfig) -> dict[str, tuple[int, ...]]:
        """Name and shape of every weight of a ``CtxMemScorer(config)``, without building it
        (see :meth:`SlotMemory.weight_shapes <ctxmem_plugin.reranker.slots.SlotMemory.weight_shapes>`)."""
        n_slot = (len(SLOT_FEATURE_NAMES) if config.use_slots else 0) + (len(FOCUS_FEATURE_NAMES) if config.focus else 0)
        width = 2 * (config.num_features + n_slot)
        shapes: dict[str, tuple[int, ...]] = {}
        if config.use_slots:
            shapes.update({"bil_query": (config.bilinear_rank, config.dim), "bil_cand": (config.bilinear_rank, config.dim)})
        for i in range(config.depth):
            shapes.update({f"mlp.{2 * i}.weight": (config.hidden, width), f"mlp.{2 * i}.bias": (config.hidden,)})
            width = config.hidden
        shapes.update({f"mlp.{2 * config.depth}.weight": (1, width), f"mlp.{2 * config.depth}.bias": (1,)})
        shapes["log_base_scale"] = ()
        return shapes

    def slot_features(
        self, query: Tensor, attention: Tensor, cand: Tensor, slots: Tensor, focus: Tensor | None = None
    ) -> Tensor:
        """The per-candidate slot features named in :data:`SLOT_FEATURE_NAMES`.

        Args:
            query: contextualised query ``(b, d)`` (``SlotMemory.contextualise``).
            attention: the query's attention over the slots ``(b, m)``.
            cand: candidate turn embeddings ``(b, n, d)``.
            slots: the namespace's memory ``(b, m, d)``.
            focus: the focus ``(b, d)`` the query follows up on; needed with ``config.focus``.

        Returns:
            ``(b, n, 5)``, or ``(b, n, 8)`` with the focus features.
        """
        qn = F.normalize(query, dim=-1)  # (b, d)
        cn = F.normalize(cand, dim=-1)  # (b, n, d)
        sn = F.normalize(slots, dim=-1)  # (b, m, d)
        cos_query = (cn @ qn.unsqueeze(-1)).squeeze(-1)  # (b, n)
        sim = cn @ sn.transpose(-1, -2)  # (b, n, m)
        focus_w = (sim * attention.unsqueeze(1)).sum(dim=-1)  # (b, n)
        best = sim.amax(dim=-1)  # (b, n)
        cand_attn = (sim / self.config.overlap_temperature).softmax(dim=-1)  # (b, n, m)
        overlap = (cand_attn * attention.unsqueeze(1)).sum(dim=-1)  # (b, n)
        bq = query @ self.bil_query.t()  # (b, r)
        bc = cand @ self.bil_cand.t()  # (b, n, r)
        bilinear = (bc @ bq.unsqueeze(-1)).squeeze(-1) / math.sqrt(
            self.config.bilinear_rank
        )  # (b, n)
        cols = [cos_query, focus_w, best, overlap, bilinear]
        if self.config.focus:
            if focus is None:
                raise ValueError("focus=True needs the focus vector")
            fn = F.normalize(focus, dim=-1)  # (b, d); a zero focus (nothing said) stays zero
            probe = F.normalize(qn + fn, dim=-1)  # (b, d)
            cols += [
                (cn @ fn.unsqueeze(-1)).squeeze(-1),  # (b, n)
                (qn * fn).sum(dim=-1, keepdim=True).expand_as(cos_query),  # (b, n)
                (cn @ probe.unsqueeze(-1)).squeeze(-1),  # (b, n)
            ]
        return torch.stack(cols, dim=-1)  # (b, n, 5 or 8)

    def forward(
        self,
        features: Tensor,
        mask: Tensor | None = None,
        *,
        query: Tensor | None = None,
        attention: Tensor | None = None,
        cand: Tensor | None = None,
        slots: Tensor | None = None,
        focus: Tensor | None = None,
    ) -> Tensor:
        """Score a batch of candidate lists.

        Args:
            features: upstream per-candidate features ``(b, n, F)``.
            mask: ``(b, n)`` bool, True for real candidates; ``None`` means all real.
            query: contextualised query ``(b, d)``; needed when ``use_slots``.
            attention: the query's slot attention ``(b, m)``; needed when ``use_slots``.
            cand: candidate embeddings ``(b, n, d)``; needed when ``use_slots``.
            slots: memory ``(b, m, d)``; needed when ``use_slots``.
            focus: the focus ``(b, d)``; needed when ``config.focus``.

        Returns:
            Scores ``(b, n)``; ``-inf`` at masked candidates.
        """
        b, n, f = features.shape
        if f != self.config.num_features:
            raise ValueError(f"expected {self.config.num_features} features, got {f}")
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=features.device)
        mask = mask.to(torch.bool)
        valid = mask.unsqueeze(-1)  # (b, n, 1)
        # Padding may hold anything (NaN included); zero it before any cross-candidate statistic.
        feats = features.masked_fill(~valid, 0.0)  # (b, n, F)
        base = feats[..., self.config.base_score_index]  # (b, n)

        parts = [feats]
        if self.config.use_slots:
            if query is None or attention is None or cand is None or slots is None:
                raise ValueError("use_slots=True needs query, attention, cand and slots")
            cand = cand.masked_fill(~valid, 0.0)  # (b, n, d)
            parts.append(self.slot_features(query, attention, cand, slots, focus))  # (b, n, 5 or 8)
        raw = torch.cat(parts, dim=-1)  # (b, n, k)
        x = torch.cat([_symlog(raw), _list_standardise(raw, mask)], dim=-1)  # (b, n, 2k)

        residual = self.mlp(x).squeeze(-1)  # (b, n)
        score = base * self.log_base_scale.exp() + residual  # (b, n)
        return score.masked_fill(~mask, float("-inf"))


def _zero_out_mlp(in_dim: int, hidden: int, depth: int) -> nn.Sequential:
    """``depth`` GELU layers of width ``hidden``, then one output whose weights start at zero."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.GELU()]
        width = hidden
    last = nn.Linear(width, 1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


def listwise_loss(scores: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
    """Softmax cross-entropy with the target spread over the positive candidates.

    Args:
        scores: ``(b, n)``; masked entries may be ``-inf``.
        labels: ``(b, n)`` bool, or non-negative float relevance (the target is proportional).
        mask: ``(b, n)`` bool, True for real candidates; ``None`` means all real.

    Returns:
        The mean loss over rows with at least one real positive; rows without one are ignored
        (a zero that keeps the graph when there are none at all).
    """
    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    mask = mask.to(torch.bool)
    target = labels.to(scores.dtype).clamp_min(0.0) * mask  # (b, n)
    keep = target.sum(dim=-1) > 0  # (b,)
    if not bool(keep.any()):
        return scores.masked_fill(~mask, 0.0).sum() * 0.0
    s, m, t = scores[keep], mask[keep], target[keep]  # (k, n)
    t = t / t.sum(dim=-1, keepdim=True)
    logp = s.masked_fill(~m, float("-inf")).log_softmax(dim=-1)  # (k, n)
    # Zero the masked log-probs: target 0 * -inf would be NaN.
    return -(t * logp.masked_fill(~m, 0.0)).sum(dim=-1).mean()
