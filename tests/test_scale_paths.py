"""The paths that keep a search's cost set by its prefix: prefix reads, namespaced postings, the IVF index.

On small memories the approximate index probes every cell, so it must return exactly what exact
search returns; whichever path runs, no namespace sees another's turns; and the index, living in
SQLite, follows every write of every connection at once.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.errors import InputError
from ctxmem_plugin.filters import matches
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.records import NewTurn, to_turn
from ctxmem_plugin.storage.ann import IndexConfig
from ctxmem_plugin.storage.bm25 import namespaced_terms
from ctxmem_plugin.storage.sqlite import LongTermStore

from conftest import HashEncoder

WORDS = "dog cat paris guitar pottery lisbon tea coffee running chess garden bakery violin river café".split()
# Labels that sort next to each other, share prefixes, or need escaping: the namespaced postings must keep them apart.
SPACES = [("alice",), ("alice", "s1"), ("alice", "s2"), ("alicex",), ("al",), ("bob", "alice"), ("b ob",),
          ("ünï", "x.y"), ("a-b",)]
PREFIXES = [(), ("alice",), ("alice", "s1"), ("alicex",), ("al",), ("bob",), ("b ob",), ("ünï",), ("a-b",)]
SMALL = IndexConfig(exact_limit=40)  # the approximate index from 40 turns on (it probes every cell here)


def turns(rng: random.Random, n: int) -> list[dict]:
    return [
        {
            "role": rng.choice(["user", "assistant"]),
            "speaker": rng.choice(["Ana", "Ben"]),
            "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))),
            "metadata": {"n": i, "tag": rng.choice(["a", "b", "c"])},
        }
        for i in range(n)
    ]


def fill(path: Path, encoder: HashEncoder, seed: int, per_space: int = 30, **kwargs) -> dict[int, tuple[str, ...]]:
    rng = random.Random(seed)
    owner: dict[int, tuple[str, ...]] = {}
    with ContextMemory(path, encoder=encoder, **kwargs) as mem:
        for space in SPACES:
            for i in mem.add(turns(rng, per_space), space):
                owner[i] = space
    return owner


def results(mem: ContextMemory, rng: random.Random, trials: int) -> list[list[tuple[int, float]]]:
    out = []
    for _ in range(trials):
        query = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
        prefix = rng.choice(PREFIXES)
        method = rng.choice(["dense", "hybrid", "bm25"])
        filters = rng.choice([None, {"tag": "a"}, {"n": {"$lt": 10}}])
        hits = mem.search(query, prefix, k=rng.choice([1, 5, 50]), filters=filters, method=method)
        out.append([(h.id, h.score) for h in hits])
    return out


def nsfts_postings(store: LongTermStore) -> Counter:
    return Counter(tuple(r) for r in store.db.execute("SELECT term, doc, offset FROM turns_nsfts_instance"))


def expected_postings(store: LongTermStore) -> Counter:
    rows = store.db.execute("SELECT id, namespace, index_text FROM turns").fetchall()
    out: Counter = Counter()
    for r, tokens in zip(rows, store.tokenizer.tokens([r[2] for r in rows])):
        for offset, term in enumerate(namespaced_terms(tokens, r[1]).split(" ") if tokens else []):
            out[(term, r[0], offset)] += 1
    return out


def test_approximate_index_returns_exactly_what_exact_search_returns(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    fill(tmp_path, hash_encoder, seed=0, index=SMALL)
    with ContextMemory(tmp_path, encoder=hash_encoder, read_only=True, index=SMALL) as approx, \
            ContextMemory(tmp_path, encoder=hash_encoder, read_only=True) as exact:
        assert approx.store.ann.centroids(approx.store.db) is not None  # trained: the IVF path runs
        assert results(approx, random.Random(1), 80) == results(exact, random.Random(1), 80)


def test_exact_prefix_search_equals_bruteforce(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    owner = fill(tmp_path, hash_encoder, seed=2)
    rng = random.Random(3)
    with ContextMemory(tmp_path, encoder=hash_encoder, read_only=True) as mem:
        for _ in range(40):
            query = " ".join(rng.choice(WORDS) for _ in range(3))
            prefix = rng.choice(PREFIXES)
            filters = rng.choice([None, {"tag": "b"}])
            hits = mem.search(query, prefix, k=10, method="dense", filters=filters)
            allowed = [t.id for t in mem.list_turns(prefix, filters)]
            assert all(owner[i][: len(prefix)] == prefix for i in allowed)
            scores = mem.store.vectors(allowed, hash_encoder.dim) @ hash_encoder.encode_query(query)
            order = np.lexsort((np.asarray(allowed), -scores))[:10]
            assert [h.id for h in hits] == [allowed[j] for j in order]
            assert np.allclose([h.score for h in hits], scores[order], atol=1e-5)


@pytest.mark.parametrize("index", [IndexConfig(), SMALL, IndexConfig(exact_limit=40, nprobe=1, min_scored=1)])
def test_no_path_shows_a_namespace_anothers_turns(tmp_path: Path, hash_encoder: HashEncoder, index: IndexConfig) -> None:
    owner = fill(tmp_path, hash_encoder, seed=4, index=index)
    rng = random.Random(5)
    with ContextMemory(tmp_path, encoder=hash_encoder, index=index) as mem:
        for _ in range(60):
            prefix = rng.choice(PREFIXES)
            filters = rng.choice([None, {"tag": "a"}, {"n": {"$lt": 10}}])
            query = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
            for method in ("dense", "bm25", "hybrid"):
                for h in mem.search(query, prefix, k=rng.choice([1, 10, 100]), filters=filters, method=method):
                    assert owner[h.id][: len(prefix)] == prefix, (method, prefix, owner[h.id])
                    assert matches(filters, h.metadata)
            for h in mem.search_by_vector(hash_encoder.encode_query(query), prefix, k=20):
                assert owner[h.id][: len(prefix)] == prefix
                assert h.score == pytest.approx(float(mem.vectors([h.id])[h.id] @ hash_encoder.encode_query(query)), abs=1e-5)


def test_namespaced_postings_follow_every_write(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    rng = random.Random(6)
    with ContextMemory(tmp_path, encoder=hash_encoder) as mem:
        for space in SPACES:
            mem.add(turns(rng, 12), space)
        mem.add([{"content": "old café text", "key": "k"}, {"content": "newer dog text", "key": "k"}], ("alice",))
        mem.add({"content": "newest river text", "key": "k"}, ("alice",))
        mem.delete([1, 2, 3])
        mem.forget(("alice",))
        assert nsfts_postings(mem.store) == expected_postings(mem.store)
        assert not [t for t, *_ in nsfts_postings(mem.store) if t.endswith("_" + ns.to_key(("alice",)).encode().hex())]
        assert mem.search("river", ("alicex",), method="bm25") == [] or all(
            h.namespace == ("alicex",) for h in mem.search("river", ("alicex",), method="bm25"))


def test_index_trains_retrains_and_follows_deletes(tmp_path: Path) -> None:
    rng = random.Random(7)
    index = IndexConfig(exact_limit=30, retrain_growth=2.0)
    with ContextMemory(tmp_path, encoder=HashEncoder(), index=index) as mem:
        db = mem.store.db
        mem.add(turns(rng, 29), ("u",))
        assert mem.store.ann.centroids(db) is None
        mem.add(turns(rng, 1), ("u",))
        first = mem.store.ann.centroids(db)
        assert first is not None and first.trained_on == 30
        mem.add(turns(rng, 29), ("v",))
        assert mem.store.ann.centroids(db).version == first.version  # grown, not yet twice
        mem.add(turns(rng, 1), ("v",))
        assert mem.store.ann.centroids(db).trained_on == 60
        cells = lambda: dict(db.execute("SELECT id, namespace FROM ann_cells").fetchall())  # noqa: E731
        assert cells() == {t.id: ns.to_key(t.namespace) for t in mem.list_turns()}
        mem.delete([t.id for t in mem.list_turns(("u",))[:5]])
        mem.forget(("v",))
        assert cells() == {t.id: ns.to_key(t.namespace) for t in mem.list_turns()}
        mem.add(turns(rng, 10), ("w",))
    with ContextMemory(tmp_path, encoder=HashEncoder(32, "hash-32"), index=index) as mem:
        mem.reembed()  # new vectors, new width: the cells are trained again from them
        cents = mem.store.ann.centroids(mem.store.db)
        assert cents is not None and cents.vectors.shape[1] == 32
        assert len(mem.store.db.execute("SELECT * FROM ann_cells").fetchall()) == mem.stats()["turns"]


def test_a_long_lived_reader_sees_other_connections_writes(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    for index in (IndexConfig(), IndexConfig(exact_limit=20)):
        path = tmp_path / str(index.exact_limit)
        with ContextMemory(path, encoder=hash_encoder, index=index) as writer:
            writer.add(turns(random.Random(8), 40), ("u",))
            with ContextMemory(path, encoder=hash_encoder, read_only=True, index=index) as reader:
                before = reader.search("dog", ("u",), k=3, method="dense")  # its index, if any, is in use
                (new,) = writer.add({"content": "zebra zebra zebra"}, ("u",))
                assert reader.search("zebra", ("u",), k=1, method="dense")[0].id == new
                assert reader.search("zebra", (), k=1, method="hybrid")[0].id == new
                writer.delete([new])
                assert new not in [h.id for h in reader.search("zebra", ("u",), k=50, method="dense")]
                assert before


def test_one_search_reads_one_snapshot(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    with ContextMemory(tmp_path, encoder=hash_encoder) as writer:
        ids = writer.add(turns(random.Random(9), 30), ("u",))
        with ContextMemory(tmp_path, encoder=hash_encoder, read_only=True) as reader:
            store, q = reader.store, hash_encoder.encode_query("dog tea")
            with store.reading():
                first, _ = store.dense(q, 5, ("u",))
                writer.delete(first.tolist())
                writer.add({"content": "dog tea dog tea"}, ("u",))
                again, _ = store.dense(q, 5, ("u",))
                assert again.tolist() == first.tolist()  # the same snapshot: the deletes are not seen yet
                assert [t.id for t in store.get(first.tolist())] == first.tolist()
                assert set(store.neighbours(first.tolist())) == set(first.tolist())
            after, _ = store.dense(q, 30, ("u",))
            assert not set(after.tolist()) & set(first.tolist())
            assert len(after) == len(ids) - 5 + 1


def test_searches_while_another_connection_writes_and_forgets(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    rng = random.Random(10)
    with ContextMemory(tmp_path, encoder=hash_encoder, index=IndexConfig(exact_limit=50)) as writer:
        writer.add(turns(rng, 60), ("keep",))
        errors: list[BaseException] = []
        stop = threading.Event()

        def write() -> None:
            try:
                for i in range(25):
                    writer.add(turns(random.Random(i), 8), ("churn", str(i % 3)))
                    if i % 4 == 3:
                        writer.forget(("churn", str(i % 3)))
                    writer.delete([t.id for t in writer.list_turns(("churn",), limit=2)])
            except BaseException as exc:  # handed to the main thread, which fails the test with it
                errors.append(exc)
            finally:
                stop.set()

        with ContextMemory(tmp_path, encoder=hash_encoder, read_only=True, index=IndexConfig(exact_limit=50)) as reader:
            thread = threading.Thread(target=write)
            thread.start()
            searches = 0
            while not stop.is_set() or searches < 20:
                prefix = rng.choice([(), ("keep",), ("churn",), ("churn", "1")])
                for h in reader.search("dog tea river", prefix, k=10, method=rng.choice(["dense", "hybrid", "bm25"])):
                    assert h.namespace[: len(prefix)] == prefix
                searches += 1
            thread.join()
        assert not errors, errors


def test_float16_vectors_halve_the_bytes_and_keep_the_ranking_close(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    rng = random.Random(11)
    data = turns(rng, 80)
    with ContextMemory(tmp_path / "32", encoder=hash_encoder) as full, \
            ContextMemory(tmp_path / "16", encoder=hash_encoder, vector_dtype="float16") as half:
        full.add(data, ("u",))
        half.add(data, ("u",))
        (blob,) = half.store.db.execute("SELECT vector FROM turns LIMIT 1").fetchone()
        assert len(blob) == 2 * hash_encoder.dim
        for query in ("dog tea", "river chess garden", "café"):
            a = full.search(query, ("u",), k=10, method="dense")
            b = half.search(query, ("u",), k=10, method="dense")
            assert np.allclose([h.score for h in a], [h.score for h in b], atol=2e-3)
        assert half.stats()["vector_dtype"] == "float16"
    with pytest.raises(InputError, match="float16"):
        ContextMemory(tmp_path / "16", encoder=hash_encoder, vector_dtype="float32")
    with pytest.raises(InputError, match="vector_dtype"):
        ContextMemory(tmp_path / "new", encoder=hash_encoder, vector_dtype="int8")


def test_slot_writes_batched_across_sessions_equal_one_at_a_time(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    import torch

    from ctxmem_plugin.reranker.checkpoint import save_model
    from ctxmem_plugin.training.trainer import TrainConfig, build_model

    torch.manual_seed(0)
    save_model(build_model(hash_encoder.dim, hash_encoder.name, TrainConfig()).eval(), tmp_path / "model")
    rng = random.Random(12)
    # Sessions of different lengths, interleaved in one write (batched) and written one by one.
    data = [(("s", "0"), t) for t in turns(rng, 3)] + [(("s", str(i % 5)), t) for i, t in enumerate(turns(rng, 92))]
    with ContextMemory(tmp_path / "batched", encoder=hash_encoder, model=tmp_path / "model") as batched, \
            ContextMemory(tmp_path / "single", encoder=hash_encoder, model=tmp_path / "model") as single:
        batched.add([t for _, t in data[:3]], ("s", "0"))  # a partial chunk already stored
        single.add([t for _, t in data[:3]], ("s", "0"))
        batched.write([NewTurn(space, to_turn(t)) for space, t in data[3:]])
        for space in sorted({s for s, _ in data}):
            single.add([t for s, t in data[3:] if s == space], space)  # one session at a time
        for space in sorted({s for s, _ in data}):
            a, b = batched.store.get_slot_state(space), single.store.get_slot_state(space)
            assert a[2] == b[2]  # as many turns folded (their ids differ: the two memories stored them in another order)
            assert np.allclose(np.frombuffer(a[3], np.float32), np.frombuffer(b[3], np.float32), atol=1e-5)
