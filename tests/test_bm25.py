"""BM25 per namespace prefix: FTS5's own scores for a namespace alone, untouched by other namespaces."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from ctxmem_plugin.storage.bm25 import TOKENIZE, Tokenizer
from ctxmem_plugin.errors import CtxMemError
from ctxmem_plugin.retrieval.text import match_terms
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.storage.schema import MIGRATIONS
from ctxmem_plugin.namespaces import to_key
from ctxmem_plugin.storage.sqlite import DB_NAME, LongTermStore

from helpers import HashEncoder

WORDS = ("dog dogs cat running runs paris café cafe guitar pottery tea coffee chess garden river "
         "snake_case maya Maya").split()
QUERIES = ["dog", "running dogs", "café in paris", "snake_case garden", "the", "Maya's cat and the river",
           "runs running run", "zebra", "tea coffee chess pottery guitar"]


def _turns(rng: random.Random, n: int) -> list[dict]:
    return [{"role": "user", "speaker": rng.choice(["Maya", "Ben"]),
             "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))} for _ in range(n)]


def _fts5(db: sqlite3.Connection, query: str) -> dict[int, float]:
    """SQLite FTS5's own bm25(): statistics over the whole table."""
    expr = " OR ".join('"' + t.replace('"', '""') + '"' for t in match_terms(query))
    rows = db.execute("SELECT rowid, -bm25(turns_fts) FROM turns_fts WHERE turns_fts MATCH ?", (expr,))
    return {int(i): float(s) for i, s in rows}


