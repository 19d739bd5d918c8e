"""Properties of the long-term store, on both backends: exact dense search, persistence, isolation, deletion.

Every test taking ``location`` runs twice: on an embedded memory (a directory) and on a fresh
database of a real PostgreSQL server started for the session (``conftest.local_postgres``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ctxmem_plugin.errors import InputError, MemoryNotFoundError, ModelMismatchError, NamespaceError
from ctxmem_plugin.filters import matches
from ctxmem_plugin.memory import ContextMemory

from helpers import HashEncoder

WORDS = "dog cat paris guitar pottery lisbon tea coffee running chess garden bakery violin river".split()


def random_turns(rng: random.Random, n: int) -> list[dict]:
    return [
        {
            "role": rng.choice(["user", "assistant"]),
            "speaker": rng.choice(["Ana", "Ben", "Cy"]),
            "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))),
            "metadata": {"n": i, "tag": rng.choice(["a", "b", "c"])},
        }
        for i in range(n)
    ]


def test_dense_search_equals_bruteforce(location, hash_encoder: HashEncoder) -> None:
    rng = random.Random(0)
    with ContextMemory(location, encoder=hash_encoder) as mem:
        ids = []
        for space in [("u1",), ("u1", "s2"), ("u2",)]:
            ids += [(i, space) for i in mem.add(random_turns(rng, 80), space)]
        for trial in range(20):
            query = " ".join(rng.choice(WORDS) for _ in range(3))
            prefix = rng.choice([(), ("u1",), ("u1", "s2"), ("u2",)])
            hits = mem.search(query, prefix, k=10, method="dense")
            allowed = [i for i, s in ids if s[: len(prefix)] == prefix]
            vecs = mem.store.vectors(allowed, hash_encoder.dim)
            scores = vecs @ hash_encoder.encode_query(query)
            order = np.lexsort((np.asarray(allowed), -scores))[:10]
            assert [h.id for h in hits] == [allowed[j] for j in order]
            assert np.allclose([h.score for h in hits], scores[order], atol=1e-5)


def test_hybrid_is_deterministic(location, hash_encoder: HashEncoder) -> None:
    rng = random.Random(1)
    with ContextMemory(location, encoder=hash_encoder) as mem:
        mem.add(random_turns(rng, 150), ("u",))
        first = [(h.id, h.score) for h in mem.search("dog paris tea", ("u",), k=20)]
        for _ in range(3):
            assert [(h.id, h.score) for h in mem.search("dog paris tea", ("u",), k=20)] == first
    with ContextMemory(location, encoder=hash_encoder) as mem:
        assert [(h.id, h.score) for h in mem.search("dog paris tea", ("u",), k=20)] == first


def test_reopen_gives_identical_results(location, hash_encoder: HashEncoder) -> None:
    rng = random.Random(2)
    queries = ["guitar river", "chess garden tea", "lisbon bakery"]
    with ContextMemory(location, encoder=hash_encoder) as mem:
        mem.add(random_turns(rng, 200), ("u",))
        assert mem.delete([3, 4, 5]) == [3, 4, 5]
        before = {q: [(h.id, round(h.score, 6)) for h in mem.search(q, ("u",), k=10)] for q in queries}
        count = mem.stats()["turns"]
    assert count == 197
    with ContextMemory(location, encoder=hash_encoder) as mem:
        assert mem.stats()["turns"] == count
        assert {q: [(h.id, round(h.score, 6)) for h in mem.search(q, ("u",), k=10)] for q in queries} == before


def test_the_index_files_of_earlier_versions_are_retired(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    """Embedded store only: the whole-memory FAISS files of earlier versions are removed on open."""
    rng = random.Random(2)
    queries = ["guitar river", "chess garden tea", "lisbon bakery"]
    with ContextMemory(tmp_path, encoder=hash_encoder) as mem:
        mem.add(random_turns(rng, 200), ("u",))
        mem.delete([3, 4, 5])
        before = {q: [(h.id, round(h.score, 6)) for h in mem.search(q, ("u",), k=10)] for q in queries}
        count = mem.stats()["turns"]
    # The whole-memory FAISS files of earlier versions: derived data nothing reads now, removed on open.
    (tmp_path / "vectors.faiss").write_bytes(b"old index")
    (tmp_path / "vectors.json").write_text("{}")
    with ContextMemory(tmp_path, encoder=hash_encoder) as mem:
        assert mem.stats()["turns"] == count
        assert {q: [(h.id, round(h.score, 6)) for h in mem.search(q, ("u",), k=10)] for q in queries} == before
    assert not (tmp_path / "vectors.faiss").exists() and not (tmp_path / "vectors.json").exists()
    with ContextMemory(tmp_path, encoder=hash_encoder, read_only=True) as mem:
        assert {q: [(h.id, round(h.score, 6)) for h in mem.search(q, ("u",), k=10)] for q in queries} == before


def test_isolation_randomized(location, hash_encoder: HashEncoder) -> None:
    rng = random.Random(3)
    spaces = [("alice",), ("alice", "s1"), ("alice", "s2"), ("alicex",), ("bob",), ("bob", "alice"), ("al",)]
    owner: dict[int, tuple[str, ...]] = {}
    with ContextMemory(location, encoder=hash_encoder) as mem:
        for space in spaces:
            for i in mem.add(random_turns(rng, 40), space):
                owner[i] = space
        for _ in range(60):
            prefix = rng.choice(spaces)
            method = rng.choice(["hybrid", "bm25", "dense"])
            filters = rng.choice([None, {"tag": "a"}, {"n": {"$lt": 10}}])
            query = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
            hits = mem.search(query, prefix, k=rng.choice([1, 10, 100]), filters=filters, method=method)
            for h in hits:
                assert owner[h.id][: len(prefix)] == prefix, (prefix, owner[h.id])
                assert h.namespace == owner[h.id]
                assert matches(filters, h.metadata)
            listed = mem.list_turns(prefix)
            assert {t.id for t in listed} == {i for i, s in owner.items() if s[: len(prefix)] == prefix}
            assert dict(mem.namespaces(prefix)) == {s: 40 for s in spaces if s[: len(prefix)] == prefix}


@pytest.mark.parametrize("bad", [(), ("a/b",), ("",), ("ok", " "), "a//b"])
def test_bad_namespaces_rejected(location, hash_encoder: HashEncoder, bad) -> None:
    with ContextMemory(location, encoder=hash_encoder) as mem, pytest.raises(NamespaceError):
        mem.add({"role": "user", "content": "hi"}, bad)


FILTER_CASES = [
    {"tag": "a"}, {"tag": {"$ne": "a"}}, {"n": {"$gte": 10, "$lt": 20}}, {"n": {"$gt": 50}},
    {"n": {"$lte": 3}}, {"tag": {"$in": ["b", "c"]}}, {"missing": {"$ne": 1}}, {"missing": 1},
    {"speaker": "Ana", "tag": {"$eq": "b"}}, {"speaker": {"$in": ["Ben", "Cy"]}}, {"speaker": {"$ne": "Ana"}},
    {"role": {"$gt": "b"}}, {"tag": {"$gte": "b"}}, {"w": {"$lt": 0.5}}, {"w": {"$gte": 0.25, "$lte": 0.75}},
    {"flag": True}, {"flag": {"$ne": False}}, {"flag": 1}, {"opt": None}, {"opt": {"$ne": None}},
    {"opt": {"$gt": 2}}, {"place.city": "Lisbon"}, {"place.city": {"$in": ["Paris", "Oslo"]}},
    {"place": {"city": "Lisbon", "zip": 1}}, {"tags": ["x", "y"]},
    {"n": {"$in": [1, 2.0, 30]}}, {"name": {"$gt": "émile"}}, {"name": "Zoë"}, {"n": {"$lt": -1}},
]


def _filter_rows(rng: random.Random, n: int) -> list[dict]:
    rows = random_turns(rng, n)
    for i, row in enumerate(rows):
        meta = row["metadata"]
        meta["w"] = rng.random()
        if i % 3:
            meta["flag"] = rng.choice([True, False])
        meta["opt"] = rng.choice([None, 1, 3])
        if i % 4 == 0:
            meta["place"] = {"city": rng.choice(["Lisbon", "Paris", "Oslo"]), "zip": rng.choice([1, 2])}
        if i % 5 == 0:
            meta["tags"] = rng.choice([["x", "y"], ["y", "x"], ["x"]])
        meta["name"] = rng.choice(["Zoë", "émile", "Emil", "zed", "Ästa"])
    return rows


def test_filters_match_reference(location, hash_encoder: HashEncoder) -> None:
    """Every backend's SQL gives what :func:`filters.matches` (the Python reference) gives."""
    rng = random.Random(4)
    with ContextMemory(location, encoder=hash_encoder) as mem:
        mem.add(_filter_rows(rng, 80), ("u",))
        mem.add(_filter_rows(rng, 10), ("other",))  # never returned under ("u",)
        stored = mem.list_turns(("u",))
        for filters in FILTER_CASES:
            got = {t.id for t in mem.list_turns(("u",), filters)}
            want = {t.id for t in stored if matches(filters, {**t.metadata, "speaker": t.speaker, "role": t.role})}
            assert got == want, filters
            assert set(mem.store.ids_in(("u",), filters).tolist()) == want, filters
            hits = mem.search("dog tea chess", ("u",), k=100, filters=filters)
            assert {h.id for h in hits} <= want, filters
        assert any(mem.list_turns(("u",), f) for f in FILTER_CASES[15:])  # the new cases are not vacuous
        with pytest.raises(InputError):
            mem.list_turns(("u",), {"n": {"$like": 1}})
        with pytest.raises(InputError):
            mem.list_turns(("u",), {"x') OR 1=1 --": 1})
        with pytest.raises(InputError):
            mem.list_turns(("u",), {"n": {"$in": []}})


