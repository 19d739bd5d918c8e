"""The trained artefact: slot memory plus re-ranking scorer, built from one config.

:class:`ModelConfig` is what ``config.json`` holds (see :mod:`ctxmem_plugin.checkpoint`);
:class:`CtxMemModel` is rebuilt from it before the weights are loaded.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any

from torch import Tensor, nn

from ctxmem_plugin.scorer import CtxMemScorer, ScorerConfig
from ctxmem_plugin.slots import SlotConfig, SlotMemory
from ctxmem_plugin.tuned_encoder import ENCODER_DIR

MODEL_VERSION = 1
"""The newest ``ModelConfig.version`` this code can load."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`CtxMemModel` and to use it correctly.

    Args:
        slots: the slot memory's config.
        scorer: the scorer's config; ``scorer.dim`` must equal ``slots.dim``.
        encoder: the embedding model used in training; embeddings from another one are meaningless.
        feature_names: the names of the upstream feature columns, in order
            (``len == scorer.num_features``).
        version: format version of the saved model.
        encoder_dir: ``"encoder"`` when the model directory carries its own (fine-tuned) encoder
            there, named ``encoder``; ``None`` when the encoder lives elsewhere.
    """

    slots: SlotConfig
    scorer: ScorerConfig
    encoder: str
    feature_names: tuple[str, ...]
    version: int = MODEL_VERSION
    encoder_dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.slots, SlotConfig) or not isinstance(self.scorer, ScorerConfig):
            raise ValueError("slots and scorer must be SlotConfig and ScorerConfig")
        if not isinstance(self.encoder, str) or not self.encoder:
            raise ValueError(f"encoder must be a non-empty string, got {self.encoder!r}")
        # A fixed name, not a path: a config file must not point the loader anywhere else.
        if self.encoder_dir not in (None, ENCODER_DIR):
            raise ValueError(f"encoder_dir must be {ENCODER_DIR!r} or null, got {self.encoder_dir!r}")
        names = self.feature_names
        if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"feature_names must be a tuple of strings, got {names!r}")
        if len(names) != self.scorer.num_features:
            raise ValueError(
                f"{len(names)} feature_names but scorer.num_features is {self.scorer.num_features}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"feature_names must be distinct, got {names!r}")
        if self.scorer.dim != self.slots.dim:
            raise ValueError(f"scorer.dim ({self.scorer.dim}) != slots.dim ({self.slots.dim})")
        if self.scorer.focus and not self.slots.has_focus:
            raise ValueError("scorer.focus needs slots.focus_rate > 0 (a focus slot)")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"version must be an int >= 1, got {self.version!r}")

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict."""
        return {
            "slots": self.slots.to_dict(),
            "scorer": self.scorer.to_dict(),
            "encoder": self.encoder,
            "feature_names": list(self.feature_names),
            "version": self.version,
            "encoder_dir": self.encoder_dir,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build a config from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in data]
        if missing:
            raise ValueError(f"missing ModelConfig field(s): {', '.join(missing)}")
        args = dict(data)
        args["slots"] = SlotConfig.from_dict(args["slots"])
        args["scorer"] = ScorerConfig.from_dict(args["scorer"])
        args["feature_names"] = tuple(args["feature_names"])
        return cls(**args)


class CtxMemModel(nn.Module):
    """Slot memory and scorer together, as trained and saved.

    Args:
        config: the model's config; kept as ``self.config`` and saved with the weights.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.slots = SlotMemory(config.slots)
        self.scorer = CtxMemScorer(config.scorer)

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
