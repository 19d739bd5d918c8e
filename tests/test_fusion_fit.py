"""Refitting the hybrid fusion: exact re-scoring, the choice it makes, and what train keeps of it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_encoder_tuning import _cli
from test_locomo import _sample, _write

from ctxmem_plugin.training.memo import MemoEncoder
from ctxmem_plugin.training.fusion_fit import (
    FUSION_GRID,
    fit_fusion,
    fit_fusion_on,
    grid_hybrid,
    grid_recalls,
    question_examples,
)
from ctxmem_plugin.encoders.hashing import HashEncoder
from ctxmem_plugin.retrieval.text import embed_text
from ctxmem_plugin.retrieval.features import FEATURE_NAMES
from ctxmem_plugin.retrieval.hybrid import RetrievalConfig
from ctxmem_plugin.training.data import (
    Conversation,
    ConversationTensors,
    Dataset,
    Example,
    gather,
    load_conversations,
)

CHAT = Path(__file__).resolve().parents[1] / "examples" / "chat_logs"
COL = {name: FEATURE_NAMES.index(name) for name in FEATURE_NAMES}
SHIPPED = RetrievalConfig()


def _fusion(cfg: RetrievalConfig) -> tuple[float, float, float, float]:
    return (cfg.bm25_weight, cfg.dense_weight, cfg.dense_floor, cfg.neighbour_weight)


def test_grid_hybrid_gives_what_gathering_with_that_fusion_gives() -> None:
    convs = load_conversations([CHAT])
    enc = HashEncoder()
    shipped = gather(convs, enc, cues_per_conversation=30, followups_per_conversation=5, seed=3)
    assert len(shipped.examples) > 40
    for other in (RetrievalConfig(bm25_weight=0.1, dense_weight=0.9, dense_floor=0.2, neighbour_weight=0.3),
                  RetrievalConfig(bm25_weight=0.8, dense_weight=0.2, dense_floor=0.0, neighbour_weight=0.0)):
        again = gather(convs, enc, retrieval=other, cues_per_conversation=30, followups_per_conversation=5, seed=3)
        assert again.retrieval == other.to_dict()
        for a, b in zip(shipped.examples, again.examples, strict=True):
            # Same candidates whatever the fusion; their hybrid score follows from the shipped features.
            assert np.array_equal(a.cand, b.cand)
            np.testing.assert_allclose(grid_hybrid(a.features, [_fusion(other)])[0], b.features[:, COL["hybrid"]], atol=1e-5)


def _example(bm25: list[float], dense: list[float], cand: list[int], evidence: set[int]) -> Example:
    """A question's candidates with only the fused columns set (no neighbours), hybrid as shipped."""
    n = len(cand)
    f = np.zeros((n, len(FEATURE_NAMES)), np.float32)
    f[:, COL["bm25_norm"]], f[:, COL["dense"]] = bm25, dense
    f[:, COL["hybrid"]] = grid_hybrid(f, [_fusion(SHIPPED)])[0]
    c = np.array(cand, dtype=np.int64)
    return Example(0, "question", np.zeros(4, np.float32), f, c, np.isin(c, list(evidence)), np.zeros(4, np.float32))


def test_grid_recalls_count_evidence_outside_the_candidates_as_missed() -> None:
    # Turn 3 leads on BM25, turn 9 on cosine; the question has a second evidence turn never retrieved.
    e = _example([1.0, 0.2, 0.0], [0.1, 0.3, 0.9], cand=[3, 5, 9], evidence={3})
    grid = [(1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0)]
    r = grid_recalls(e, gold=2, grid=grid, ks=(1, 3))
    np.testing.assert_allclose(r, [[0.5, 0.0], [0.5, 0.5]])
    # A tie ranks the earlier turn first.
    tie = _example([0.5, 0.5], [0.0, 0.0], cand=[7, 2], evidence={2})
    assert grid_recalls(tie, gold=1, grid=[(1.0, 0.0, 0.0, 0.0)], ks=(1,))[0, 0] == 1.0