def test_forget_removes_rows_and_slot_states(location, hash_encoder: HashEncoder) -> None:
    secret = "xylophonesecretword"
    with ContextMemory(location, encoder=hash_encoder) as mem:
        mem.add([{"role": "user", "content": f"my password hint is {secret} {i}"} for i in range(50)], ("victim",))
        mem.add([{"role": "user", "content": f"a note of the victim's sub-session {secret}"}], ("victim", "s1"))
        kept = mem.add([{"role": "user", "content": "unrelated note about tea"}], ("other",))
        with mem.store.transaction():
            for space in [("victim",), ("victim", "s1"), ("other",)]:
                mem.store.put_slot_state(space, "model", 1, 1, b"\x00" * 8)
        mem.flush()
        assert mem.forget(("victim",)) == 51
        assert all(h.namespace == ("other",) for h in mem.search(secret, ()))
        assert mem.namespaces() == [(("other",), 1)]
        assert mem.store.get_slot_state(("victim",)) is None and mem.store.get_slot_state(("victim", "s1")) is None
        assert mem.store.get_slot_state(("other",)) is not None
        assert mem.store.ids_in(()).tolist() == kept
        assert mem.store.lexical([secret], ("victim",)) == {} and len(mem.store.dense(hash_encoder.encode_query(secret), 10, ())[0]) == 1


