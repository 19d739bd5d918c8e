"""Differential suite: every case runs against InMemoryStore (the reference) and CtxMemStore.

No conformance kit exists for LangGraph stores, so the reference implementation is the spec.
Every case runs on a store over a ContextMemory in a directory and in a PostgreSQL database, and
on one over a memory server's client (RemoteMemory), so the store works unchanged through a server.
Each case is run sync (``put``/``search``/``batch``...) and async (``aput``/``asearch``/
``abatch``...) and the two stores must give the same items (namespace, key, value), the same
namespaces and the same exception types. Scores and timestamps are not compared (different
clocks, different rankers); where the reference's order is not a contract (a search without a
query: insertion order vs. most recently updated first) results are compared as sets. Query
searches compare the best hit, the set, and that unscored (non-indexed) items come last.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.store.base import GetOp, Item, ListNamespacesOp, MatchCondition, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore

from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.remote import RemoteMemory
from ctxmem_plugin.server.testing import ServerProcess
from langchain_ctxmem import CtxMemEmbeddings, CtxMemStore

ASYNC_NAMES = {"batch": "abatch"}


def _norm(result: Any, ordered: bool) -> Any:
    if isinstance(result, Item):
        return (tuple(result.namespace), result.key, result.value)
    if isinstance(result, list):
        out = [_norm(r, ordered) for r in result]
        if not ordered and all(isinstance(r, (Item, tuple)) for r in result):
            return sorted(out, key=repr)
        return out
    return result


class Pair:
    """The reference and the store under test, driven by the same calls."""

    def __init__(self, ref: InMemoryStore, sut: CtxMemStore, mode: str) -> None:
        self.ref, self.sut, self.mode = ref, sut, mode

    async def _one(self, store: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Any]:
        try:
            if self.mode == "sync":
                return "ok", getattr(store, name)(*args, **kwargs)
            return "ok", await getattr(store, ASYNC_NAMES.get(name, "a" + name))(*args, **kwargs)
        except Exception as exc:  # the exception type is part of what is compared
            return "error", type(exc)

    async def both(self, name: str, *args: Any, **kwargs: Any) -> tuple[tuple[str, Any], tuple[str, Any]]:
        return await self._one(self.ref, name, args, kwargs), await self._one(self.sut, name, args, kwargs)

    async def same(self, name: str, *args: Any, ordered: bool = False, **kwargs: Any) -> Any:
        """Call on both; assert equal results; return the store-under-test's raw result."""
        (rk, rv), (sk, sv) = await self.both(name, *args, **kwargs)
        assert (rk, _norm(rv, ordered)) == (sk, _norm(sv, ordered)), f"{name}{args}{kwargs}"
        return sv

    async def same_query(self, *args: Any, **kwargs: Any) -> list[Any]:
        """A query search: same best hit, same set, and unscored items last in both."""
        (rk, ref), (sk, sut) = await self.both("search", *args, **kwargs)
        assert rk == sk == "ok", (ref, sut)
        assert _norm(ref, False) == _norm(sut, False)
        if ref:
            assert _norm(ref[0], True) == _norm(sut[0], True)
        assert [r.score is None for r in ref] == [s.score is None for s in sut]
        return sut

    async def put_all(self, items: list[tuple[tuple[str, ...], str, dict[str, Any]]], **kwargs: Any) -> None:
        for namespace, key, value in items:
            await self.same("put", namespace, key, value, **kwargs)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def hash_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One memory server for the module's remote cases; each store lives under a root of its own."""
    with ServerProcess(tmp_path_factory.mktemp("served") / "m", encoder="hash") as server:
        yield server


@pytest.fixture(params=["embedded", "postgres", "remote"])
def backend(request: pytest.FixtureRequest) -> str:
    """Where the store's memory is: a ContextMemory here (a directory, a PostgreSQL database), or
    a memory server reached with RemoteMemory."""
    return request.param


