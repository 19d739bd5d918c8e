"""What only the PostgreSQL store has to prove, against a real server (``conftest.local_postgres``).

The shared suite (test_store, test_memory_api, test_bm25, filters, forget, the crash test)
already runs on PostgreSQL; here: the same search results as the embedded store for the
same data, the HNSW path, many writing processes at once, the BM25 counters, migrations,
what PostgreSQL refuses to store, and the CLI on a ``postgresql://`` location.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ctxmem_plugin.encoders
from ctxmem_plugin.cli import main
from ctxmem_plugin.errors import BackendError, InputError, MemoryNotFoundError
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.retrieval.text import match_terms
from ctxmem_plugin.storage import open_store
from ctxmem_plugin.storage.postgres import PostgresSettings, shown, tsvector_literal
from ctxmem_plugin.storage.postgres_schema import MIGRATIONS

from helpers import REPO, HashEncoder

WORDS = ("dog dogs cat running runs paris café cafe guitar pottery tea coffee chess garden river "
         "snake_case maya Maya it's l'été").split()
QUERIES = ["dog", "running dogs", "café in paris", "snake_case garden", "the", "Maya's cat and the river",
           "runs running run", "zebra", "tea coffee chess pottery guitar", "l'été"]


@pytest.fixture
def pg(local_postgres):
    """A fresh database URL, dropped after the test."""
    url = local_postgres.create_database()
    yield url
    local_postgres.drop_database(url)


def _psql(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def _turns(rng: random.Random, n: int) -> list[dict]:
    return [{"role": rng.choice(["user", "assistant"]), "speaker": rng.choice(["Maya", "Ben"]),
             "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14))),
             "metadata": {"n": i, "tag": rng.choice("abc")}} for i in range(n)]


def test_same_data_same_results_as_the_embedded_store(tmp_path: Path, pg: str, hash_encoder: HashEncoder) -> None:
    """Lexical scores equal to 1e-9, dense and hybrid rankings identical, over prefixes and filters."""
    rng = random.Random(0)
    data = [(space, _turns(rng, 90)) for space in [("alice", "s1"), ("alice", "s2"), ("bob",), ("alicex",)]]
    with ContextMemory(tmp_path / "emb", encoder=hash_encoder) as emb, ContextMemory(pg, encoder=hash_encoder) as pgm:
        for space, turns in data:
            assert emb.add(turns, space) == pgm.add(turns, space)  # the same ids too
        for query in QUERIES:
            for prefix in [(), ("alice",), ("alice", "s2"), ("bob",)]:
                for filters in [None, {"tag": "a"}]:
                    terms = match_terms(query)
                    want = emb.store.lexical(terms, prefix, filters)
                    got = pgm.store.lexical(terms, prefix, filters)
                    assert got.keys() == want.keys(), (query, prefix)
                    for i, s in want.items():
                        assert got[i] == pytest.approx(s, rel=1e-9), (query, prefix, i)
                    for method in ["dense", "hybrid", "bm25"]:
                        a = emb.search(query, prefix, k=15, filters=filters, method=method)
                        b = pgm.search(query, prefix, k=15, filters=filters, method=method)
                        assert [h.id for h in a] == [h.id for h in b], (query, prefix, method)
                        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
        assert any(emb.store.lexical(match_terms(q), ()) for q in QUERIES)


def test_hnsw_search_finds_the_nearest_turns_and_stays_in_its_prefix(pg: str) -> None:
    """Past ``exact_below`` the HNSW index answers: high recall against exact search, never outside the prefix."""
    rng = np.random.default_rng(1)
    with ContextMemory(pg, encoder=HashEncoder()) as mem:
        dim = mem.encoder.dim
        vectors = rng.standard_normal((1200, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        from ctxmem_plugin.records import NewTurn, Turn

        spaces = [("t1", "a"), ("t1", "b"), ("t2",)]
        entries = [NewTurn(spaces[i % 3], Turn(content=f"turn {i}"), vector=vectors[i]) for i in range(len(vectors))]
        ids = np.asarray(mem.write(entries, dedupe=False))
        owner = {int(i): spaces[j % 3] for j, i in enumerate(ids)}
        queries = rng.standard_normal((20, dim)).astype(np.float32)
        exact = {p: [mem.store.dense(q, 10, p) for q in queries] for p in [("t1",), ("t2",)]}
        mem.store.settings = PostgresSettings(exact_below=0)  # every prefix through the index now
        plan = _psql(pg, "EXPLAIN SELECT id FROM ctxmem.turns t ORDER BY (t.vector::vector(%s)) <#> %s::vector(%s) LIMIT 10"
                     % (dim, "'[" + ",".join(["0"] * dim) + "]'", dim))
        assert any(f"turns_vector_{dim}" in row[0] for row in plan)
        found = 0
        for prefix, answers in exact.items():
            for q, (want_ids, _) in zip(queries, answers):
                got_ids, got_scores = mem.store.dense(q, 10, prefix)
                assert len(got_ids) == 10 and all(owner[int(i)][: len(prefix)] == prefix for i in got_ids)
                assert list(got_scores) == sorted(got_scores, reverse=True)
                found += len(set(got_ids.tolist()) & set(want_ids.tolist()))
        assert found / (10 * 2 * len(queries)) >= 0.9


WRITER = r"""
import sys, json
sys.path.insert(0, {tests!r})
from helpers import HashEncoder
from ctxmem_plugin.memory import ContextMemory
me = int(sys.argv[1])
with ContextMemory({url!r}, encoder=HashEncoder()) as mem:
    for round in range(6):
        shared = [{{"content": f"shared fact {{i}}"}} for i in range(round * 5, round * 5 + 5)]
        mem.add(shared, ("team",), dedupe=True)  # every writer adds these: each must be stored once
        mem.add([{{"content": f"writer {{me}} fact {{round}}"}}], ("team", f"w{{me}}"))
        mem.add({{"content": f"writer {{me}} keyed {{round}}", "key": "latest"}}, ("team",))