def _dataset(n: int, evidence_signal: str, seed: int = 0) -> tuple[Dataset, list[Conversation]]:
    """``n`` questions whose one evidence turn stands out on ``evidence_signal`` alone; the other signal is noise."""
    rng = np.random.default_rng(seed)
    examples, questions = [], []
    for q in range(n):
        k = 30
        cand = rng.permutation(100)[:k]
        dense = rng.uniform(0.2, 0.7, k)
        if evidence_signal == "dense":
            bm25 = rng.uniform(0.0, 1.0, k)
            dense[0], bm25[0] = 0.9, rng.uniform(0.0, 0.3)
        else:
            # The evidence has the least cosine: only the grid's highest BM25 weight puts it first everywhere.
            bm25 = rng.uniform(0.0, 0.75, k)
            bm25[0], dense[0] = 1.0, 0.2
        examples.append(_example(list(bm25), list(dense), list(cand), {int(cand[0])}))
        questions.append((f"q{q}", {int(cand[0])}))
    conv = Conversation("c", [], questions)
    tensors = ConversationTensors("c", np.zeros((100, 4), np.float32), np.zeros((100, 0), np.float32))
    return Dataset([tensors], examples, 200, "hash", SHIPPED.to_dict()), [conv]


@pytest.mark.parametrize(("signal", "bm25_weight"), [("dense", 0.0), ("bm25", 0.8)])
def test_fit_chooses_the_signal_that_finds_the_evidence(signal: str, bm25_weight: float) -> None:
    data, convs = _dataset(120, signal)
    fit = fit_fusion(data, convs)
    assert fit is not None and fit.questions == 120
    assert fit.config.bm25_weight == bm25_weight and fit.config.dense_weight == pytest.approx(1 - bm25_weight)
    assert (fit.config.pool, fit.config.neighbours) == (SHIPPED.pool, SHIPPED.neighbours)
    assert fit.recall_at_1 == 1.0 and fit.gathered_recall_at_1 < 1.0
    assert fit.describe()["grid_size"] == len(FUSION_GRID) == 216
    assert fit.describe()["chosen"]["bm25_weight"] == bm25_weight


def test_too_few_questions_keep_the_shipped_fusion() -> None:
    data, convs = _dataset(99, "dense")
    assert fit_fusion(data, convs) is None
    assert fit_fusion(data, convs, min_questions=50) is not None


def test_fit_refuses_data_it_cannot_rescore() -> None:
    data, convs = _dataset(120, "dense")
    with pytest.raises(ValueError, match="not gathered from these conversations"):
        fit_fusion(data, [replace(convs[0], name="other")])
    with pytest.raises(ValueError, match="120 question examples for 119 questions"):
        question_examples(data, [replace(convs[0], questions=convs[0].questions[1:])])
    # Features that the recomputation does not reproduce (another fusion, a changed pipeline).
    broken = replace(data, retrieval=RetrievalConfig(bm25_weight=0.5, dense_weight=0.5).to_dict())
    with pytest.raises(AssertionError, match="no longer reproduces"):
        fit_fusion(broken, convs)


