"""Hybrid retrieval: BM25 (FTS5) and dense (FAISS) candidates, fused, expanded to neighbours.

The pipeline, for one query under one namespace prefix:

1. candidates: the top ``pool`` of BM25 and the top ``pool`` of dense search, both restricted
   to the namespace prefix and the metadata filters, plus their neighbouring turns;
2. every candidate gets both scores (not only the one that found it), so fusion is fair;
3. fused = ``w_bm25 * bm25 / max_bm25 + w_dense * (dense - floor) / (max_dense - floor)``;
4. hybrid = fused + ``w_neighbour * max(fused of previous turn, fused of next turn)``: evidence
   often spans a question and its answer in consecutive turns;
5. the candidates keep their raw scores: a trained re-ranker builds its features from them
   (:mod:`ctxmem_plugin.retrieval.features`), plain search never does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.config import Config, bounded
from ctxmem_plugin.filters import Filters
from ctxmem_plugin.retrieval.text import match_terms
from ctxmem_plugin.storage.base import MemoryStore

METHODS = ("bm25", "dense", "hybrid")


@dataclass(frozen=True)
class RetrievalConfig(Config):
    """Settings of the hybrid pipeline (the defaults were chosen on the LoCoMo dev file, leave-one-out).

    Attributes:
        pool: candidates taken from each of BM25 and dense search.
        bm25_weight, dense_weight: fusion weights of the normalised scores.
        dense_floor: cosine treated as "no similarity" when normalising dense scores.
        neighbour_weight: share of the best neighbour's fused score added to a turn's score.
        neighbours: whether neighbouring turns of candidates join the candidates.
    """

    pool: int = bounded(100, low=1, high=100_000)
    bm25_weight: float = bounded(0.6, low=0, high=100)
    dense_weight: float = bounded(0.4, low=0, high=100)
    dense_floor: float = bounded(0.0, low=-1, high=1)
    neighbour_weight: float = bounded(0.5, low=0, high=100)
    neighbours: bool = True


@dataclass(frozen=True)
class RawScores:
    """Unfused scores of a candidate set, enough to re-fuse it under other settings (tuning)."""

    bm25: np.ndarray  # (n,) BM25 (0 where the turn matches no query term)
    bm25_present: np.ndarray  # (n,) bool
    dense: np.ndarray  # (n,) cosine
    prev_pos: np.ndarray  # (n,) position of the previous turn among candidates, -1 if absent
    next_pos: np.ndarray  # (n,)

    def take(self, order: np.ndarray) -> RawScores:
        """The scores of the candidates at ``order`` (neighbour positions follow, -1 when left out)."""
        where = np.full(len(self.bm25) + 1, -1, dtype=np.int64)  # old position -> new; index -1 -> -1
        where[order] = np.arange(len(order))
        return RawScores(self.bm25[order], self.bm25_present[order], self.dense[order],
                         where[self.prev_pos[order]], where[self.next_pos[order]])


@dataclass
class Candidates:
    """Everything known about one query's candidates; arrays are aligned on ``ids``.

    ``score`` is the ranking of the chosen method, descending, ties broken by id.
    """

    query: str
    ids: np.ndarray  # (n,) int64
    score: np.ndarray  # (n,)
    vectors: np.ndarray  # (n, d) float32
    query_vector: np.ndarray  # (d,)
    raw: RawScores
    signals: list[dict[str, dict[str, float]]] = field(default_factory=list)

    def top(self, k: int) -> Candidates:
        """The best ``k``, best first (ties by id)."""
        order = np.lexsort((self.ids, -self.score))[:k]
        return Candidates(
            query=self.query,
            ids=self.ids[order],
            score=self.score[order],
            vectors=self.vectors[order],
            query_vector=self.query_vector,
            raw=self.raw.take(order),
            signals=[self.signals[i] for i in order],
        )

    def __len__(self) -> int:
        return len(self.ids)


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


def ranks(scores: np.ndarray, present: np.ndarray) -> np.ndarray:
    """1-based rank among present entries (0 where absent), ties by position."""
    out = np.zeros(len(scores), dtype=np.int64)
    idx = np.flatnonzero(present)
    order = idx[np.argsort(-scores[idx], kind="stable")]
    out[order] = np.arange(1, len(order) + 1)
    return out


class HybridRetriever:
    """Runs the pipeline over a store (lexical and dense search, neighbours, vectors).

    Args:
        store: the memory's store.
        config: fusion settings.
    """

    def __init__(self, store: MemoryStore, config: RetrievalConfig | None = None) -> None:
        self.store = store
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
        # One snapshot for every read (a search that runs outside one still reads consistent
        # data, and the store reads the prefix's turns once for all of them).
        with self.store.reading():
            return self._candidates(query, query_vector, prefix, filters, method, pool, probe, probe_pool)

    def _candidates(
        self, query: str, query_vector: np.ndarray, prefix: ns.Namespace, filters: Filters | None, method: str,
        pool: int | None, probe: np.ndarray | None, probe_pool: int,
    ) -> Candidates:
        cfg = self.config
        pool = pool or cfg.pool
        dim = query_vector.shape[0]
        # Filters narrow the turns scored (and the neighbours taken), never BM25's statistics.
        allowed_set = set(self.store.ids_in(prefix, filters).tolist()) if filters else None
        bm25_all = self.store.lexical(match_terms(query), prefix, filters) if method != "dense" else {}
        bm25_hits = sorted(bm25_all.items(), key=lambda kv: (-kv[1], kv[0]))[:pool]
        dense_ids, _ = self.store.dense(query_vector, pool, prefix, filters) if method != "bm25" else (np.zeros(0, np.int64), None)
        probe_ids: list[int] = []
        if probe is not None and probe_pool > 0 and method == "hybrid":
            probe_ids = [int(i) for i in self.store.dense(probe, probe_pool, prefix, filters)[0]]
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
            empty = np.zeros(0, np.int64)
            return Candidates(
                query, empty, np.zeros(0), np.zeros((0, dim), np.float32), query_vector,
                RawScores(np.zeros(0), np.zeros(0, bool), np.zeros(0), empty, empty),
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
        _, _, _, prev_f, next_f, hybrid = fuse(raw, cfg)
        max_nb = np.maximum(prev_f, next_f)

        score = {"bm25": bm25, "dense": dense, "hybrid": hybrid}[method]
        bm25_rank = ranks(bm25, bm25_present)
        dense_rank = ranks(dense, np.ones(n, dtype=bool))
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
        return Candidates(query, ids, np.asarray(score, dtype=np.float64), vectors, query_vector, raw, signals)
