"""The approximate index for large prefixes: an inverted file (IVF) kept inside SQLite.

A prefix of more than ``IndexConfig.exact_limit`` turns is too large to score every vector of
each time. Its vectors are grouped into cells around centroids trained by k-means (FAISS), and
a search scores only the turns of the cells nearest the query, read from SQLite in the search's
snapshot. The cell of each turn is a row of ``ann_cells`` keyed ``(cell, namespace, id)``, so a
cell's turns under a prefix are one index range, whatever the rest of the memory holds.

Living in SQLite, the index is written in the transaction that writes the turns: nothing to
load when a memory is opened, nothing to save when it is closed, nothing to catch up after a
crash or after another process wrote, and a deleted turn leaves its cell in the same
transaction (a trigger). The centroids are trained when the memory first holds ``exact_limit``
turns, and again, with more cells, each time it has grown ``retrain_growth`` times.

Probing is adaptive: cells are read nearest first until at least ``nprobe`` cells and at least
``min_scored`` (and ``k``) turns of the prefix were scored, so a prefix that fills only part of
each cell probes more cells. The defaults keep recall@10 against exact search at or above 0.95
on MiniLM embeddings of real conversation turns (``benchmarks/scale.py`` measures it).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ctxmem_plugin.config import Config, bounded
from ctxmem_plugin.storage import vectors as flat

_SQL_VARS = 900  # stay under SQLite's bound-parameter limit in IN (...) lists


@dataclass(frozen=True)
class IndexConfig(Config):
    """How dense search is done; a setting of the process, not of the memory (any value reads any memory).

    Attributes:
        exact_limit: a prefix of at most this many turns is searched exactly, from its own
            vectors; above it, through the approximate index (trained once the memory holds
            this many turns).
        nprobe: cells probed at least, nearest first.
        min_scored: turns of the prefix scored at least (more cells are probed until then).
        cells_per_sqrt: cells trained = this times the square root of the turns held.
        retrain_growth: retrain the cells when the memory has grown this many times since.
        train_iterations: k-means iterations.
    """

    exact_limit: int = bounded(20_000, low=1, high=10**12)
    nprobe: int = bounded(48, low=1, high=1_000_000)
    min_scored: int = bounded(4_000, low=1, high=10**9)
    cells_per_sqrt: float = bounded(4.0, low=0.01, high=1000.0)
    retrain_growth: float = bounded(4.0, low=1.5, high=1000.0)
    train_iterations: int = bounded(10, low=1, high=1000)


@dataclass(frozen=True)
class Centroids:
    """Trained cell centroids: ``vectors`` (nlist, d), unit length; ``trained_on`` turns at training."""

    version: int
    vectors: np.ndarray
    trained_on: int


def cell_count(turns: int, config: IndexConfig) -> int:
    """How many cells to train for a memory of ``turns`` (at most one per 8 turns)."""
    return max(1, min(int(config.cells_per_sqrt * math.sqrt(turns)), turns // 8, 65_536))


class AnnIndex:
    """The IVF index of one store: training, cell assignment on write, probing search.

    Args:
        config: the process's index settings.
    """

    def __init__(self, config: IndexConfig) -> None:
        self.config = config
        self._cached: Centroids | None = None

    # -- centroids -----------------------------------------------------------------------

    def centroids(self, db: sqlite3.Connection) -> Centroids | None:
        """The current centroids, or None when the index is not trained (read in the caller's snapshot)."""
        row = db.execute("SELECT version FROM ann_centroids ORDER BY version DESC LIMIT 1").fetchone()
        if row is None:
            return None
        if self._cached is None or self._cached.version != row[0]:
            version, nlist, dim, trained_on, blob = db.execute(
                "SELECT version, nlist, dim, trained_on, centroids FROM ann_centroids WHERE version = ?", (row[0],)
            ).fetchone()
            vecs = np.frombuffer(blob, dtype=np.float32).reshape(nlist, dim)
            self._cached = Centroids(int(version), vecs, int(trained_on))
        return self._cached

    def needs_training(self, db: sqlite3.Connection, turns: int) -> bool:
        """Whether a memory of ``turns`` turns should (re)train its cells now."""
        if turns < self.config.exact_limit:
            return False
        current = self.centroids(db)
        return current is None or turns >= self.config.retrain_growth * current.trained_on

    def drop(self, db: sqlite3.Connection) -> None:
        """Forget the centroids and every cell (the vectors changed; inside a write transaction)."""
        db.execute("DELETE FROM ann_cells")
        db.execute("DELETE FROM ann_centroids")
        self._cached = None

    def train(self, db: sqlite3.Connection, dim: int, decode: str) -> int:
        """Train centroids on a sample of the stored vectors and put every turn in its cell.

        Inside a write transaction. Returns the number of cells. Deterministic: the sample is
        evenly spaced in id order and k-means is seeded.
        """
        faiss = flat.import_faiss()
        ids = np.fromiter((r[0] for r in db.execute("SELECT id FROM turns ORDER BY id")), dtype=np.int64)
        nlist = cell_count(len(ids), self.config)
        sample_size = min(len(ids), 40 * nlist)
        take = ids[np.linspace(0, len(ids) - 1, sample_size).astype(np.int64)] if sample_size else ids
        sample = _vectors(db, take.tolist(), dim, decode)  # (s, d)
        kmeans = faiss.Kmeans(
            dim, nlist, niter=self.config.train_iterations, seed=1234, spherical=True, gpu=flat.gpus() > 0,
            max_points_per_centroid=40, verbose=False,
            # Only silences faiss's "please provide at least 39 points per centroid" line on
            # stderr (it changes nothing else): a memory trains on the turns it has.
            min_points_per_centroid=1,
        )
        with flat.one_thread():  # on a shared machine, idle OpenMP threads cost more than they give
            kmeans.train(np.ascontiguousarray(sample, dtype=np.float32))
        cents = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)  # (nlist, d)
        version = int(db.execute("SELECT coalesce(max(version), 0) + 1 FROM ann_centroids").fetchone()[0])
        db.execute("DELETE FROM ann_centroids")
        db.execute("DELETE FROM ann_cells")
        db.execute(
            "INSERT INTO ann_centroids(version, nlist, dim, trained_on, centroids) VALUES (?,?,?,?,?)",
            (version, nlist, dim, len(ids), cents.tobytes()),
        )
        self._cached = Centroids(version, cents, len(ids))
        last = -1
        while True:
            rows = db.execute(
                "SELECT id, namespace, vector FROM turns WHERE id > ? ORDER BY id LIMIT 16384", (last,)
            ).fetchall()
            if not rows:
                break
            vecs = _decode([r[2] for r in rows], dim, decode)
            self._insert_cells(db, [r[0] for r in rows], [r[1] for r in rows], vecs, cents)
            last = int(rows[-1][0])
        return nlist

    # -- writes ----------------------------------------------------------------------------

    def assign(self, db: sqlite3.Connection, ids: Sequence[int], keys: Sequence[str], vectors: np.ndarray) -> None:
        """Put new turns in their cells (inside their write transaction); nothing before training."""
        if not len(ids):
            return
        current = self.centroids(db)
        if current is not None and current.vectors.shape[1] == vectors.shape[1]:
            self._insert_cells(db, ids, keys, vectors, current.vectors)

    @staticmethod
    def _insert_cells(db: sqlite3.Connection, ids: Sequence[int], keys: Sequence[str], vectors: np.ndarray, cents: np.ndarray) -> None:
        cell = flat.nearest(vectors, cents)  # (n,)
        db.executemany(
            "INSERT INTO ann_cells(cell, namespace, id) VALUES (?,?,?)",
            zip(cell.tolist(), keys, (int(i) for i in ids)),
        )

    # -- search ------------------------------------------------------------------------------

    def search(
        self, db: sqlite3.Connection, query: np.ndarray, k: int, low: str, high: str, cond: str, params: Sequence[object],
        dim: int, decode: str,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Approximate top ``k`` under ``[low, high)`` matching ``cond`` (over ``turns t``); None if untrained."""
        current = self.centroids(db)
        if current is None or current.vectors.shape[1] != dim:
            return None
        cents = current.vectors
        order = np.argsort(-flat.scores(query, cents), kind="stable")  # cells, nearest first
        want = max(self.config.min_scored, k)
        got_ids: list[np.ndarray] = []
        got_vecs: list[np.ndarray] = []
        scored = probed = 0
        step = min(self.config.nprobe, len(order))
        while probed < len(order):
            cells = order[probed : probed + step].tolist()
            probed += len(cells)
            for part in range(0, len(cells), _SQL_VARS):
                chunk = cells[part : part + _SQL_VARS]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT t.id, t.vector FROM ann_cells a CROSS JOIN turns t ON t.id = a.id"
                    f" WHERE a.cell IN ({marks}) AND a.namespace >= ? AND a.namespace < ? AND {cond}",
                    (*chunk, low, high, *params),
                ).fetchall()
                if rows:
                    got_ids.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
                    got_vecs.append(_decode([r[1] for r in rows], dim, decode))
                    scored += len(rows)
            if probed >= self.config.nprobe and scored >= want:
                break
            step = probed  # double the cells probed
        if not got_ids:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return flat.top_k(query, np.concatenate(got_vecs), np.concatenate(got_ids), k)


def _decode(blobs: Sequence[bytes], dim: int, decode: str) -> np.ndarray:
    raw = np.frombuffer(b"".join(blobs), dtype=np.dtype(decode)).reshape(len(blobs), dim)
    return raw.astype(np.float32, copy=decode != "float32")


def _vectors(db: sqlite3.Connection, ids: list[int], dim: int, decode: str) -> np.ndarray:
    out = []
    for start in range(0, len(ids), _SQL_VARS):
        chunk = ids[start : start + _SQL_VARS]
        marks = ",".join("?" * len(chunk))
        out += [r[0] for r in db.execute(f"SELECT vector FROM turns WHERE id IN ({marks})", chunk)]
    return _decode(out, dim, decode) if out else np.zeros((0, dim), np.float32)