@pytest.fixture
def make_pair(new_location: Any, hash_encoder: Any, mode: str, backend: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The reference and a CtxMemStore over a fresh memory: a directory, a PostgreSQL database, or a memory server."""
    memories: list[Any] = []

    def make(fields: list[str] | None = None) -> Pair:
        store_options: dict[str, Any] = {"index": {"fields": fields} if fields else None}
        if backend != "remote":
            mem: Any = ContextMemory(new_location(f"m{len(memories)}"), encoder=hash_encoder)
        else:
            request.getfixturevalue("loopback")
            mem = RemoteMemory(request.getfixturevalue("hash_server").url)
            store_options["root"] = ("t", uuid.uuid4().hex)  # a fresh store in the shared memory
        memories.append(mem)
        index: dict[str, Any] = {"dims": hash_encoder.dim, "embed": CtxMemEmbeddings(hash_encoder)}
        if fields is not None:
            index["fields"] = fields
        return Pair(InMemoryStore(index=index), CtxMemStore(mem, **store_options), mode)

    yield make
    for mem in memories:
        mem.close()


@pytest.fixture
def pair(make_pair: Any) -> Pair:
    return make_pair()


PEOPLE = [
    (
        ("users", "u1"),
        "food",
        {"text": "I love spicy ramen noodles", "score": 4, "tags": ["food", "asian"], "active": True},
    ),
    (("users", "u1"), "pet", {"text": "my dog is called Biscuit", "score": 7, "meta": {"kind": "pet", "age": 3}}),
    (("users", "u1", "work"), "job", {"text": "I work as a nurse at night", "score": 9, "active": False}),
    (
        ("users", "u2"),
        "food",
        {"text": "pizza with pineapple is great", "score": 2, "meta": {"kind": "food", "age": 1}},
    ),
    (("users", "u22"), "car", {"text": "I drive an old red Volvo", "score": 5, "active": True}),
    (("teams", "t1"), "goal", {"text": "ship the release on Friday", "score": 6}),
]


# -- get / put / delete ---------------------------------------------------------------------


async def test_put_get_roundtrip(pair: Pair) -> None:
    await pair.put_all(PEOPLE)
    for namespace, key, _ in PEOPLE:
        await pair.same("get", namespace, key)


async def test_get_missing(pair: Pair) -> None:
    await pair.put_all(PEOPLE[:1])
    await pair.same("get", ("users", "u1"), "nope")
    await pair.same("get", ("users", "nobody"), "food")
    await pair.same("get", ("users",), "food")  # a prefix is not the namespace


async def test_overwrite(pair: Pair) -> None:
    await pair.put_all(PEOPLE[:2])
    await pair.same("put", ("users", "u1"), "food", {"text": "now I prefer sushi", "score": 1})
    await pair.same("get", ("users", "u1"), "food")
    await pair.same("search", ("users", "u1"))


async def test_delete(pair: Pair) -> None:
    await pair.put_all(PEOPLE)
    await pair.same("delete", ("users", "u1"), "food")
    await pair.same("get", ("users", "u1"), "food")
    await pair.same("delete", ("users", "u1"), "never-existed")
    await pair.same("search", ("users",))


async def test_unicode_keys_and_values(pair: Pair) -> None:
    items = [(("café", "ünï"), "ключ", {"text": "日本語のテキスト", "emoji": "🦀"}), (("café",), "", {"empty key": 1})]
    await pair.put_all(items)
    await pair.same("get", ("café", "ünï"), "ключ")
    await pair.same("get", ("café",), "")
    await pair.same("search", ("café",))


async def test_nested_and_list_values(pair: Pair) -> None:
    items = [(("docs",), "d1", {"a": {"b": {"c": [1, 2, {"d": None}]}}, "n": 1.5, "s": ""})]
    await pair.put_all(items)
    await pair.same("get", ("docs",), "d1")


# -- batch semantics --------------------------------------------------------------------------


async def test_batch_reads_see_state_before_its_writes(pair: Pair) -> None:
    await pair.same(
        "batch",
        [
            PutOp(("b",), "k", {"v": 1}),
            GetOp(("b",), "k"),
            SearchOp(("b",)),
        ],
        ordered=True,
    )
    await pair.same("get", ("b",), "k")


async def test_batch_last_put_of_a_key_wins(pair: Pair) -> None:
    await pair.same("batch", [PutOp(("b",), "k", {"v": 1}), PutOp(("b",), "k", {"v": 2}), PutOp(("b",), "j", {"v": 3})])
    await pair.same("get", ("b",), "k")
    await pair.same("batch", [PutOp(("b",), "k", {"v": 4}), PutOp(("b",), "k", None)])
    await pair.same("get", ("b",), "k")
    await pair.same("search", ("b",))


async def test_batch_mixed_ops_results_in_order(pair: Pair) -> None:
    await pair.put_all(PEOPLE)
    await pair.same(
        "batch",
        [
            GetOp(("users", "u1"), "pet"),
            SearchOp(("users", "u2")),
            ListNamespacesOp(match_conditions=(MatchCondition("prefix", ("users",)),), max_depth=2),
            PutOp(("users", "u3"), "x", {"text": "new"}),
            GetOp(("users", "u9"), "none"),
        ],
        ordered=True,
    )


# -- search without a query: prefix scoping, filters, paging --------------------------------


@pytest.mark.parametrize(
    "prefix",
    [(), ("users",), ("users", "u1"), ("users", "u2"), ("users", "u1", "work"), ("teams",), ("user",), ("nobody",)],
)
async def test_search_prefix_scoping(pair: Pair, prefix: tuple[str, ...]) -> None:
    await pair.put_all(PEOPLE)
    await pair.same("search", prefix, limit=100)


@pytest.mark.parametrize(
    "filter",
    [
        {"score": 7},
        {"score": {"$eq": 7}},
        {"score": {"$ne": 7}},
        {"score": {"$gt": 5}},
        {"score": {"$gte": 5}},
        {"score": {"$lt": 5}},
        {"score": {"$lte": 5}},
        {"score": {"$gt": 2, "$lt": 9}},
        {"active": True},
        {"active": False},
        {"active": {"$ne": True}},
        {"text": "my dog is called Biscuit"},
        {"tags": ["food", "asian"]},
        {"tags": ["asian", "food"]},
        {"meta": {"kind": "pet"}},
        {"meta": {"kind": "pet", "age": 3}},
        {"meta": {"kind": "pet", "age": 4}},
        {"missing": None},
        {"meta": {"kind": "food"}, "score": {"$lte": 2}},
        {"score": 4, "active": True},
        {"score": {"$ne": 4}, "active": {"$ne": True}},
    ],
)
async def test_search_filters(pair: Pair, filter: dict[str, Any]) -> None:
    await pair.put_all(PEOPLE)
    await pair.same("search", (), filter=filter, limit=100)
    await pair.same("search", ("users",), filter=filter, limit=100)


async def test_search_unknown_operator_is_an_error(pair: Pair) -> None:
    await pair.put_all(PEOPLE)
    await pair.same("search", (), filter={"score": {"$regex": "x"}})


@pytest.mark.parametrize("limit,offset", [(2, 0), (2, 2), (2, 4), (3, 5), (10, 0), (0, 0), (1, 6)])
async def test_search_paging(pair: Pair, limit: int, offset: int) -> None:
    """Pages have the same sizes, and the pages of the same listing never overlap."""
    await pair.put_all(PEOPLE)
    (_, ref), (_, sut) = await pair.both("search", (), limit=limit, offset=offset)
    assert len(ref) == len(sut)
    rest = await pair.sut.asearch((), limit=100)
    assert [(i.namespace, i.key) for i in sut] == [(i.namespace, i.key) for i in rest[offset : offset + limit]]


# -- search with a query --------------------------------------------------------------------


@pytest.mark.parametrize(
    "query,best",
    [
        ("ramen noodles", "food"),
        ("dog Biscuit", "pet"),
        ("nurse at night", "job"),
        ("red Volvo", "car"),
        ("release Friday", "goal"),
    ],
)
async def test_query_best_hit_and_set(pair: Pair, query: str, best: str) -> None:
    await pair.put_all(PEOPLE)
    hits = await pair.same_query((), query=query, limit=100)
    assert hits[0].key == best
    assert all(h.score is not None for h in hits)


async def test_query_within_prefix_and_filter(pair: Pair) -> None:
    await pair.put_all(PEOPLE)
    await pair.same_query(("users",), query="pizza pineapple", limit=100)
    await pair.same_query(("users",), query="pizza", filter={"score": {"$gte": 4}}, limit=100)
    await pair.same_query(("users", "u2"), query="dog", limit=100)
    await pair.same_query(("nobody",), query="dog", limit=100)


async def test_query_not_indexed_items_come_last_unscored(pair: Pair) -> None:
    await pair.put_all(PEOPLE[:3])
    await pair.put_all([(("users", "u1"), "secret", {"text": "ramen ramen ramen"})], index=False)
    hits = await pair.same_query(("users",), query="ramen", limit=100)
    assert hits[-1].key == "secret" and hits[-1].score is None


async def test_query_index_fields_per_put(make_pair: Any) -> None:
    pair = make_pair(fields=["text"])
    await pair.put_all(
        [(("d",), "a", {"text": "sailing boats", "note": "pizza"}), (("d",), "b", {"text": "pizza oven"})]
    )
    await pair.put_all([(("d",), "c", {"text": "quantum physics", "note": "pizza pizza"})], index=["note"])
    hits = await pair.same_query(("d",), query="pizza", limit=100)
    assert hits[-1].key == "a"  # its "note" is not indexed: pizza only counts for b and c
    await pair.put_all([(("d",), "e", {"other": "pizza"})])  # no "text" field: nothing to index
    hits = await pair.same_query(("d",), query="pizza", limit=100)
    assert hits[-1].key == "e" and hits[-1].score is None


async def test_query_limit(pair: Pair) -> None:
    await pair.put_all(PEOPLE)
    for limit in (1, 2, 3):
        (_, ref), (_, sut) = await pair.both("search", (), query="dog Biscuit", limit=limit)
        assert len(ref) == len(sut) == limit
        assert _norm(ref[0], True) == _norm(sut[0], True)


# -- list_namespaces --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"prefix": ("users",)},
        {"prefix": ("users", "u1")},
        {"prefix": ("user",)},
        {"suffix": ("work",)},
        {"suffix": ("u1",)},
        {"prefix": ("users", "*")},
        {"prefix": ("*", "u1")},
        {"suffix": ("*", "work")},
        {"prefix": ("users",), "suffix": ("u2",)},
        {"max_depth": 1},
        {"max_depth": 2},
        {"prefix": ("users",), "max_depth": 2},
        {"limit": 2},
        {"limit": 2, "offset": 2},
        {"offset": 10},
        {"prefix": ("nobody",)},
    ],
)
async def test_list_namespaces(pair: Pair, kwargs: dict[str, Any]) -> None:
    await pair.put_all(PEOPLE)
    await pair.same("list_namespaces", ordered=True, **kwargs)


# -- namespace validation and awkward labels -------------------------------------------------


@pytest.mark.parametrize("namespace", [("a.b",), ("a", ""), ("ok", "nul\x00"), (), ("langgraph", "x"), ("a", 1)])
async def test_invalid_namespaces_on_put(pair: Pair, namespace: tuple[Any, ...]) -> None:
    (rk, rv), (sk, sv) = await pair.both("put", namespace, "k", {"v": 1})
    assert rk == sk == "error" and rv is sv


@pytest.mark.parametrize("namespace", [("a.b",), ("a", "")])
async def test_invalid_namespaces_on_reads(pair: Pair, namespace: tuple[str, ...]) -> None:
    await pair.same("get", namespace, "k")
    await pair.same("search", namespace)
    await pair.same("list_namespaces", prefix=namespace)


async def test_invalid_namespace_in_raw_batch(pair: Pair) -> None:
    """``batch`` validates labels too (``validate_op_namespace``), not only the helper methods."""
    (rk, _), (sk, raised) = await pair.both("batch", [GetOp(("a.b",), "k")])
    assert sk == "error" and raised.__name__ == "InvalidNamespaceError"
    assert rk == "ok"  # the reference does not validate in batch; the store must (see docs)


async def test_labels_with_separators_and_escapes(pair: Pair) -> None:
    """``/``, ``%`` and blank labels are valid in LangGraph; they are escaped, never confused."""
    items = [
        (("a/b",), "k", {"v": 1}),
        (("a", "b"), "k", {"v": 2}),
        (("a%2Fb",), "k", {"v": 3}),
        ((" ",), "k", {"v": 4}),
        (("tab\tin", "new\nline"), "k", {"v": 5}),
        (("a",), "k", {"v": 6}),
    ]
    await pair.put_all(items)
    for namespace, key, _ in items:
        await pair.same("get", namespace, key)
    for prefix in [("a",), ("a/b",), ("a%2Fb",), (" ",), ("tab\tin",)]:
        await pair.same("search", prefix)
    await pair.same("list_namespaces", ordered=True)
    await pair.same("list_namespaces", prefix=("a",), ordered=True)
