"""CtxMemStore properties beyond the reference: timestamps, persistence, TTL, isolation, escaping."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.embeddings import DeterministicFakeEmbedding
from langgraph.store.base import PutOp
from langgraph.store.memory import InMemoryStore

from ctxmem_plugin.memory import ContextMemory
from langchain_ctxmem import CtxMemStore
from langchain_ctxmem._namespaces import escape_label, unescape_label


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_update_keeps_created_at_and_moves_updated_at(memory: ContextMemory) -> None:
    store = CtxMemStore(memory)
    store.put(("u",), "k", {"v": 1})
    first = store.get(("u",), "k")
    store.put(("u",), "k", {"v": 2})
    second = store.get(("u",), "k")
    assert second.value == {"v": 2}
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at
    assert second.created_at.tzinfo is not None


def test_items_persist_across_reopen(tmp_path: Path, hash_encoder: Any) -> None:
    with CtxMemStore(ContextMemory(tmp_path / "m", encoder=hash_encoder)) as store:
        store.put(("u", "1"), "k", {"text": "persist me"})
        store.memory.close()
    with ContextMemory(tmp_path / "m", encoder=hash_encoder) as mem:
        store = CtxMemStore(mem)
        assert store.get(("u", "1"), "k").value == {"text": "persist me"}
        assert store.search(("u",), query="persist")[0].key == "k"


def test_store_opened_from_a_path_with_langchain_embeddings(tmp_path: Path) -> None:
    emb = DeterministicFakeEmbedding(size=16)
    with CtxMemStore(tmp_path / "m", index={"dims": 16, "embed": emb, "fields": ["text"]}) as store:
        store.put(("d",), "a", {"text": "alpha"})
        assert store.memory.encoder.dim == 16
        assert store.search(("d",), query="alpha")[0].key == "a"


def test_search_without_query_is_most_recently_updated_first(memory: ContextMemory) -> None:
    clock = Clock()
    store = CtxMemStore(memory, clock=clock)
    for key in "abc":
        store.put(("u",), key, {"v": key})
    store.put(("u",), "a", {"v": "again"})
    assert [i.key for i in store.search(("u",))] == ["a", "c", "b"]


def test_empty_namespaces_are_not_listed(memory: ContextMemory) -> None:
    """InMemoryStore lists namespaces that were only read or emptied; this store does not."""
    store = CtxMemStore(memory)
    store.put(("gone",), "k", {"v": 1})
    store.delete(("gone",), "k")
    store.get(("never",), "k")
    assert store.list_namespaces() == []
    reference = InMemoryStore()
    reference.put(("gone",), "k", {"v": 1})
    reference.delete(("gone",), "k")
    assert reference.list_namespaces() == [("gone",)]


def test_store_never_sees_turns_of_other_integrations(memory: ContextMemory) -> None:
    memory.add([{"role": "user", "content": "raw chat turn about ramen", "key": "k"}], ("users", "u1"))
    for root in [("langgraph-store",), ()]:
        store = CtxMemStore(memory, root=root)
        assert store.get(("users", "u1"), "k") is None
        assert store.search(("users",), query="ramen") == []
        assert store.search(()) == []
    store = CtxMemStore(memory)
    store.put(("users", "u1"), "k", {"text": "store item"})
    assert memory.get_by_key(("users", "u1"), "k").content == "raw chat turn about ramen"
    assert store.get(("users", "u1"), "k").value == {"text": "store item"}


def test_search_pages_past_the_hybrid_pool_cover_every_item(memory: ContextMemory) -> None:
    """Hybrid retrieval draws at most ``pool`` candidates; deeper pages are filled, never lost."""
    store = CtxMemStore(memory)
    n = memory.retrieval.pool + 30
    store.batch([PutOp(("bulk",), f"k{i:03d}", {"text": f"note number {i} about gardening"}) for i in range(n)])
    seen: list[str] = []
    for offset in range(0, n + 20, 25):
        seen += [i.key for i in store.search(("bulk",), query="gardening notes", limit=25, offset=offset)]
    assert sorted(seen) == sorted(f"k{i:03d}" for i in range(n))


def test_filter_field_names_the_core_cannot_address(memory: ContextMemory) -> None:
    store = CtxMemStore(memory)
    store.put(("u",), "k", {"has space": 1})
    with pytest.raises(ValueError, match="letters, digits"):
        store.search(("u",), filter={"has space": 1})


def test_dotted_filter_keys_address_nested_fields(memory: ContextMemory) -> None:
    store = CtxMemStore(memory)
    store.put(("u",), "k", {"meta": {"kind": "pet"}})
    assert [i.key for i in store.search(("u",), filter={"meta.kind": "pet"})] == ["k"]


def test_in_operator_extension(memory: ContextMemory) -> None:
    store = CtxMemStore(memory)
    for i in range(4):
        store.put(("u",), f"k{i}", {"n": i})
    assert sorted(i.key for i in store.search(("u",), filter={"n": {"$in": [1, 3]}})) == ["k1", "k3"]


def test_values_must_be_json(memory: ContextMemory) -> None:
    store = CtxMemStore(memory)
    with pytest.raises(TypeError, match="JSON"):
        store.put(("u",), "k", {"when": object()})
    assert store.search(("u",)) == []


# -- TTL ----------------------------------------------------------------------------------------


def test_ttl_expires_after_last_access(embedded_memory: ContextMemory) -> None:
    clock = Clock()
    store = CtxMemStore(embedded_memory, clock=clock)
    store.put(("u",), "short", {"text": "short lived"}, ttl=1.0)
    store.put(("u",), "long", {"text": "long lived"})
    clock.now += 50
    assert store.get(("u",), "short") is not None  # a read refreshes: now expires at +110
    clock.now += 50
    assert [i.key for i in store.search(("u",), query="lived", refresh_ttl=False)] != []
    clock.now += 15  # 115 s after the put, 65 s after the refresh... and the search did not refresh
    assert store.get(("u",), "short", refresh_ttl=False) is None
    assert [i.key for i in store.search(("u",))] == ["long"]
    assert store.list_namespaces() == [("u",)]


def test_ttl_without_refresh_and_swept_from_every_read(embedded_memory: ContextMemory) -> None:
    clock = Clock()
    store = CtxMemStore(embedded_memory, clock=clock, ttl={"refresh_on_read": False})
    store.put(("t",), "k", {"v": 1}, ttl=0.5)
    clock.now += 20
    assert store.get(("t",), "k") is not None  # refresh_on_read False: the clock keeps running
    clock.now += 11
    assert store.search(("t",)) == []
    assert store.list_namespaces() == []
    assert embedded_memory.get_by_key(("langgraph-store", "t"), "k") is None  # deleted, not only hidden


def test_default_ttl_and_put_without_ttl_makes_permanent(embedded_memory: ContextMemory) -> None:
    clock = Clock()
    store = CtxMemStore(embedded_memory, clock=clock, ttl={"default_ttl": 1.0})
    store.put(("d",), "a", {"v": 1})  # default TTL
    store.put(("d",), "b", {"v": 2}, ttl=None)  # explicitly permanent
    store.put(("d",), "c", {"v": 3}, ttl=1.0)
    store.put(("d",), "c", {"v": 4}, ttl=None)  # a re-put without TTL drops the expiry
    clock.now += 61
    assert sorted(i.key for i in store.search(("d",))) == ["b", "c"]


def test_ttl_survives_reopen(tmp_path: Path, hash_encoder: Any) -> None:
    clock = Clock()
    with ContextMemory(tmp_path / "m", encoder=hash_encoder) as mem, CtxMemStore(mem, clock=clock) as store:
        store.put(("u",), "k", {"v": 1}, ttl=1.0)
    clock.now += 61
    with ContextMemory(tmp_path / "m", encoder=hash_encoder) as mem:
        assert CtxMemStore(mem, clock=clock).get(("u",), "k") is None


async def test_ttl_async(embedded_memory: ContextMemory) -> None:
    clock = Clock()
    store = CtxMemStore(embedded_memory, clock=clock)
    await store.aput(("u",), "k", {"v": 1}, ttl=1.0)
    clock.now += 61
    assert await store.aget(("u",), "k") is None
    assert store.supports_ttl


def test_ttl_is_refused_on_a_database_memory(memory: ContextMemory) -> None:
    """A memory in PostgreSQL keeps no expiries: a TTL is refused as LangGraph refuses it, never ignored."""
    if memory.path is not None:
        assert CtxMemStore(memory).supports_ttl
        return
    store = CtxMemStore(memory)
    assert not store.supports_ttl
    with pytest.raises(NotImplementedError, match="TTL"):
        store.put(("u",), "k", {"v": 1}, ttl=1.0)
    with pytest.raises(ValueError, match="TTLs need an embedded memory"):
        CtxMemStore(memory, ttl={"default_ttl": 1.0})
    store.put(("u",), "k", {"v": 1})
    assert store.get(("u",), "k").value == {"v": 1}


def test_reference_rejects_ttl() -> None:
    """For the record: InMemoryStore has no TTL, so TTL cases are not in the differential suite."""
    with pytest.raises(NotImplementedError):
        InMemoryStore().put(("u",), "k", {"v": 1}, ttl=1.0)


async def test_concurrent_async_writes_and_reads(memory: ContextMemory) -> None:
    store = CtxMemStore(memory)
    await asyncio.gather(*(store.aput(("c", str(i % 3)), f"k{i}", {"text": f"item {i}"}) for i in range(30)))
    results = await asyncio.gather(*(store.asearch(("c",), limit=100) for _ in range(5)))
    assert all(len(r) == 30 for r in results)


# -- namespace escaping ---------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=40).filter(lambda s: "." not in s and "\x00" not in s))
def test_escape_roundtrip(label: str) -> None:
    escaped = escape_label(label)
    assert unescape_label(escaped) == label
    assert "/" not in escaped and escaped.strip()
    assert all(ord(c) >= 32 for c in escaped)


@given(
    st.lists(
        st.text(min_size=1, max_size=8).filter(lambda s: "." not in s and "\x00" not in s),
        min_size=2,
        max_size=2,
        unique=True,
    )
)
def test_escape_is_injective(labels: list[str]) -> None:
    assert escape_label(labels[0]) != escape_label(labels[1])
