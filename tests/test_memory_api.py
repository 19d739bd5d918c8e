"""The Python API of ContextMemory: add/ingest contracts, context() budgets, async twins.

The tests taking ``mem`` or ``make_memory`` run three times: on a ContextMemory in a directory
and in a PostgreSQL database, and through a memory server (a real server process) with its
client, RemoteMemory.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from pathlib import Path

import pytest

from ctxmem_plugin.api import MemoryAPI
from ctxmem_plugin.errors import InputError, MemoryNotFoundError
from ctxmem_plugin.formats import read_paths
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.retrieval.context import format_hit
from ctxmem_plugin.records import Turn
from ctxmem_plugin.remote import RemoteMemory
from ctxmem_plugin.server.testing import ServerProcess

from helpers import REPO, HashEncoder

EXAMPLES = REPO / "examples" / "chat_logs"
WORDS = "dog cat paris guitar pottery lisbon tea coffee running chess garden bakery violin river".split()


@pytest.fixture(params=["embedded", "postgres", "remote"])
def make_memory(request: pytest.FixtureRequest, tmp_path: Path, hash_encoder: HashEncoder):
    """Opens fresh memories: in this process (a directory, a PostgreSQL database), or each behind its own server process."""
    databases: list[str] = []
    server_db = request.getfixturevalue("local_postgres") if request.param == "postgres" else None
    with contextlib.ExitStack() as stack:

        def make(name: str) -> MemoryAPI:
            if request.param == "embedded":
                return stack.enter_context(ContextMemory(tmp_path / name, encoder=hash_encoder))
            if server_db is not None:
                databases.append(server_db.create_database())
                return stack.enter_context(ContextMemory(databases[-1], encoder=hash_encoder))
            server = stack.enter_context(ServerProcess(tmp_path / name, encoder="hash"))
            return stack.enter_context(RemoteMemory(server.url))

        yield make
    for url in databases:
        server_db.drop_database(url)


@pytest.fixture
def mem(make_memory):
    return make_memory("mem")


def sentences(rng: random.Random, n: int) -> list[dict]:
    return [{"role": rng.choice(["user", "assistant"]), "speaker": rng.choice(["Ana", "Bo"]),
             "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 40))),
             "timestamp": f"2024-05-{1 + i % 28:02d}T10:00:00"} for i in range(n)]


def cost(line: str) -> int:
    return math.ceil(len(line) / 4) + 1


# -- add and ingest ---------------------------------------------------------------------------


def test_add_returns_ids_in_order_and_accepts_one_message(mem: MemoryAPI) -> None:
    ids = mem.add([{"content": "first"}, Turn(content="second", role="assistant"), {"content": "third", "name": "Cy"}],
                  ("u",))
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [(t.content, t.role, t.speaker) for t in mem.get(ids)] == [
        ("first", "user", None), ("second", "assistant", None), ("third", "user", "Cy")]
    (one,) = mem.add({"content": "fourth"}, "u")  # a single dict and the CLI spelling of a namespace
    assert mem.get([one])[0].namespace == ("u",)


def test_dedupe_skips_messages_already_in_the_namespace(mem: MemoryAPI) -> None:
    first = mem.add([{"content": "tea"}, {"content": "coffee"}], ("u",), dedupe=True)
    again = mem.add([{"content": "tea"}, {"content": "chess"}, {"content": "chess"}], ("u",), dedupe=True)
    assert again[0] == -1 and again[1] > max(first) and again[2] == -1
    assert mem.add({"content": "tea"}, ("v",), dedupe=True)[0] > 0  # other namespaces do not count
    assert mem.namespaces() == [(("u",), 3), (("v",), 1)]


def test_invalid_message_names_its_index_and_writes_nothing(mem: MemoryAPI) -> None:
    with pytest.raises(InputError, match=r"^message 1: role: .*unknown role 'wizard'"):
        mem.add([{"content": "ok"}, {"role": "wizard", "content": "x"}], ("u",))
    with pytest.raises(InputError, match=r"^message 0: content"):
        mem.add([{"role": "user"}], ("u",))
    assert mem.namespaces() == []


def test_ingest_report_and_idempotency(mem: MemoryAPI) -> None:
    logs = read_paths([EXAMPLES])
    total = sum(len(log.turns) for log in logs)
    seen: list[int] = []
    report = mem.ingest(logs, ("demo",), split_conversations=True, progress=seen.append)
    assert (report.added, report.duplicates, report.invalid) == (total, 0, [])
    assert seen == [len(log.turns) for log in logs]
    assert dict(mem.namespaces(("demo",))) == {("demo", log.path.stem): len(log.turns) for log in logs}
    again = mem.ingest(logs, ("demo",), split_conversations=True)
    assert (again.added, again.duplicates) == (0, total)
    assert mem.stats()["turns"] == total


def test_repeated_messages_in_one_log_are_all_kept(tmp_path: Path, mem: MemoryAPI) -> None:
    path = tmp_path / "chat.txt"
    path.write_text("Ana: ok\nBo: ok\nAna: ok\nAna: ok\n", encoding="utf-8")
    logs = read_paths([path])
    assert mem.ingest(logs, ("u",)).added == 4
    assert mem.ingest(logs, ("u",)).added == 0


def test_list_orders_and_pages(mem: MemoryAPI) -> None:
    ids = mem.add([{"content": f"note {i}", "metadata": {"n": i}} for i in range(10)], ("u", "s"))
    assert [t.id for t in mem.list_turns(("u",))] == ids
    assert [t.id for t in mem.list_turns(("u",), limit=3, offset=2)] == ids[2:5]
    assert [t.metadata["n"] for t in mem.list_turns(("u",), {"n": {"$lt": 3}})] == [0, 1, 2]
    assert mem.list_turns(("u", "other")) == []


def test_read_only_and_missing_memories(new_location, hash_encoder: HashEncoder) -> None:
    with pytest.raises(MemoryNotFoundError):
        ContextMemory(new_location("missing"), encoder=hash_encoder, read_only=True)
    if isinstance(new_location("missing"), Path):
        assert not new_location("missing").exists()
    with ContextMemory(new_location("m"), encoder=hash_encoder) as memory:
        memory.add({"content": "hello"}, ("u",))
    with ContextMemory(new_location("m"), encoder=hash_encoder, read_only=True) as memory:
        with pytest.raises(InputError, match="read-only"):
            memory.add({"content": "more"}, ("u",))
        assert [h.text for h in memory.search("hello", ("u",))] == ["hello"]


def test_search_rejects_bad_arguments(mem: MemoryAPI) -> None:
    mem.add({"content": "hello"}, ("u",))
    for call, message in [(lambda: mem.search("  ", ("u",)), "non-empty"),
                          (lambda: mem.search("hi", ("u",), method="magic"), "unknown method 'magic'"),
                          (lambda: mem.search("hi", ("u",), method="ctxmem"), "needs a trained model"),
                          (lambda: mem.search("hi", ("u",), k=-1), ">= 0")]:
        with pytest.raises(InputError, match=message):
            call()


def test_search_pages_with_offset(mem: MemoryAPI) -> None:
    mem.add(sentences(random.Random(3), 40), ("u",))
    full = [h.id for h in mem.search("tea garden", ("u",), k=12)]
    assert [h.id for h in mem.search("tea garden", ("u",), k=4, offset=8)] == full[8:12]


# -- context() --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_context_respects_max_tokens(mem: ContextMemory, seed: int) -> None:
    rng = random.Random(seed)
    mem.add(sentences(rng, 60), ("u",))
    query = "tea garden violin"
    hits = {format_hit(h): h for h in mem.search(query, ("u",), k=20)}
    for budget in [0, 1, 5, 13, 30, 80, 200, 10_000]:
        text = mem.context(query, ("u",), max_tokens=budget)
        lines = text.split("\n") if text else []
        assert sum(cost(line) for line in lines) <= budget
        assert all(line in hits for line in lines)  # only search hits, formatted with speaker and time
        assert [hits[line].id for line in lines] == sorted(hits[line].id for line in lines)  # in the order said
        fits = [line for line in hits if cost(line) <= budget]
        assert bool(lines) == bool(fits)  # something is given whenever some hit fits
    assert set(mem.context(query, ("u",), max_tokens=10_000).split("\n")) == set(hits)


def test_context_shows_speaker_and_time(mem: MemoryAPI) -> None:
    mem.add({"speaker": "Maya", "content": "Her name is Pretzel.", "timestamp": "2024-03-02T09:17:00"}, ("u",))
    assert mem.context("Pretzel", ("u",)) == "[2024-03-02 09:17] Maya: Her name is Pretzel."


# -- async twins --------------------------------------------------------------------------------


async def test_async_twins_return_what_the_sync_methods_return(make_memory) -> None:
    messages = sentences(random.Random(7), 30)
    sync_mem, async_mem = make_memory("sync"), make_memory("async")
    sync_ids = sync_mem.add(messages, ("u",))
    async_ids = await async_mem.aadd(messages, ("u",))
    assert async_ids == sync_ids  # two fresh memories number the same turns the same way
    strip = lambda turns: [(t.id, t.namespace, t.role, t.speaker, t.content, t.timestamp, t.metadata) for t in turns]
    assert strip(await async_mem.alist_turns(("u",))) == strip(sync_mem.list_turns(("u",)))
    assert strip(await async_mem.aget(sync_ids[:5])) == strip(sync_mem.get(sync_ids[:5]))
    for query in ["tea garden", "chess river violin", "paris"]:
        assert await async_mem.asearch(query, ("u",), k=7) == sync_mem.search(query, ("u",), k=7)
        assert await async_mem.acontext(query, ("u",), max_tokens=60) == sync_mem.context(query, ("u",), max_tokens=60)
        assert await sync_mem.asearch(query, ("u",), k=7) == sync_mem.search(query, ("u",), k=7)
    assert await async_mem.anamespaces() == sync_mem.namespaces()
    assert (await async_mem.astats())["namespaces"] == sync_mem.stats()["namespaces"]
    assert await async_mem.adelete(sync_ids[:2]) == sync_mem.delete(sync_ids[:2])
    assert await async_mem.aforget(("u",)) == sync_mem.forget(("u",)) == 28


async def test_concurrent_async_searches_agree(mem: MemoryAPI) -> None:
    mem.add(sentences(random.Random(11), 50), ("u",))
    queries = ["tea", "garden violin", "chess", "lisbon bakery", "river dog"] * 4
    results = await asyncio.gather(*(mem.asearch(q, ("u",), k=5) for q in queries))
    assert results == [mem.search(q, ("u",), k=5) for q in queries]


@pytest.mark.parametrize("cls", [ContextMemory, RemoteMemory])
def test_async_twins_have_the_sync_signature_and_docs(cls: type) -> None:
    import inspect

    for name in ["write", "add", "ingest", "delete", "forget", "get", "get_by_key", "list_turns", "namespaces", "search",
                 "search_by_vector", "vectors", "context", "explain", "stats"]:
        twin = getattr(cls, f"a{name}")
        assert inspect.iscoroutinefunction(twin), name
        assert inspect.signature(twin) == inspect.signature(getattr(cls, name)), name


# -- search by vector, stored vectors, generation --------------------------------------------


def test_search_by_vector_equals_dense_search_and_respects_namespaces(mem: MemoryAPI) -> None:
    rng = random.Random(3)
    mem.add(sentences(rng, 30), ("u", "a"))
    mem.add(sentences(rng, 30), ("u", "b"))
    other = mem.add(sentences(rng, 10), ("v",))
    query = "garden violin river"
    qv = mem.encoder.encode_query(query)
    dense = mem.search(query, ("u",), k=8, method="dense")
    by_vec = mem.search_by_vector(qv * 7.5, ("u",), k=8)  # any scale: it is normalised
    assert [h.id for h in by_vec] == [h.id for h in dense]
    assert [h.score for h in by_vec] == pytest.approx([h.signals["dense"]["score"] for h in dense], abs=1e-5)
    assert [h.signals["dense"]["rank"] for h in by_vec] == list(range(1, 9))
    assert all(h.namespace[0] == "u" for h in by_vec)
    assert not {h.id for h in mem.search_by_vector(qv, ("u",), k=100)} & set(other)
    only_b = mem.search_by_vector(qv, ("u", "b"), k=100)
    assert only_b and all(h.namespace == ("u", "b") for h in only_b)
    speaker = mem.search_by_vector(qv, ("u",), k=100, filters={"speaker": "Ana"})
    assert speaker and all(h.speaker == "Ana" for h in speaker)
    assert mem.search_by_vector(qv, ("u",), k=0) == []


def test_search_by_vector_rejects_bad_vectors(mem: MemoryAPI) -> None:
    mem.add({"content": "hello there"}, ("u",))
    with pytest.raises(InputError, match="dimensions"):
        mem.search_by_vector([1.0, 2.0], ("u",))
    bad = mem.encoder.encode_query("hello")
    bad[0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        mem.search_by_vector(bad, ("u",))
    with pytest.raises(InputError, match="k must be"):
        mem.search_by_vector(mem.encoder.encode_query("hello"), ("u",), k=-1)


def test_vectors_are_the_stored_embeddings_and_skip_unknown_ids(mem: MemoryAPI) -> None:
    ids = mem.add([{"content": "tea in lisbon"}, {"content": "chess by the river"}], ("u",))
    stored = mem.vectors([ids[1], 10_000, ids[0]])
    assert list(stored) == [ids[1], ids[0]]
    hits = mem.search_by_vector(stored[ids[1]], ("u",), k=1)
    assert hits[0].id == ids[1] and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_generation_moves_on_every_write_only(mem: MemoryAPI) -> None:
    g0 = mem.generation
    ids = mem.add({"content": "tea in lisbon"}, ("u",))
    g1 = mem.generation
    mem.search("tea", ("u",))
    mem.list_turns(("u",))
    assert g1 > g0 and mem.generation == g1
    mem.delete(ids)
    assert mem.generation > g1