@pytest.mark.slow
def test_train_refits_the_fusion_keeps_it_and_resumes_with_it(tmp_path: Path) -> None:
    logs = _write(tmp_path, [_sample("conv-a"), _sample("conv-b")])
    out = tmp_path / "model"
    args = ("--epochs", "1", "--cues", "5", "--frozen-encoder")
    result = _cli("train", logs, "--out", out, *args, "--fit-fusion")
    assert "fusion refit" in result.stdout
    fusion = json.loads((out / "train_log.json").read_text())["fusion"]
    assert fusion["questions"] == 4 and fusion["grid_size"] == 216
    saved = json.loads((out / "config.json").read_text())["extra"]["runtime"]["retrieval"]
    assert {k: saved[k] for k in fusion["chosen"]} == fusion["chosen"]
    assert RetrievalConfig(**saved) != SHIPPED  # so that the checks below tell the two apart
    assert fusion["training_recall@10"] >= fusion["gathered_with_recall@10"]
    # The gathering took the fit's vectors: each training turn and question was embedded once.
    embedding = json.loads((out / "train_log.json").read_text())["embedding"]
    turns = sum(len(c.turns) for c in load_conversations([logs]))
    assert embedding["texts_reused"] >= turns + 4 and embedding["texts_encoded"] > 0

    # The model's fusion is the one a memory opened with it searches with.
    from ctxmem_plugin.memory import ContextMemory

    with ContextMemory(tmp_path / "mem", model=out) as mem:
        assert mem.retrieval == RetrievalConfig(**saved)

    # Resuming trains on data gathered with the model's fusion, not the shipped one.
    _cli("train", logs, "--out", out, "--epochs", "2", "--cues", "5", "--resume")
    assert json.loads((out / "config.json").read_text())["extra"]["runtime"]["retrieval"] == saved
    resumed = json.loads((out / "train_log.json").read_text())
    assert len(resumed["epochs"]) == 2 and resumed["fusion"] == fusion  # the log keeps the first run's choice

    # By default, 4 labelled questions are too few to refit: the shipped fusion is kept.
    _cli("train", logs, "--out", tmp_path / "plain", *args)
    assert "fusion" not in json.loads((tmp_path / "plain" / "train_log.json").read_text())
    plain = json.loads((tmp_path / "plain" / "config.json").read_text())["extra"]["runtime"]["retrieval"]
    assert RetrievalConfig(**plain) == SHIPPED


class _CountingEncoder(HashEncoder):
    """A hash encoder that records every text it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def encode(self, texts):  # type: ignore[no-untyped-def]
        self.seen += list(texts)
        return super().encode(texts)


def test_fit_then_gather_through_a_memo_embed_each_text_once_and_gather_the_same(tmp_path: Path) -> None:
    convs = load_conversations([_write(tmp_path, [_sample("conv-a"), _sample("conv-b")])])
    counting = _CountingEncoder()
    memo = MemoEncoder(counting)
    assert (memo.name, memo.dim) == (counting.name, counting.dim)
    fit = fit_fusion_on(convs, memo, focus_rate=0.5, focus_pool=5, slot_feature_dim=8, min_questions=1)
    assert fit is not None
    first = memo.encoded
    turns_and_questions = {embed_text(t.turn) for c in convs for t in c.turns} | {q for c in convs for q, _ in c.questions}
    assert turns_and_questions <= set(counting.seen)

    kwargs = {"retrieval": fit.config, "cues_per_conversation": 5, "followups_per_conversation": 3, "seed": 1}
    data = gather(convs, memo, **kwargs)
    # The second pass encodes only what the first did not see (cues, follow-ups), each text once.
    assert len(counting.seen) == len(set(counting.seen)) == memo.encoded > first
    assert memo.reused >= len(turns_and_questions)
    plain = gather(convs, HashEncoder(), **kwargs)
    assert data.encoder == plain.encoder and data.describe() == plain.describe()
    for a, b in zip(data.examples, plain.examples, strict=True):
        assert a.kind == b.kind and np.array_equal(a.cand, b.cand) and np.array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.query, b.query)
        np.testing.assert_array_equal(a.features, b.features)
    for a, b in zip(data.conversations, plain.conversations, strict=True):
        np.testing.assert_array_equal(a.vectors, b.vectors)


def test_memo_encoder_keeps_order_repeats_and_the_empty_batch() -> None:
    memo = MemoEncoder(HashEncoder())
    texts = ["b c", "a", "b c", "a d"]
    np.testing.assert_array_equal(memo.encode(texts), HashEncoder().encode(texts))
    assert (memo.encoded, memo.reused) == (3, 1)
    np.testing.assert_array_equal(memo.encode_query("a"), HashEncoder().encode_query("a"))
    assert (memo.encoded, memo.reused) == (3, 2)
    assert memo.encode([]).shape == (0, 64)
    with pytest.raises(TypeError):
        memo.encode("a")


def test_fit_fusion_needs_labelled_logs(tmp_path: Path) -> None:
    result = _cli("train", CHAT, "--out", tmp_path / "m", "--fit-fusion", code=2)
    assert "--fit-fusion needs labelled questions" in result.output
    assert not (tmp_path / "m").exists()