print(json.dumps("done"))
"""


def test_many_processes_write_one_memory_at_once(pg: str) -> None:
    with ContextMemory(pg, encoder=HashEncoder()):
        pass  # the schema exists before the writers race
    script = WRITER.format(tests=str(Path(__file__).parent), url=pg)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w)], stdout=subprocess.PIPE, text=True) for w in range(4)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    with ContextMemory(pg, encoder=HashEncoder(), read_only=True) as mem:
        team = [t.content for t in mem.list_turns(("team",))]
        shared = [c for c in team if c.startswith("shared")]
        assert sorted(shared) == sorted(f"shared fact {i}" for i in range(30))  # each once
        assert len([t for t in mem.list_turns(("team",)) if t.key == "latest"]) == 1
        for w in range(4):
            assert [t.content for t in mem.list_turns(("team", f"w{w}"))] == [f"writer {w} fact {r}" for r in range(6)]
        counted = dict(mem.namespaces(()))
    assert counted == {space: n for space, n in _counts(pg).items()}


def _counts(url: str) -> dict[tuple[str, ...], int]:
    from ctxmem_plugin.namespaces import from_key

    return {from_key(ns): int(n) for ns, n in _psql(url, "SELECT namespace, count(*) FROM ctxmem.turns GROUP BY namespace")}


def test_bm25_counters_follow_every_write(pg: str, hash_encoder: HashEncoder) -> None:
    rng = random.Random(3)
    with ContextMemory(pg, encoder=hash_encoder) as mem:
        ids = mem.add(_turns(rng, 40), ("x",)) + mem.add(_turns(rng, 30), ("y", "z")) + mem.add(_turns(rng, 5), ("y",))
        mem.add({"content": "first version of a fact", "key": "k"}, ("x",))
        mem.add({"content": "the second, longer version of the same fact", "key": "k"}, ("x",))
        mem.delete(ids[:7])
        mem.forget(("y", "z"))
        tokens = {t.id: len(mem.store.tokenizer.tokens([t_text])[0])
                  for t, t_text in ((t, _index_text(t)) for t in mem.list_turns(()))}
    kept = _psql(pg, "SELECT tenant, namespace, turns, tokens FROM ctxmem.namespace_stats ORDER BY namespace")
    want = _psql(pg, "SELECT tenant, namespace, count(*), sum(n_tokens) FROM ctxmem.turns GROUP BY tenant, namespace ORDER BY namespace")
    assert kept == want and [r[1] for r in want] == ["x/", "y/"]
    assert dict(_psql(pg, "SELECT id, n_tokens FROM ctxmem.turns")) == tokens


def _index_text(turn) -> str:
    from ctxmem_plugin.records import Turn
    from ctxmem_plugin.retrieval.text import index_text

    return index_text(Turn(role=turn.role, content=turn.content, speaker=turn.speaker, timestamp=turn.timestamp, metadata=turn.metadata))


def test_tsvector_keeps_the_tokens_and_their_positions(pg: str) -> None:
    tokens = ["it", "s", "l", "été", "o'neil", "back\\slash", "run", "it"]
    literal = tsvector_literal(tokens)
    rows = _psql(pg, "SELECT lexeme, positions FROM unnest(%s::tsvector) ORDER BY lexeme", (literal,))
    assert rows == sorted([("it", [1, 8]), ("s", [2]), ("l", [3]), ("été", [4]), ("o'neil", [5]), ("back\\slash", [6]), ("run", [7])])


def test_migrations_are_named_ordered_and_applied_once(pg: str) -> None:
    def open_close() -> None:
        open_store(pg).close()

    threads = [threading.Thread(target=open_close) for _ in range(4)]  # front ends starting together
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = _psql(pg, "SELECT version, name FROM ctxmem.migrations ORDER BY version")
    assert rows == [(i, name) for i, (name, _) in enumerate(MIGRATIONS, start=1)]
    store = open_store(pg, read_only=True)
    try:
        assert store.schema_version == len(MIGRATIONS) and store.count() == 0
        with pytest.raises(InputError, match="read-only"):
            with store.transaction():
                pass
    finally:
        store.close()


def test_what_postgres_cannot_store_is_refused_whole(pg: str, hash_encoder: HashEncoder) -> None:
    with ContextMemory(pg, encoder=hash_encoder) as mem:
        mem.add({"content": "kept"}, ("u",))
        with pytest.raises(InputError, match="NUL character"):
            mem.add([{"content": "fine"}, {"content": "bad \x00 byte"}], ("u",))
        with pytest.raises(InputError, match="not a JSON number"):  # refused before any backend sees it
            mem.add({"content": "x", "metadata": {"w": float("nan")}}, ("u",))
        with pytest.raises(InputError, match="not a list or an object"):
            mem.list_turns(("u",), {"place": {"$gt": {"a": 1}}})
        assert [t.content for t in mem.list_turns(())] == ["kept"]


def test_locations_and_unreachable_servers_give_clear_errors(tmp_path: Path, pg: str, hash_encoder: HashEncoder) -> None:
    with pytest.raises(InputError, match="no store serves ftp://"):
        ContextMemory("ftp://host/x", encoder=hash_encoder)
    with pytest.raises(BackendError, match="cannot open the database"):
        ContextMemory(f"postgresql://postgres@/nodb?host={tmp_path}", encoder=hash_encoder)
    with pytest.raises(MemoryNotFoundError, match="no ctxmem schema"):
        ContextMemory(pg, encoder=hash_encoder, read_only=True)
    assert shown("postgresql://me:s3cret@db.example/mem") == "postgresql://me:***@db.example/mem"


def test_cli_works_on_a_postgresql_location(pg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = HashEncoder()
    monkeypatch.setattr(ctxmem_plugin.encoders, "SentenceEncoder", lambda model=None, **_: encoder)

    def cli(*args: str) -> str:
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    logs = REPO / "examples" / "chat_logs"
    first = json.loads(cli("ingest", str(logs), "--memory", pg, "--namespace", "maya", "--json"))
    again = json.loads(cli("ingest", str(logs), "--memory", pg, "--namespace", "maya", "--json"))
    assert first["added"] > 0 and (again["added"], again["duplicates"]) == (0, first["turns"])
    hits = json.loads(cli("query", "dog", "--memory", pg, "--namespace", "maya", "--json"))
    assert hits and all(h["namespace"] == "maya" for h in hits)
    stats = json.loads(cli("stats", "--memory", pg, "--json"))
    assert stats["turns"] == first["added"] and stats["files"]["turns"] > 0 and stats["path"].startswith("postgresql://")
    cli("export", "--memory", pg, str(tmp_path / "out.jsonl"))
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == first["added"]
    assert "forgot" in cli("forget", "--memory", pg, "--namespace", "maya", "--yes")
    assert json.loads(cli("stats", "--memory", pg, "--json"))["turns"] == 0


def test_the_test_server_creates_and_drops_databases(local_postgres) -> None:
    url = local_postgres.create_database("scratch")
    name = local_postgres.name_of(url)
    listed = lambda: {r[0] for r in _psql(local_postgres.url, "SELECT datname FROM pg_database")}  # noqa: E731
    assert name in listed() and url.startswith("postgresql://")
    local_postgres.drop_database(url)
    assert name not in listed()
