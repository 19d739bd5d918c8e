"""Turn-level retrieval evaluation on LoCoMo-format files.

Each conversation is ingested into its own namespace; every question of categories 1-4 that has
evidence is a query under that namespace. Per method: ``recall@k`` (share of the question's
evidence turns in the top k, averaged over questions), ``hit@k`` (at least one evidence turn in
the top k) and ``session_hit@k`` (a top-k turn from a session that holds evidence).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ctxmem_plugin.encoders import TextEncoder
from ctxmem_plugin.formats.locomo import LocomoConversation, load_locomo
from ctxmem_plugin.retrieval.hybrid import Candidates

CATEGORIES = (1, 2, 3, 4)
DEFAULT_KS = (1, 5, 10, 20)
BASE_METHODS = ("bm25", "dense", "hybrid")


def session_of(dia_id: str) -> int:
    """``"D3:5"`` -> 3."""
    return int(dia_id.split(":")[0].lstrip("D"))


@dataclass
class EvalQuestion:
    """One question with its candidates (ranked by every method from one retrieval pass)."""

    conversation: str
    question: str
    category: int
    evidence: set[int]  # turn ids
    evidence_sessions: set[int]
    candidates: Candidates
    session_by_id: dict[int, int]
    # The model's own candidates when its focus widens them (as search does); else ``candidates``.
    model_candidates: Candidates | None = None


@dataclass
class EvalResult:
    """Per-method metrics, plus the per-category breakdown."""

    questions: int
    methods: dict[str, dict[str, float]]
    by_category: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    encoder: str | None = None  # the encoder that embedded turns and questions

    def to_dict(self) -> dict[str, Any]:
        return {"questions": self.questions, "methods": self.methods, "by_category": self.by_category, "encoder": self.encoder}


def metrics(ranked: Sequence[np.ndarray], questions: Sequence[EvalQuestion], ks: Iterable[int]) -> dict[str, float]:
    """recall@k, hit@k, session_hit@k averaged over questions; ``ranked[i]`` = ids best first."""
    out: dict[str, float] = {}
    for k in ks:
        rec, hit, shit = [], [], []
        for ids, q in zip(ranked, questions):
            top = [int(i) for i in ids[:k]]
            found = len(q.evidence.intersection(top))
            rec.append(found / len(q.evidence))
            hit.append(float(found > 0))
            shit.append(float(any(q.session_by_id.get(i) in q.evidence_sessions for i in top)))
        out[f"recall@{k}"] = float(np.mean(rec)) if rec else 0.0
        out[f"hit@{k}"] = float(np.mean(hit)) if hit else 0.0
        out[f"session_hit@{k}"] = float(np.mean(shit)) if shit else 0.0
    return out


def rank_by(cands: Candidates, score: np.ndarray) -> np.ndarray:
    """Candidate ids by descending score, ties by id (as search does)."""
    return cands.ids[np.lexsort((cands.ids, -score))]


def build_questions(
    conversations: Sequence[LocomoConversation],
    memory: Any,
    *,
    pool: int = 100,
    progress: Callable[[int], None] | None = None,
) -> list[EvalQuestion]:
    """Ingest each conversation into its own namespace and gather every question's candidates.

    With a model whose focus widens the candidates, each question also gets the candidates that
    ``search`` would give the model (the conversation's focus probe added).
    """
    from ctxmem_plugin.memory import ContextMemory

    assert isinstance(memory, ContextMemory)
    out: list[EvalQuestion] = []
    for conv in conversations:
        space = ("locomo", conv.sample_id)
        ids = memory.write([st.entry(space) for st in conv.turns])  # one batched encode per conversation
        by_dia: dict[str, int] = {}
        session_by_id: dict[int, int] = {}
        for st, turn_id in zip(conv.turns, ids):
            dia = st.turn.metadata.get("dia_id")
            if turn_id < 0 or not dia:
                continue
            by_dia[dia] = turn_id
            session_by_id[turn_id] = session_of(dia)
        runtime = memory.reranker
        widen = runtime is not None and runtime.settings.focus_pool > 0
        focus = runtime.focus_of(space) if widen else None  # type: ignore[union-attr]
        for q in conv.questions:
            if q.category not in CATEGORIES:
                continue
            evidence = {by_dia[e] for e in q.evidence if e in by_dia}
            if not evidence:
                continue
            qv = memory.encoder.encode_query(q.question)
            cands = memory.retriever.candidates(q.question, qv, space, method="hybrid", pool=pool)
            model_cands = None
            if widen:
                model_cands = memory.retriever.candidates(
                    q.question, qv, space, method="hybrid", pool=pool,
                    probe=runtime.probe(qv, focus), probe_pool=runtime.settings.focus_pool,  # type: ignore[union-attr]
                )
            out.append(
                EvalQuestion(
                    conv.sample_id, q.question, q.category, evidence,
                    {session_by_id[i] for i in evidence}, cands, session_by_id, model_cands,
                )
            )
            if progress is not None:
                progress(1)
    return out


def method_rankings(questions: Sequence[EvalQuestion], scorer: Any = None) -> dict[str, list[np.ndarray]]:
    """Rankings per method; ``ctxmem`` when a slot runtime (``scorer``) is given."""
    ranked: dict[str, list[np.ndarray]] = {m: [] for m in BASE_METHODS}
    for q in questions:
        raw = q.candidates.raw
        assert raw is not None
        ranked["bm25"].append(rank_by(q.candidates, np.where(raw.bm25_present, raw.bm25, -np.inf)))
        ranked["dense"].append(rank_by(q.candidates, raw.dense))
        ranked["hybrid"].append(rank_by(q.candidates, q.candidates.score))
    if scorer is not None:
        own = [q.model_candidates if q.model_candidates is not None else q.candidates for q in questions]
        ranked["ctxmem"] = [rank_by(c, c.score) for c in scorer(own, questions)]
    return ranked


def summarise(questions: Sequence[EvalQuestion], ranked: dict[str, list[np.ndarray]], ks: Sequence[int]) -> EvalResult:
    result = EvalResult(len(questions), {m: metrics(r, questions, ks) for m, r in ranked.items()})
    for cat in CATEGORIES:
        idx = [i for i, q in enumerate(questions) if q.category == cat]
        if idx:
            sub = [questions[i] for i in idx]
            result.by_category[str(cat)] = {
                m: {**metrics([r[i] for i in idx], sub, ks), "questions": float(len(idx))} for m, r in ranked.items()
            }
    return result


def evaluate_locomo(
    path: str | Path,
    *,
    encoder: str | Path | TextEncoder | None = None,
    model: str | Path | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    conversations: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Evaluate every method on a LoCoMo-format file (in a throw-away memory directory).

    Args:
        path: the LoCoMo-format JSON file.
        encoder: embedding model (default all-MiniLM-L6-v2, or the model's own).
        model: a trained ctxmem model directory; adds the method ``ctxmem``.
        ks: cut-offs.
        conversations: restrict to these sample ids.
    """
    from ctxmem_plugin.memory import ContextMemory

    convs = load_locomo(path)
    if conversations is not None:
        wanted = set(conversations)
        convs = [c for c in convs if c.sample_id in wanted]
    with tempfile.TemporaryDirectory(prefix="ctxmem-eval-") as tmp, ContextMemory(tmp, encoder=encoder, model=model) as memory:
        runtime = memory.reranker
        pool = runtime.pool if runtime is not None else max(max(ks), memory.retrieval.pool)
        questions = build_questions(convs, memory, pool=pool, progress=progress)
        scorer = None
        if runtime is not None:

            def scorer(cands: list[Candidates], qs: Sequence[EvalQuestion]) -> list[Candidates]:
                assert runtime is not None
                out = []
                for c in cands:
                    rows = {t.id: t for t in memory.get(c.ids.tolist())}
                    out.append(runtime.rescore(c, rows, memory.retrieval))
                return out

        ranked = method_rankings(questions, scorer)
        return replace(summarise(questions, ranked, ks), encoder=memory.encoder.name)
