"""The trained artefact: slot memory plus re-ranking scorer, built from one config.

:class:`ModelConfig` is what ``config.json`` holds (see :mod:`ctxmem_plugin.reranker.checkpoint`);
:class:`CtxMemModel` is rebuilt from it before the weights are loaded. A model holds
``config.members`` members (:class:`Member`: a slot memory and a scorer each), trained alike
from different seeds; it scores with the mean of their scores, which held out ranks a little
better than its members do alone (docs/experiments/, members).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ctxmem_plugin.config import Config, bounded
from ctxmem_plugin.errors import ConfigError
from ctxmem_plugin.reranker.scorer import CtxMemScorer, ScorerConfig
from ctxmem_plugin.reranker.slots import SlotConfig, SlotMemory
from ctxmem_plugin.encoders.tuned import ENCODER_DIR

MODEL_VERSION = 1
"""The newest ``ModelConfig.version`` this code can load."""


@dataclass(frozen=True)
class ModelConfig(Config):
    """Everything needed to rebuild a :class:`CtxMemModel` and to use it correctly.

    Args:
        slots: the slot memory's config.
        scorer: the scorer's config; ``scorer.dim`` must equal ``slots.dim``.
        encoder: the embedding model used in training; embeddings from another one are meaningless.
        feature_names: the names of the upstream feature columns, in order
            (``len == scorer.num_features``).
        version: format version of the saved model.
        encoder_dir: ``"encoder"`` when the model directory carries its own (fine-tuned) encoder
            there, named ``encoder``; ``None`` when the encoder lives elsewhere. A fixed name,
            not a path: a config file must not point the loader anywhere else.
        members: how many members (slot memory + scorer, same configs, own weights) the
            model averages. A config saved before members existed has one.
    """

    slots: SlotConfig
    scorer: ScorerConfig
    encoder: str
    feature_names: tuple[str, ...]
    version: int = bounded(MODEL_VERSION, low=1, high=MODEL_VERSION)
    encoder_dir: str | None = bounded(None, choices=(None, ENCODER_DIR))
    members: int = bounded(1, low=1, high=64)

    def check(self) -> None:
        if not self.encoder:
            raise ConfigError("encoder must be a non-empty string")
        names = self.feature_names
        if len(names) != self.scorer.num_features:
            raise ConfigError(f"{len(names)} feature_names but scorer.num_features is {self.scorer.num_features}")
        if len(set(names)) != len(names):
            raise ConfigError(f"feature_names must be distinct, got {list(names)!r}")
        if self.scorer.dim != self.slots.dim:
            raise ConfigError(f"scorer.dim ({self.scorer.dim}) != slots.dim ({self.slots.dim})")
        if self.scorer.focus and not self.slots.has_focus:
            raise ConfigError("scorer.focus needs slots.focus_rate > 0 (a focus slot)")


class Member(nn.Module):
    """One slot memory and one scorer, as trained together.

    Args:
        config: the model's config (its ``members`` count is not used here).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.slots = SlotMemory(config.slots)
        self.scorer = CtxMemScorer(config.scorer)

    def init_slots(self, batch: int) -> Tensor:
        """The learned initial slots of ``batch`` new sessions ``(batch, m, d)``, focus slot included."""
        return self.slots.init_slots(batch)

    def write(self, slots: Tensor, turns: Tensor, mask: Tensor | None = None, features: Tensor | None = None) -> Tensor:
        """Fold a chunk of turns into the slots (:meth:`SlotMemory.write`)."""
        return self.slots.write(slots, turns, mask, features)

    def focus(self, slots: Tensor) -> Tensor | None:
        """The focus slot ``(b, d)``, or None without one."""
        return self.slots.focus(slots)

    def forward(
        self,
        features: Tensor,
        cand_mask: Tensor | None,
        query: Tensor,
        cand: Tensor,
        slots: Tensor,
        focus: Tensor | None = None,
    ) -> Tensor:
        """Score candidates for a query given the namespace's slots.

        The query is contextualised by the slot memory first; with ``scorer.use_slots=False``
        the slots are ignored entirely (the ablation).

        Args:
            features: upstream features ``(b, n, F)``, columns as in ``config.feature_names``.
            cand_mask: ``(b, n)`` bool, True for real candidates; ``None`` means all real.
            query: raw query embedding ``(b, d)``.
            cand: candidate embeddings ``(b, n, d)``.
            slots: memory ``(b, m, d)``.
            focus: the focus ``(b, d)`` the query follows up on; ``None`` means the focus slot of
                ``slots`` (a follow-up asked in the same namespace). Another namespace's focus
                is given when the current conversation is kept apart from the searched history.

        Returns:
            Scores ``(b, n)``, ``-inf`` at masked candidates.
        """
        scores: Tensor
        if not self.config.scorer.use_slots:
            scores = self.scorer(features, cand_mask)
            return scores
        q_ctx, attn = self.slots.contextualise(slots, query)  # (b, d), (b, m)
        if focus is None:
            focus = self.slots.focus(slots)
        scores = self.scorer(
            features, cand_mask, query=q_ctx, attention=attn, cand=cand, slots=slots, focus=focus
        )
        return scores  # (b, n)