def test_forget_leaves_nothing_on_disk(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    """Embedded store only: its files keep no deleted text (PostgreSQL's VACUUM does not promise it)."""
    secret = "xylophonesecretword"
    with ContextMemory(tmp_path, encoder=hash_encoder) as mem:
        mem.add([{"role": "user", "content": f"my password hint is {secret} {i}"} for i in range(50)], ("victim",))
        mem.add([{"role": "user", "content": "unrelated note about tea"}], ("other",))
        mem.flush()
        assert mem.forget(("victim",)) == 50
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes(), path.name
    with ContextMemory(tmp_path, encoder=hash_encoder) as mem:
        assert [h.namespace for h in mem.search("tea", (), method="dense")] == [("other",)]


def test_key_upsert_and_delete(location, hash_encoder: HashEncoder) -> None:
    with ContextMemory(location, encoder=hash_encoder) as mem:
        (a,) = mem.add({"role": "user", "content": "old coffee fact", "key": "k1"}, ("u",))
        (b,) = mem.add({"role": "user", "content": "new tea fact", "key": "k1"}, ("u",))
        assert mem.get([a]) == [] and mem.get_by_key(("u",), "k1").content == "new tea fact"
        assert mem.get_by_key(("u",), "k1").created_at == pytest.approx(mem.get([b])[0].created_at)
        assert mem.get_by_key(("v",), "k1") is None  # keys are per namespace
        assert [h.id for h in mem.search("coffee", ("u",), method="dense")] == [b]
        c, d = mem.add([{"content": "first", "key": "k2"}, {"content": "second", "key": "k2"}], ("u",))
        assert mem.get([c]) == [] and mem.get_by_key(("u",), "k2").id == d
        assert mem.namespaces() == [(("u",), 2)]
        assert mem.delete([b, 999]) == [b]
        assert [h.id for h in mem.search("tea", ("u",))] == [d]  # only the other key's turn is left


def test_encoder_mismatch_and_missing_memory(new_location, hash_encoder: HashEncoder) -> None:
    with ContextMemory(new_location(), encoder=hash_encoder) as mem:
        mem.add({"role": "user", "content": "hello"}, ("u",))
    with ContextMemory(new_location(), encoder=HashEncoder(32, "hash-32")) as mem, pytest.raises(ModelMismatchError):
        mem.search("hello", ("u",))
    with pytest.raises(MemoryNotFoundError):
        ContextMemory(new_location("nope"), read_only=True, encoder=hash_encoder)
    with pytest.raises(MemoryNotFoundError):
        ContextMemory(new_location("nope"), create=False, encoder=hash_encoder)


def test_second_writer_gets_clear_error(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    """Embedded store only: one writing process per directory (PostgreSQL admits many: test_postgres.py)."""
    from ctxmem_plugin.errors import MemoryLockedError

    with ContextMemory(tmp_path, encoder=hash_encoder):
        # In the same process: refused at once, saying so (no wait, no blaming another process).
        with pytest.raises(MemoryLockedError, match="already open for writing in this process"):
            ContextMemory(tmp_path, encoder=hash_encoder, lock_timeout=30)
        with ContextMemory(tmp_path, encoder=hash_encoder, read_only=True) as reader:
            assert reader.stats()["turns"] == 0


WRITER = r"""
import sys, json
sys.path.insert(0, {tests!r})
from helpers import HashEncoder
from ctxmem_plugin.memory import ContextMemory
mem = ContextMemory({path!r}, encoder=HashEncoder())
i = {start}
while True:
    ids = mem.add([{{"role": "user", "content": f"fact number {{i}} about item{{i}}"}}], ("u",), dedupe=True)
    print(json.dumps([ids[0], i]), flush=True)   # acknowledged: add() returned
    i += 1
"""


def _run_writer(location, start: int, count: int) -> list[tuple[int, int]]:
    """Start a writing process, read ``count`` acknowledgements, then SIGKILL it mid-write."""
    script = WRITER.format(tests=str(Path(__file__).parent), path=str(location), start=start)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acked: list[tuple[int, int]] = []
    deadline = time.monotonic() + 120
    while len(acked) < count and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            acked.append(tuple(json.loads(line)))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return acked


def test_killed_ingest_loses_nothing_acknowledged(backend: str, location) -> None:
    acked = _run_writer(location, 0, 40)
    assert len(acked) >= 40
    # Again from the start: every fact already stored is recognised, none is stored twice.
    again = _run_writer(location, 0, len(acked) + 10)
    assert [i for i, _ in again[: len(acked)]] == [-1] * len(acked)
    with ContextMemory(location, encoder=HashEncoder()) as mem:
        stored = {t.id: t.content for t in mem.list_turns(("u",))}
        for turn_id, i in acked:
            assert stored[turn_id] == f"fact number {i} about item{i}"
        assert len(set(stored.values())) == len(stored)  # nothing duplicated
        turn_id, i = acked[-1]
        assert mem.search(f"item{i}", ("u",), k=1, method="bm25")[0].id == turn_id
        hits = mem.search_by_vector(mem.vectors([turn_id])[turn_id], ("u",), k=5)  # dense search sees it too
        assert turn_id in [h.id for h in hits if h.score > 0.9999]


def test_each_backend_implements_the_whole_contract(location, hash_encoder: HashEncoder) -> None:
    """Every member of ``MemoryStore``, with the same parameters (the memory reaches storage through nothing else)."""
    import inspect

    from ctxmem_plugin.storage.base import MemoryStore

    with ContextMemory(location, encoder=hash_encoder) as mem:
        assert isinstance(mem.store, MemoryStore)
        members = [n for n in vars(MemoryStore) if not n.startswith("_") and n not in ("location", "schema_version", "generation")]
        assert len(members) > 25
        for name in members:
            want = list(inspect.signature(getattr(MemoryStore, name)).parameters)
            got = list(inspect.signature(getattr(type(mem.store), name)).parameters)
            assert got[: len(want)] == want, (type(mem.store).__name__, name, got)
        for prop in ("location", "schema_version", "generation"):
            assert isinstance(getattr(mem.store, prop), (str, int)), prop
