"""BM25 scored with the statistics of the namespace prefix searched, never of the whole memory.

SQLite FTS5's own ``bm25()`` takes the turn count, the mean turn length and each term's document
frequency over the whole FTS table. One namespace's scores, and so its rankings, would then move
whenever another namespace gained or lost turns, and a benchmark's figures would depend on which
conversations were ingested before. Here FTS5 still holds the postings (term -> turn, position),
read through the ``fts5vocab`` table ``turns_fts_instance``, but the statistics are counted under
the prefix searched: a namespace scores exactly as it would alone in its memory, which is what
FTS5's ``bm25()`` gives a memory that holds nothing else (tested).
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence

# The tokenizer of ``turns_fts`` (migration 001). Lengths and query terms are tokenized with it
# so that they are counted in the FTS index's own tokens.
TOKENIZE = "porter unicode61 remove_diacritics 2"
K1, B = 1.2, 0.75  # FTS5's bm25() constants
_MIN_IDF = 1e-6  # FTS5 clamps the idf of a term in half the turns or more to this


class Tokenizer:
    """FTS5's tokenizer, run in a private in-memory table (SQLite exposes it no other way)."""

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._db.execute(f"CREATE VIRTUAL TABLE scratch USING fts5(text, tokenize='{TOKENIZE}')")
        self._db.execute("CREATE VIRTUAL TABLE scratch_tokens USING fts5vocab(scratch, 'instance')")
        self._lock = threading.Lock()  # one scratch table, shared by the store's threads

    def tokens(self, texts: Sequence[str]) -> list[list[str]]:
        """Each text's tokens in order (stemmed, lower-cased, without diacritics)."""
        out: list[list[str]] = [[] for _ in texts]
        if not texts:
            return out
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT INTO scratch(rowid, text) VALUES (?, ?)", enumerate(texts))
                rows = self._db.execute("SELECT doc, term FROM scratch_tokens ORDER BY doc, offset").fetchall()
            finally:
                self._db.execute("ROLLBACK")  # the scratch table is emptied again
        for doc, term in rows:
            out[doc].append(term)
        return out

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Token counts: the turn lengths BM25 normalises by."""
        return [len(t) for t in self.tokens(texts)]


def idf(turns: float, hits: int) -> float:
    """FTS5's idf: ``log((N - n + 0.5) / (n + 0.5))``, clamped to a small positive value."""
    value = math.log((turns - hits + 0.5) / (hits + 0.5))
    return value if value > 0.0 else _MIN_IDF


def namespaced_terms(tokens: Sequence[str], key: str) -> str:
    """The row of ``turns_nsfts`` for a turn: each token suffixed with ``_`` and its namespace key in hex.

    Hex keeps the byte order of the keys, so the tokens of a term under a prefix ``P`` are the
    terms in ``[term_hex(P), term_hex(P'))`` (:func:`term_range`); ``_`` never occurs in a
    token of the index tokenizer, so one term's range holds no other term.
    """
    suffix = "_" + key.encode("utf-8").hex()
    return " ".join(token + suffix for token in tokens)


def index_namespaced(db: sqlite3.Connection, tokenizer: Tokenizer | None = None) -> int:
    """Write every turn's row of the (empty) ``turns_nsfts`` from the turns; returns the turns indexed.

    Used by the migration that created the table and by the repair that rebuilds it.
    """
    tokenizer = tokenizer or Tokenizer()
    last, done = -1, 0
    while True:
        rows = db.execute("SELECT id, namespace, index_text FROM turns WHERE id > ? ORDER BY id LIMIT 4096", (last,)).fetchall()
        if not rows:
            return done
        tokens = tokenizer.tokens([r[2] for r in rows])
        db.executemany(
            "INSERT INTO turns_nsfts(rowid, terms) VALUES (?, ?)",
            [(r[0], namespaced_terms(t, r[1])) for r, t in zip(rows, tokens)],
        )
        last, done = int(rows[-1][0]), done + len(rows)


