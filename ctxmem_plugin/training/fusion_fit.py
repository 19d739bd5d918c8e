"""Choosing the hybrid fusion for a model from its labelled training questions.

The shipped fusion (``RetrievalConfig``) was tuned for the base encoder. A tuned encoder makes
dense scores mean more, and a user's own logs may want other weights: with enough labelled
questions, training refits the fusion (BM25 weight, dense floor, neighbour weight; dense weight
= 1 - BM25 weight) to maximise recall@10 over the training questions, and the model keeps it.
Cross-validated on the LoCoMo dev file (``benchmarks/refit_fusion.py``), the refit fusion beat
the shipped one on the held-out conversations.

A candidate list does not depend on the fusion (BM25 top-k, dense top-k, focus probe and
neighbours are all taken before fusing), so every setting can be scored from the features
already gathered: :func:`grid_hybrid` recomputes ``fuse`` from the feature columns, and
:func:`fit_fusion` checks that it gives the gathered hybrid column back before trusting it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ctxmem_plugin.encoders import TextEncoder
from ctxmem_plugin.retrieval.features import FEATURE_NAMES
from ctxmem_plugin.retrieval.hybrid import RetrievalConfig
from ctxmem_plugin.training.data import Conversation, Dataset, Example, gather

Fusion = tuple[float, float, float, float]
"""``(bm25_weight, dense_weight, dense_floor, neighbour_weight)``."""

FUSION_GRID: tuple[Fusion, ...] = tuple(
    (bw, round(1.0 - bw, 10), floor, nw)
    for bw, floor, nw in itertools.product(
        (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
        (0.0, 0.1, 0.2, 0.3),
        (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    )
)
"""The 216 settings tried (the grid of ``benchmarks/refit_fusion.py``)."""

MIN_FIT_QUESTIONS = 100
"""Fewer labelled questions than this keep the shipped fusion: 216 settings would overfit them."""

_COL = {name: FEATURE_NAMES.index(name) for name in FEATURE_NAMES}


def grid_hybrid(features: np.ndarray, grid: Sequence[Fusion]) -> np.ndarray:
    """``(len(grid), n)`` hybrid scores of one candidate list under each fusion, as ``fuse`` gives them."""
    g = np.asarray(grid, dtype=np.float64)  # (G, 4)
    bw, dw, floor, nw = (g[:, i : i + 1] for i in range(4))  # (G, 1) each
    f = features.astype(np.float64)
    bm25, dense = f[:, _COL["bm25_norm"]], f[:, _COL["dense"]]  # (n,)
    nb_bm25 = f[:, [_COL["prev_bm25_norm"], _COL["next_bm25_norm"]]]  # (n, 2)
    nb_dense = f[:, [_COL["prev_dense"], _COL["next_dense"]]]  # (n, 2)
    span = np.maximum(dense.max() - floor, 1e-6)  # (G, 1)
    fused = bw * bm25 + dw * np.clip((dense - floor) / span, 0.0, None)  # (G, n)
    # A neighbour outside the candidates has 0 in both columns and fuses to 0, as in fuse().
    nb_norm = np.clip((nb_dense[None] - floor[:, :, None]) / span[:, :, None], 0.0, None) * (nb_dense != 0)  # (G, n, 2)
    nb = bw[:, :, None] * nb_bm25[None] + dw[:, :, None] * nb_norm  # (G, n, 2)
    return fused + nw * nb.max(axis=2)


def grid_recalls(e: Example, gold: int, grid: Sequence[Fusion], ks: Sequence[int] = (1, 10)) -> np.ndarray:
    """``(len(ks), len(grid))`` recall@k of one question under each fusion; ``gold``: its evidence count.

    Evidence outside the candidates counts as missed, so recall is over all of it. Ties rank
    the earlier turn first, as ``evaluation.rank_by`` does.
    """
    by_position = np.argsort(e.cand, kind="stable")
    scores = grid_hybrid(e.features[by_position], grid)  # (G, n)
    labels = e.labels[by_position]
    order = np.argsort(-scores, axis=1, kind="stable")  # (G, n)
    hits = labels[order]  # (G, n)
    return np.stack([hits[:, :k].sum(axis=1) / gold for k in ks])


@dataclass(frozen=True)
class FusionFit:
    """The fusion chosen for a model, and how it did on the questions it was chosen on."""

    config: RetrievalConfig
    questions: int
    recall_at_10: float
    recall_at_1: float
    gathered_recall_at_10: float  # the fusion the questions were gathered with
    gathered_recall_at_1: float

    def describe(self) -> dict[str, Any]:
        """The entry ``train_log.json`` keeps."""
        chosen = {k: getattr(self.config, k) for k in ("bm25_weight", "dense_weight", "dense_floor", "neighbour_weight")}
        return {
            "chosen": chosen, "questions": self.questions, "grid_size": len(FUSION_GRID),
            "training_recall@10": self.recall_at_10, "training_recall@1": self.recall_at_1,
            "gathered_with_recall@10": self.gathered_recall_at_10, "gathered_with_recall@1": self.gathered_recall_at_1,
        }


def question_examples(data: Dataset, conversations: Sequence[Conversation]) -> list[tuple[Example, int]]:
    """``(example, evidence count)`` of every question example in ``data``.

    ``data`` must have been gathered from ``conversations``, in that order (``gather``).
    """
    if [c.name for c in data.conversations] != [c.name for c in conversations]:
        raise ValueError("the dataset was not gathered from these conversations")
    out: list[tuple[Example, int]] = []
    for ci, conv in enumerate(conversations):
        mine = [e for e in data.examples if e.conv == ci and e.kind == "question"]
        if not mine:
            continue
        if len(mine) != len(conv.questions):
            raise ValueError(f"{conv.name}: {len(mine)} question examples for {len(conv.questions)} questions")
        out += [(e, len(ev)) for e, (_, ev) in zip(mine, conv.questions)]
    return out


def fit_fusion(
    data: Dataset, conversations: Sequence[Conversation], *, min_questions: int = MIN_FIT_QUESTIONS
) -> FusionFit | None:
    """The fusion of :data:`FUSION_GRID` with the best recall@10 on ``data``'s questions.

    ``None`` when there are fewer than ``min_questions`` labelled questions. Ties go to the
    better recall@1, then to the earlier setting of the grid. The result keeps the gathered config's other settings (pool,
    neighbours).
    """
    questions = question_examples(data, conversations)
    if len(questions) < max(min_questions, 1):
        return None
    gathered = RetrievalConfig(**data.retrieval) if data.retrieval else RetrievalConfig()
    grid = [f for f in FUSION_GRID if gathered.neighbours or f[3] == 0.0]
    current: Fusion = (gathered.bm25_weight, gathered.dense_weight, gathered.dense_floor,
                       gathered.neighbour_weight if gathered.neighbours else 0.0)
    for e, _ in questions[:50]:
        # The recomputation must give back the hybrid column the questions were gathered with;
        # if it does not, the features changed and every figure below would be wrong.
        if not np.allclose(grid_hybrid(e.features, [current])[0], e.features[:, _COL["hybrid"]], atol=1e-5):
            raise AssertionError("grid_hybrid no longer reproduces retrieval.fuse: update fusion_fit")
    total = np.zeros((2, len(grid) + 1))
    for e, gold in questions:
        total += grid_recalls(e, gold, [*grid, current])
    mean = total / len(questions)
    # Most recall@10; among equals, most recall@1; then the earliest in the grid.
    tops = np.flatnonzero(mean[1, :-1] == mean[1, :-1].max())
    best = int(tops[np.argmax(mean[0, tops])])
    bw, dw, floor, nw = grid[best]
    chosen = replace(gathered, bm25_weight=bw, dense_weight=dw, dense_floor=floor, neighbour_weight=nw)
    return FusionFit(chosen, len(questions), float(mean[1, best]), float(mean[0, best]), float(mean[1, -1]), float(mean[0, -1]))


def fit_fusion_on(
    conversations: Sequence[Conversation],
    encoder: TextEncoder,
    *,
    focus_rate: float,
    focus_pool: int,
    slot_feature_dim: int,
    min_questions: int = MIN_FIT_QUESTIONS,
    progress: Callable[[int], None] | None = None,
) -> FusionFit | None:
    """Gather the conversations' labelled questions alone (shipped fusion) and fit the fusion on them.

    The questions' candidates and features are exactly those of a full ``gather`` with the same
    settings (cues and follow-ups are asked after them), so what is fitted here is what training
    sees. ``None`` below ``min_questions`` questions.

    It embeds the turns and questions that the full gathering embeds again: pass both an
    :class:`~ctxmem_plugin.encoder.MemoEncoder` (as ``train`` does) to embed them once.
    """
    if sum(len(c.questions) for c in conversations) < max(min_questions, 1):
        return None
    data = gather(
        conversations, encoder, cues_per_conversation=0, followups_per_conversation=0, focus_rate=focus_rate,
        focus_pool=focus_pool, slot_feature_dim=slot_feature_dim, progress=progress,
    )
    return fit_fusion(data, conversations, min_questions=min_questions)
