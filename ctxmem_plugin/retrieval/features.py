"""The re-ranker's per-candidate features: what the trained scorer sees besides the slots.

Computed only when a model re-ranks (plain ``bm25``/``dense``/``hybrid`` search never builds
them), from the raw scores the candidates carry and the candidates' stored rows. Column 0 is the
hybrid score: an untrained scorer returns it unchanged.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ctxmem_plugin.records import StoredTurn
from ctxmem_plugin.retrieval.hybrid import Candidates, RawScores, RetrievalConfig, fuse, ranks
from ctxmem_plugin.retrieval.text import query_terms

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


def candidate_features(cands: Candidates, rows: Mapping[int, StoredTurn], config: RetrievalConfig) -> np.ndarray:
    """``(n, len(FEATURE_NAMES))`` float32 features of the candidates, columns :data:`FEATURE_NAMES`.

    Args:
        cands: candidates from :meth:`HybridRetriever.candidates` (they carry their raw scores).
        rows: every candidate's stored turn, by id.
        config: the retrieval settings the candidates were fused with.
    """
    n = len(cands)
    if n == 0:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    raw = cands.raw
    bm25_norm, dense_norm, fused, prev_f, next_f, hybrid = fuse(raw, config)
    max_nb = np.maximum(prev_f, next_f)
    return _features(cands.query, cands.ids, rows, raw, bm25_norm, raw.bm25_present, raw.dense, dense_norm, fused,
                     prev_f, next_f, max_nb, hybrid)


def _features(
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
    hyb_rank = ranks(hybrid, np.ones(n, dtype=bool))
    dense_rank = ranks(dense, np.ones(n, dtype=bool))
    id_rank = ranks(-ids.astype(np.float64), np.ones(n, dtype=bool))
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