def term_range(token: str, low: str, high: str) -> tuple[str, str]:
    """The ``turns_nsfts`` terms of ``token`` in the turns with a namespace key in ``[low, high)``."""
    return f"{token}_{low.encode('utf-8').hex()}", f"{token}_{high.encode('utf-8').hex()}"


LengthsOf = Callable[[Sequence[int]], dict[int, int]]
"""Token counts of turns by id (read once per search from the prefix's turns, or from SQL)."""


def sql_lengths(db: sqlite3.Connection) -> LengthsOf:
    """Turn lengths read from ``turns.n_tokens``."""

    def lengths(ids: Sequence[int]) -> dict[int, int]:
        out: dict[int, int] = {}
        ids = list(ids)
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            out.update(db.execute(f"SELECT id, n_tokens FROM turns WHERE id IN ({marks})", chunk).fetchall())
        return out

    return lengths


def phrase_counts(
    db: sqlite3.Connection, phrase: Sequence[str], low: str, high: str, lengths_of: LengthsOf | None = None
) -> tuple[dict[int, int], dict[int, int]]:
    """``(occurrences per turn, length per turn)`` of a phrase of tokens, for turns under the prefix.

    Under a prefix, the postings come from a term range of ``turns_nsfts``: only the prefix's
    own turns are read. The root prefix (the whole memory) reads ``turns_fts``.
    """
    root = low == ""
    lengths_of = lengths_of or sql_lengths(db)
    if root:
        sql, args = "SELECT doc, offset FROM turns_fts_instance WHERE term = ?", lambda t: (t,)
    else:
        sql, args = "SELECT doc, offset FROM turns_nsfts_instance WHERE term >= ? AND term < ?", lambda t: term_range(t, low, high)
    if len(phrase) == 1:
        grouped = sql.replace("doc, offset", "doc, count(*)") + " GROUP BY doc"
        counts = dict(db.execute(grouped, args(phrase[0])).fetchall())
    else:
        # A phrase (a query word the tokenizer splits, e.g. at "_") occurs where its tokens follow
        # each other, as in FTS5's own phrase matching.
        starts: set[tuple[int, int]] | None = None
        for k, token in enumerate(phrase):
            at = {(doc, offset - k) for doc, offset in db.execute(sql, args(token))}
            starts = at if starts is None else starts & at
        counts = {}
        for doc, _ in sorted(starts or ()):
            counts[doc] = counts.get(doc, 0) + 1
    lengths = lengths_of(list(counts))
    return counts, {d: lengths[d] for d in counts}


def prefix_stats(db: sqlite3.Connection, low: str, high: str) -> tuple[int, int]:
    """``(turns, tokens)`` under the prefix, from the per-namespace counters the triggers keep."""
    turns, tokens = db.execute(
        "SELECT total(turns), total(tokens) FROM namespace_stats WHERE namespace >= ? AND namespace < ?", (low, high)
    ).fetchone()
    return int(turns), int(tokens)


def scores(
    db: sqlite3.Connection, phrases: Iterable[Sequence[str]], low: str, high: str, lengths_of: LengthsOf | None = None
) -> dict[int, float]:
    """BM25 of every turn under ``[low, high)`` that holds at least one phrase (higher is better).

    Each phrase adds ``idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len / avg_len))``, as in
    FTS5; a phrase given twice counts twice, as it does in an FTS5 OR-query.
    """
    turns, tokens = prefix_stats(db, low, high)
    if turns == 0:
        return {}
    avg = tokens / turns
    out: dict[int, float] = {}
    read: dict[tuple[str, ...], tuple[dict[int, int], dict[int, int]]] = {}  # "run" for "runs running"
    for phrase in phrases:
        if not phrase:
            continue
        key = tuple(phrase)
        if key not in read:
            read[key] = phrase_counts(db, phrase, low, high, lengths_of)
        counts, lengths = read[key]
        weight = idf(turns, len(counts))
        for doc, f in counts.items():
            norm = K1 * (1.0 - B + B * lengths[doc] / avg)
            out[doc] = out.get(doc, 0.0) + weight * (f * (K1 + 1.0)) / (f + norm)
    return out