def test_a_namespace_alone_scores_as_fts5(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    rng = random.Random(0)
    with ContextMemory(tmp_path, encoder=hash_encoder) as mem:
        mem.add(_turns(rng, 120), ("u",))
        for query in QUERIES:
            ours = mem.store.lexical(match_terms(query), ("u",))
            want = _fts5(mem.store.db, query)
            assert ours.keys() == want.keys(), query
            for i, s in want.items():
                assert ours[i] == pytest.approx(s, rel=1e-12, abs=1e-12), (query, i)
        assert _fts5(mem.store.db, "runs running run")  # the stems meet: the query is not vacuous


def test_other_namespaces_never_move_a_namespace_scores(backend: str, new_location, hash_encoder: HashEncoder) -> None:
    """On both backends: another tenant's turns (added before, after, then forgotten) change no score."""
    rng = random.Random(1)
    mine, theirs = _turns(rng, 80), _turns(rng, 300)
    with ContextMemory(new_location("alone"), encoder=hash_encoder) as mem:
        mem.add(mine, ("alice", "s1"))
        alone = {q: mem.store.lexical(match_terms(q), ("alice",)) for q in QUERIES}
    with ContextMemory(new_location("shared"), encoder=hash_encoder) as mem:
        mem.add(theirs[:150], ("bob",))  # before, after, and then gone again
        mem.add(mine, ("alice", "s1"))
        mem.add(theirs[150:], ("alicex",))  # a key range next to alice's, outside its prefix
        offset = mem.list_turns(("alice",))[0].id - 1  # the same turns under other ids
        shared = {q: mem.store.lexical(match_terms(q), ("alice",)) for q in QUERIES}
        assert shared["dog"]
        if backend == "embedded":
            table_wide = _fts5(mem.store.db, "dog")  # what FTS5's bm25() gives the same turns
            assert any(abs(table_wide[i] - s) > 1e-6 for i, s in shared["dog"].items())
        mem.forget(("bob",))
        mem.forget(("alicex",))
        after = {q: mem.store.lexical(match_terms(q), ("alice",)) for q in QUERIES}
    for q in QUERIES:
        assert {i - offset: s for i, s in shared[q].items()} == pytest.approx(alone[q], rel=1e-12), q
        assert after[q] == pytest.approx(shared[q], rel=1e-12), q


def test_prefix_statistics_span_the_namespaces_under_it(new_location, hash_encoder: HashEncoder) -> None:
    rng = random.Random(2)
    a, b = _turns(rng, 50), _turns(rng, 70)
    with ContextMemory(new_location("two"), encoder=hash_encoder) as mem:
        mem.add(a, ("team", "a"))
        mem.add(b, ("team", "b"))
        two = mem.store.lexical(match_terms("running dogs"), ("team",))
        only_a = mem.store.lexical(match_terms("running dogs"), ("team", "a"))
    with ContextMemory(new_location("one"), encoder=hash_encoder) as mem:
        mem.add(a + b, ("team",))
        one = mem.store.lexical(match_terms("running dogs"), ("team",))
    assert two == pytest.approx(one, rel=1e-12)
    assert set(only_a) < set(two) and any(only_a[i] != two[i] for i in only_a)


def test_namespace_counters_follow_every_write(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    rng = random.Random(3)
    with ContextMemory(tmp_path, encoder=hash_encoder) as mem:
        ids = mem.add(_turns(rng, 40), ("x",)) + mem.add(_turns(rng, 30), ("y", "z"))
        mem.add({"role": "user", "content": "first version of a fact", "key": "k"}, ("x",))
        mem.add({"role": "user", "content": "the second, longer version of the same fact", "key": "k"}, ("x",))
        mem.delete(ids[:7])
        mem.forget(("y",))
        db = mem.store.db
        kept = db.execute("SELECT namespace, turns, tokens FROM namespace_stats ORDER BY namespace").fetchall()
        want = db.execute("SELECT namespace, count(*), sum(n_tokens) FROM turns GROUP BY namespace ORDER BY namespace").fetchall()
        assert [tuple(r) for r in kept] == [tuple(r) for r in want] and len(want) == 1
        lengths = dict(db.execute("SELECT doc, count(*) FROM turns_fts_instance GROUP BY doc").fetchall())
        stored = dict(db.execute("SELECT id, n_tokens FROM turns").fetchall())
        assert stored == lengths  # the tokenizer counts as the FTS index does


def test_tokenizer_stems_and_folds_as_the_index_does() -> None:
    assert Tokenizer().tokens(["Running dogs", "café", "snake_case", ""]) == [["run", "dog"], ["cafe"], ["snake", "case"], []]


def _schema_one(path: Path, turns: list[tuple[str, str]]) -> None:
    """A memory as ctxmem-plugin wrote it before migration 002."""
    path.mkdir()
    db = sqlite3.connect(path / DB_NAME, isolation_level=None)
    db.execute("BEGIN")
    MIGRATIONS[0][1](db)
    for namespace, text in turns:
        db.execute(
            "INSERT INTO turns(namespace, role, content, index_text, created_at, updated_at, content_hash, vector)"
            " VALUES (?, 'user', ?, ?, 0, 0, ?, x'00')", (to_key((namespace,)), text, text, text),
        )
    db.execute("PRAGMA user_version = 1")
    db.execute("COMMIT")
    db.close()


def test_migration_counts_the_turns_already_stored(tmp_path: Path) -> None:
    rng = random.Random(4)
    turns = [(rng.choice(["a", "b"]), " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9)))) for _ in range(60)]
    _schema_one(tmp_path / "old", turns)
    with pytest.raises(CtxMemError, match=r"schema version 1 predates .*ctxmem-plugin upgrade --memory DIR"):
        LongTermStore(tmp_path / "old", read_only=True)
    store = LongTermStore(tmp_path / "old")
    try:
        lengths = dict(store.db.execute("SELECT id, n_tokens FROM turns ORDER BY id").fetchall())
        assert list(lengths.values()) == store.tokenizer.lengths([t for _, t in turns])
        stats = {ns: (n, tok) for ns, n, tok in store.db.execute("SELECT * FROM namespace_stats")}
        for space in ("a", "b"):
            own = [i for i, (s, _) in enumerate(turns, start=1) if s == space]
            assert stats[to_key((space,))] == (len(own), sum(lengths[i] for i in own))
        assert store.lexical(["dog"], ("a",))  # scores come from the migrated counters
    finally:
        store.close()


def test_lengths_and_queries_use_the_index_tokenizer(tmp_path: Path) -> None:
    store = LongTermStore(tmp_path)
    try:
        (sql,) = store.db.execute("SELECT sql FROM sqlite_master WHERE name = 'turns_fts'").fetchone()
    finally:
        store.close()
    assert f"tokenize='{TOKENIZE}'" in sql