class CtxMemModel(nn.Module):
    """The members of a model together, as trained and saved; scores are their mean.

    A namespace's slot state is the members' states side by side, ``(b, members * m, d)``, so
    that it is stored and passed around as one tensor. With one member the model is exactly
    that member (same state, same scores).

    Args:
        config: the model's config; kept as ``self.config`` and saved with the weights.
        members: the members, if already built (training seeds each one); new ones by default.
    """

    def __init__(self, config: ModelConfig, members: Sequence[Member] | None = None) -> None:
        super().__init__()
        self.config = config
        if members is not None and len(members) != config.members:
            raise ValueError(f"config.members is {config.members}, got {len(members)} members")
        self.members = nn.ModuleList(members if members is not None else (Member(config) for _ in range(config.members)))

    @staticmethod
    def weight_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Name and shape of every weight of a ``CtxMemModel(config)``, without building it.

        What a model directory's ``model.safetensors`` must hold for ``config``; checked against
        its header before a module is built, so a config cannot make loading allocate more than
        the file holds (tests hold these equal to a built model's).
        """
        member = {f"slots.{k}": v for k, v in SlotMemory.weight_shapes(config.slots).items()}
        member.update({f"scorer.{k}": v for k, v in CtxMemScorer.weight_shapes(config.scorer).items()})
        return {f"members.{i}.{k}": v for i in range(config.members) for k, v in member.items()}

    @property
    def slots(self) -> SlotMemory:
        """The first member's slot memory (``explain`` shows its attention)."""
        return self.members[0].slots  # type: ignore[return-value]

    @property
    def scorer(self) -> CtxMemScorer:
        """The first member's scorer."""
        return self.members[0].scorer  # type: ignore[return-value]

    @property
    def state_slots(self) -> int:
        """Rows of a namespace's slot state: every member's slots, focus slots included."""
        return self.config.members * self.config.slots.num_slots

    def member_slots(self, slots: Tensor) -> list[Tensor]:
        """Split a slot state ``(b, members * m, d)`` into each member's ``(b, m, d)``."""
        return list(slots.split(self.config.slots.num_slots, dim=1))

    def init_slots(self, batch: int) -> Tensor:
        """Every member's initial slots for ``batch`` new sessions ``(batch, members * m, d)``."""
        return torch.cat([m.init_slots(batch) for m in self.members], dim=1)

    def write(self, slots: Tensor, turns: Tensor, mask: Tensor | None = None, features: Tensor | None = None) -> Tensor:
        """Fold a chunk of turns into every member's slots."""
        parts = zip(self.members, self.member_slots(slots), strict=True)
        return torch.cat([m.write(s, turns, mask, features) for m, s in parts], dim=1)

    def focus(self, slots: Tensor) -> Tensor | None:
        """The focus ``(b, d)``: a trace of the latest turns, the same in every member."""
        return self.members[0].focus(self.member_slots(slots)[0])

    def forward(
        self,
        features: Tensor,
        cand_mask: Tensor | None,
        query: Tensor,
        cand: Tensor,
        slots: Tensor,
        focus: Tensor | None = None,
    ) -> Tensor:
        """The mean of the members' scores (:meth:`Member.forward`); ``slots`` is the state
        ``(b, members * m, d)``. Returns ``(b, n)``, ``-inf`` at masked candidates."""
        if self.config.members == 1:
            only: Tensor = self.members[0](features, cand_mask, query, cand, slots, focus)
            return only
        # Members without slots ignore theirs: the caller may pass a stand-in of any shape.
        parts = self.member_slots(slots) if self.config.scorer.use_slots else [slots] * self.config.members
        outs = torch.stack(
            [m(features, cand_mask, query, cand, s, focus) for m, s in zip(self.members, parts, strict=True)]
        )  # (members, b, n)
        mask = torch.ones_like(outs[0], dtype=torch.bool) if cand_mask is None else cand_mask.to(torch.bool)  # (b, n)
        # Averaged as offsets from the base score: members that all return it (untrained) then
        # give it back bit for bit, which a plain mean of equal floats does not promise.
        base = features[..., self.config.scorer.base_score_index].masked_fill(~mask, 0.0)  # (b, n)
        mean = (outs.masked_fill(~mask, 0.0) - base).mean(dim=0)  # (b, n)
        return (base + mean).masked_fill(~mask, float("-inf"))
