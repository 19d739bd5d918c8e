"""Hybrid retrieval: BM25 (FTS5) and dense (FAISS) candidates, fused, expanded to neighbours.

The pipeline, for one query under one namespace prefix:

1. candidates: the top ``pool`` of BM25 and the top ``pool`` of dense search, both restricted
   to the namespace prefix and the metadata filters, plus their neighbouring turns;
2. every candidate gets both scores (not only the one that found it), so fusion is fair;
3. fused = ``w_bm25 * bm25 / max_bm25 + w_dense * (dense - floor) / (max_dense - floor)``;
4. hybrid = fused + ``w_neighbour * max(fused of previous turn, fused of next turn)``: evidence
   often spans a question and its answer in consecutive turns;
5. a per-candidate feature matrix is kept for the learned scorer (:mod:`ctxmem_plugin.reranker.scorer`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.filters import Filters
from ctxmem_plugin.retrieval.text import match_terms, query_terms
from ctxmem_plugin.storage.sqlite import LongTermStore
from ctxmem_plugin.storage.vectors import VectorIndex

METHODS = ("bm25", "dense", "hybrid")

FEATURE_NAMES: tuple[str, ...] = (
    "hybrid",  # the final hybrid score: the scorer's base score (column 0)
    "fused",
    "bm25_norm",
    "bm25_rrank",
    "bm25_hit",
    "dense",
    "dense_norm",
    "dense_rrank",
    "prev_fused",
    "next_fused",
    "max_neighbour_fused",
    "session_best_fused",
    "session_mean_fused",
    "hybrid_rrank",
    "hybrid_gap_to_best",
    "speaker_in_query",
    "log_length",
    "has_image",
    "query_terms_matched",
    "position",
    "prev_dense",
    "next_dense",
    "prev_bm25_norm",
    "next_bm25_norm",
    "session_best_dense",
    "session_best_bm25_norm",
)


@dataclass(frozen=True)
class RetrievalConfig:
    """Settings of the hybrid pipeline (tuned on the LoCoMo dev file, leave-one-out).

    Attributes:
        pool: candidates taken from each of BM25 and dense search.
        bm25_weight, dense_weight: fusion weights of the normalised scores.
        dense_floor: cosine treated as "no similarity" when normalising dense scores.
        neighbour_weight: share of the best neighbour's fused score added to a turn's score.
        neighbours: whether neighbouring turns of candidates join the candidates.
    """

    pool: int = 100
    bm25_weight: float = 0.6
    dense_weight: float = 0.4
    dense_floor: float = 0.0
    neighbour_weight: float = 0.5
    neighbours: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Candidates:
    """Everything known about one query's candidates; arrays are aligned on ``ids``.

    ``score`` is the ranking of the chosen method, descending, ties broken by id.
    """

    ids: np.ndarray  # (n,) int64
    score: np.ndarray  # (n,)
    features: np.ndarray  # (n, F) float32, columns FEATURE_NAMES
    vectors: np.ndarray  # (n, d) float32
    query_vector: np.ndarray  # (d,)
    signals: list[dict[str, dict[str, float]]] = field(default_factory=list)
    raw: RawScores | None = None

    def top(self, k: int) -> Candidates:
        order = np.lexsort((self.ids, -self.score))[:k]
        return Candidates(
            ids=self.ids[order],
            score=self.score[order],
            features=self.features[order],
            vectors=self.vectors[order],
            query_vector=self.query_vector,
            signals=[self.signals[i] for i in order],
        )

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class RawScores:
    """Unfused scores of a candidate set, enough to re-fuse it under other settings (tuning)."""

    bm25: np.ndarray  # (n,) BM25 (0 where the turn matches no query term)
    bm25_present: np.ndarray  # (n,) bool
    dense: np.ndarray  # (n,) cosine
    prev_pos: np.ndarray  # (n,) position of the previous turn among candidates, -1 if absent
    next_pos: np.ndarray  # (n,)


def fuse(raw: RawScores, cfg: RetrievalConfig) -> tuple[np.ndarray, ...]:
    """``(bm25_norm, dense_norm, fused, prev_fused, next_fused, hybrid)`` for one candidate set."""
    bm25, dense = raw.bm25, raw.dense
    top = bm25.max() if len(bm25) else 0.0
    bm25_norm = bm25 / top if top > 0 else bm25
    dmax = float(dense.max()) if len(dense) else 0.0
    dense_norm = np.clip((dense - cfg.dense_floor) / max(dmax - cfg.dense_floor, 1e-6), 0.0, None)
    fused = cfg.bm25_weight * bm25_norm + cfg.dense_weight * dense_norm
    padded = np.append(fused, 0.0)  # index -1 reads the 0 appended here
    prev_f, next_f = padded[raw.prev_pos], padded[raw.next_pos]
    hybrid = fused + cfg.neighbour_weight * np.maximum(prev_f, next_f) if cfg.neighbours else fused.copy()
    return bm25_norm, dense_norm, fused, prev_f, next_f, hybrid


def _ranks(scores: np.ndarray, present: np.ndarray) -> np.ndarray:
    """1-based rank among present entries (0 where absent), ties by position."""
    ranks = np.zeros(len(scores), dtype=np.int64)
    idx = np.flatnonzero(present)
    order = idx[np.argsort(-scores[idx], kind="stable")]
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


class HybridRetriever:
    """Runs the pipeline over a store and its vector index.

    Args:
        store: the SQLite store (source of rows, BM25, vectors).
        index: the FAISS index over the same ids.
        config: fusion settings.
    """

    def __init__(self, store: LongTermStore, index: VectorIndex, config: RetrievalConfig | None = None) -> None:
        self.store = store
        self.index = index
        self.config = config or RetrievalConfig()

    def candidates(
        self,
        query: str,
        query_vector: np.ndarray,
        prefix: ns.Namespace,
        filters: Filters | None = None,
        *,
        method: str = "hybrid",
        pool: int | None = None,
        probe: np.ndarray | None = None,
        probe_pool: int = 0,
    ) -> Candidates:
        """Candidates for ``query`` under ``prefix``, scored by ``method`` (bm25, dense, hybrid).

        ``probe``: a second vector whose ``probe_pool`` nearest turns join the candidates (the
        query widened by the conversation's focus, for follow-ups); every feature is still
        computed against ``query`` and ``query_vector``, and a turn it found carries
        ``signals["focus"]``.
        """
        cfg = self.config
        pool = pool or cfg.pool
        dim = query_vector.shape[0]
        allowed = self.store.ids_in(prefix, filters)
        allowed_set = set(allowed.tolist()) if filters else None
        bm25_all = self.store.bm25(match_terms(query), prefix) if method != "dense" else {}
        if allowed_set is not None:  # filters narrow the turns scored, not BM25's statistics
            bm25_all = {i: s for i, s in bm25_all.items() if i in allowed_set}
        bm25_hits = sorted(bm25_all.items(), key=lambda kv: (-kv[1], kv[0]))[:pool]
        dense_ids, _ = self.index.search(query_vector, pool, allowed) if method != "bm25" else (np.zeros(0, np.int64), None)
        probe_ids: list[int] = []
        if probe is not None and probe_pool > 0 and method == "hybrid":
            probe_ids = [int(i) for i in self.index.search(probe, probe_pool, allowed)[0]]
        seed = list(dict.fromkeys([i for i, _ in bm25_hits] + [int(i) for i in dense_ids] + probe_ids))
        neigh = self.store.neighbours(seed) if seed else {}
        ids_list = list(seed)
        if method == "hybrid" and cfg.neighbours:
            extra = {n for pair in neigh.values() for n in pair if n is not None}
            if allowed_set is not None:
                extra &= allowed_set
            ids_list += sorted(extra - set(seed))
            missing = [i for i in ids_list if i not in neigh]
            if missing:
                neigh.update(self.store.neighbours(missing))
        if not ids_list:
            return Candidates(
                np.zeros(0, np.int64), np.zeros(0), np.zeros((0, len(FEATURE_NAMES)), np.float32),
                np.zeros((0, dim), np.float32), query_vector,
            )
        ids = np.asarray(ids_list, dtype=np.int64)
        pos = {int(i): j for j, i in enumerate(ids)}
        n = len(ids)

        # Both scores for every candidate, whichever signal found it.
        bm25 = np.zeros(n)
        bm25_present = np.zeros(n, dtype=bool)
        for i in ids_list:
            if i in bm25_all:
                bm25[pos[i]], bm25_present[pos[i]] = bm25_all[i], True
        vectors = self.store.vectors(ids_list, dim)  # (n, d)
        dense = vectors @ query_vector.astype(np.float32)  # (n,)
        prev_pos = np.array([pos.get(neigh.get(int(i), (None, None))[0] or -1, -1) for i in ids])
        next_pos = np.array([pos.get(neigh.get(int(i), (None, None))[1] or -1, -1) for i in ids])
        raw = RawScores(bm25, bm25_present, dense, prev_pos, next_pos)
        bm25_norm, dense_norm, fused, prev_f, next_f, hybrid = fuse(raw, cfg)
        max_nb = np.maximum(prev_f, next_f)

        score = {"bm25": bm25, "dense": dense, "hybrid": hybrid}[method]
        rows = {t.id: t for t in self.store.get(ids_list)}
        features = self._features(
            query, ids, rows, raw, bm25_norm, bm25_present, dense, dense_norm, fused, prev_f, next_f, max_nb, hybrid
        )
        bm25_rank = _ranks(bm25, bm25_present)
        dense_rank = _ranks(dense, np.ones(n, dtype=bool))
        signals = []
        for j in range(n):
            sig: dict[str, dict[str, float]] = {"dense": {"score": float(dense[j]), "rank": int(dense_rank[j])}}
            if bm25_present[j]:
                sig["bm25"] = {"score": float(bm25[j]), "rank": int(bm25_rank[j])}
            if cfg.neighbours and max_nb[j] > 0:
                sig["neighbour"] = {"score": float(cfg.neighbour_weight * max_nb[j])}
            signals.append(sig)
        for rank, i in enumerate(probe_ids, start=1):
            signals[pos[i]]["focus"] = {"score": float(vectors[pos[i]] @ probe.astype(np.float32)), "rank": rank}  # type: ignore[union-attr]
        return Candidates(ids, np.asarray(score, dtype=np.float64), features, vectors, query_vector, signals, raw)

    def _features(
        self,
        query: str,
        ids: np.ndarray,
        rows: dict[int, Any],
        raw: RawScores,
        bm25_norm: np.ndarray,
        bm25_present: np.ndarray,
        dense: np.ndarray,
        dense_norm: np.ndarray,
        fused: np.ndarray,
        prev_f: np.ndarray,
        next_f: np.ndarray,
        max_nb: np.ndarray,
        hybrid: np.ndarray,
    ) -> np.ndarray:
        n = len(ids)
        terms = set(query_terms(query))
        sessions: dict[Any, list[int]] = {}
        for j, i in enumerate(ids):
            row = rows[int(i)]
            key = (row.namespace, row.metadata.get("session", (row.timestamp or "")[:10]))
            sessions.setdefault(key, []).append(j)
        sess_best = np.zeros(n)
        sess_mean = np.zeros(n)
        sess_dense = np.zeros(n)
        sess_bm25 = np.zeros(n)
        for members in sessions.values():
            sess_best[members] = fused[members].max()
            sess_mean[members] = fused[members].mean()
            sess_dense[members] = dense[members].max()
            sess_bm25[members] = bm25_norm[members].max()
        # Neighbours' own signals (not only their fused score): an answer often sits next to
        # the turn that names the topic.
        pad_dense, pad_bm25 = np.append(dense, 0.0), np.append(bm25_norm, 0.0)
        neigh = np.stack(
            [pad_dense[raw.prev_pos], pad_dense[raw.next_pos], pad_bm25[raw.prev_pos], pad_bm25[raw.next_pos]], axis=1
        )  # (n, 4)
        hyb_rank = _ranks(hybrid, np.ones(n, dtype=bool))
        dense_rank = _ranks(dense, np.ones(n, dtype=bool))
        id_rank = _ranks(-ids.astype(np.float64), np.ones(n, dtype=bool))
        f = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float32)
        for j, i in enumerate(ids):
            row = rows[int(i)]
            words = _terms_of(f"{row.speaker or ''} {row.content}")
            f[j] = (
                hybrid[j],
                fused[j],
                bm25_norm[j],
                1.0 / _rank_or_inf(bm25_norm, bm25_present, j),
                float(bm25_present[j]),
                dense[j],
                dense_norm[j],
                1.0 / dense_rank[j],
                prev_f[j],
                next_f[j],
                max_nb[j],
                sess_best[j],
                sess_mean[j],
                1.0 / hyb_rank[j],
                hybrid.max() - hybrid[j],
                float(bool(row.speaker) and row.speaker.lower() in terms),
                math.log1p(len(row.content)) / 8.0,
                float(bool(row.metadata.get("image_caption"))),
                len(terms & words) / max(len(terms), 1),
                id_rank[j] / n,
                *neigh[j],
                sess_dense[j],
                sess_bm25[j],
            )
        return f


@functools.lru_cache(maxsize=65536)
def _terms_of(text: str) -> frozenset[str]:
    # Candidate texts recur across queries; tokenising each once keeps feature building cheap.
    return frozenset(query_terms(text))


def _rank_or_inf(scores: np.ndarray, present: np.ndarray, j: int) -> float:
    if not present[j]:
        return math.inf
    return 1 + int(((scores > scores[j]) & present).sum())
