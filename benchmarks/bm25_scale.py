"""What BM25 per namespace prefix costs against FTS5's table-wide bm25(), as a memory grows.

    python benchmarks/bm25_scale.py [--sizes 10000,100000] [--out benchmarks/results/bm25_scale.json]

Each memory holds namespaces of 200 turns, each turn 5-30 words drawn from a Zipf-like
vocabulary of 20,000 words (so common words are in most namespaces, as in real logs). Queries
of 1-4 words, drawn the same way, go to one namespace. Timed: ``LongTermStore.lexical`` (statistics
of that namespace) and the SQL that the store ran before, FTS5's ``bm25()`` with its statistics
over the whole table, restricted to the namespace by a join. No embedding model is involved:
the vectors are zeros.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.retrieval.text import match_terms
from ctxmem_plugin.storage.base import NewRow
from ctxmem_plugin.storage.sqlite import LongTermStore
from ctxmem_plugin.records import Turn

REPO = Path(__file__).resolve().parents[1]
PER_NAMESPACE = 200


def words(rng: random.Random, vocab: list[str], weights: list[float], n: int) -> str:
    return " ".join(rng.choices(vocab, weights, k=n))


def fill(store: LongTermStore, size: int, rng: random.Random, vocab: list[str], weights: list[float]) -> None:
    vec = np.zeros(4, np.float32)
    for start in range(0, size, PER_NAMESPACE):
        rows = []
        for i in range(min(PER_NAMESPACE, size - start)):
            text = words(rng, vocab, weights, rng.randint(5, 30))
            rows.append(NewRow(Turn(role="user", content=text), f"Ann: {text}", f"h{start + i}", vec))
        with store.transaction():
            store.insert(("u", f"n{start // PER_NAMESPACE}"), rows)


def table_wide(store: LongTermStore, terms: list[str], prefix: ns.Namespace) -> dict[int, float]:
    """The store's query before BM25 per namespace: FTS5 bm25() over the whole table."""
    low, high = ns.prefix_range(prefix)
    expr = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
    rows = store.db.execute(
        "SELECT t.id, -bm25(turns_fts) FROM turns_fts JOIN turns t ON t.id = turns_fts.rowid"
        " WHERE turns_fts MATCH ? AND t.namespace >= ? AND t.namespace < ?", (expr, low, high),
    )
    return {int(i): float(s) for i, s in rows}


def timed(fn, queries: list[tuple[list[str], ns.Namespace]]) -> dict[str, float]:
    lat = []
    for terms, prefix in queries:
        t = time.perf_counter()
        fn(terms, prefix)
        lat.append(time.perf_counter() - t)
    ms = np.array(lat) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "mean_ms": float(ms.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/bm25_scale.json"))
    args = parser.parse_args()
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(20000)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            store = LongTermStore(Path(tmp))
            t = time.perf_counter()
            fill(store, size, rng, vocab, weights)
            fill_s = time.perf_counter() - t
            spaces = (size + PER_NAMESPACE - 1) // PER_NAMESPACE
            queries = [(match_terms(words(rng, vocab, weights, rng.randint(1, 4))), ("u", f"n{rng.randrange(spaces)}"))
                       for _ in range(args.queries)]
            hits = sum(len(store.lexical(q, p)) for q, p in queries) / len(queries)
            row = {
                "turns": size, "namespaces": spaces, "insert_s": round(fill_s, 1), "hits_per_query": round(hits, 1),
                "per_namespace": timed(store.lexical, queries),
                "table_wide_fts5": timed(lambda q, p: table_wide(store, q, p), queries),
            }
            store.close()
        results.append(row)
        print(json.dumps(row))
    Path(args.out).write_text(json.dumps({"per_namespace_turns": PER_NAMESPACE, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
