"""CtxMemStore: a LangGraph ``BaseStore`` (long-term memory of ``create_agent``) over ContextMemory.

An item is one turn: ``key`` = item key (a key upsert keeps ``created_at``), ``content`` = the
text of its indexed fields (what BM25 and the dense index see), ``metadata`` =
``{"store": "langgraph", "indexed": bool, "value": value}``. So a filter on a value field is a
metadata filter on ``value.field``, compiled to SQL, and a query is ctxmem's hybrid retrieval
(BM25 + dense + neighbours) restricted to the namespace prefix in SQL/FAISS.

Semantics follow ``InMemoryStore`` (checked by a differential test suite), except where the
reference is a quirk rather than a contract; those differences are listed in ``docs/integrations.md``:

* a search without a query returns the most recently updated items first (as the Postgres and
  SQLite stores do); ``InMemoryStore`` returns insertion order;
* ``list_namespaces`` lists namespaces that hold items; ``InMemoryStore`` also lists
  namespaces that were only read, or whose items were all deleted;
* a query search ranks with hybrid retrieval, then fills the page with the remaining matches
  (indexed first, then the non-indexed) with ``score=None``, honouring ``offset``;
* values must be JSON-serialisable (they are stored as JSON);
* a ``.`` in a filter key addresses a nested field; keys are letters, digits, ``_``, ``-``;
* an item is always indexed (``fields=["$"]`` by default): the memory always has an encoder.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from ctxmem_plugin import namespaces as core_ns
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.records import StoredTurn
from langchain_ctxmem._memory import MemoryLike, open_memory
from langchain_ctxmem._namespaces import from_core, to_core
from langchain_ctxmem._store_filters import to_core_filters
from langchain_ctxmem._ttl import TTLTable
from langchain_ctxmem.embeddings import as_encoder

MARK = "langgraph"
"""``metadata["store"]`` of every turn this store writes; reads never see other turns."""

NOT_INDEXED = "(not indexed)"
"""Content of an item with nothing to index (a turn needs text); such items never match a query."""

DEFAULT_ROOT: tuple[str, ...] = ("langgraph-store",)

REMOTE_TTL = (
    "TTLs are kept in a table beside a memory's directory, which a memory server's clients do not share: "
    "a CtxMemStore over a RemoteMemory supports no TTL (put without ttl, or open the memory directory itself)"
)


class CtxMemStore(BaseStore):
    """LangGraph long-term memory store backed by a ctxmem memory.

    Args:
        memory: an open memory (``ContextMemory`` or ``RemoteMemory``, left open by :meth:`close`),
            a directory or a memory server's URL to open.
        index: like ``InMemoryStore``'s: ``fields`` (JSON paths to index, default ``["$"]``, the
            whole value); ``embed`` (a LangChain ``Embeddings``, a function or a provider string)
            and ``dims`` only when ``memory`` is a path: the memory is then opened with them.
            Without ``embed`` the memory's own encoder (all-MiniLM-L6-v2 by default) is used.
        ttl: TTL settings (``default_ttl`` minutes, ``refresh_on_read``). Expired items are
            deleted before each batch runs, so ``sweep_interval_minutes`` is not needed.
            A memory in PostgreSQL or behind a memory server has no TTLs (``supports_ttl`` is
            then ``False``): ``put(..., ttl=...)`` raises ``NotImplementedError``.
        root: core namespace labels that every store namespace lives under, so the store
            never sees turns written by other integrations into the same memory. ``()`` puts
            store namespaces at the top level (for a memory used by this store alone).
        clock: seconds since the epoch (tests pass a fake clock to exercise TTLs).

    Example:
        >>> from langchain.agents import create_agent  # doctest: +SKIP
        >>> store = CtxMemStore("agent-memory")  # doctest: +SKIP
        >>> store.put(("users", "u1"), "food", {"text": "likes ramen"})  # doctest: +SKIP
        >>> store.search(("users", "u1"), query="what food?")[0].value  # doctest: +SKIP
        >>> agent = create_agent(model, tools, store=store)  # doctest: +SKIP
    """

    supports_ttl: bool = True

    def __init__(
        self,
        memory: MemoryLike,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        root: Sequence[str] = DEFAULT_ROOT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        config: dict[str, Any] = dict(index or {})
        encoder = None
        if config.get("embed") is not None:
            embed = config["embed"]
            encoder = as_encoder(
                embed if hasattr(embed, "encode_query") else ensure_embeddings(embed), dim=config.get("dims")
            )
        self.memory, self._owns_memory = open_memory(memory, encoder)
        self.index_config = index
        self._fields = [(p, p if p == "$" else tokenize_path(p)) for p in (config.get("fields") or ["$"])]
        self.root = core_ns.validate(tuple(root), allow_empty=True)
        self.ttl_config = ttl
        self._clock = clock
        # Expiries live in a table beside an embedded memory's directory. A database-backed
        # memory has no such place, and a memory server's client none to share with the
        # server's other clients, so TTLs are refused there (LangGraph's NotImplementedError on put).
        local = isinstance(self.memory, ContextMemory)
        self.supports_ttl = local and self.memory.path is not None
        if not local and ttl is not None and ttl.get("default_ttl") is not None:
            raise NotImplementedError(REMOTE_TTL)
        if local and not self.supports_ttl and ttl and ttl.get("default_ttl") is not None:
            raise ValueError(f"TTLs need an embedded memory (a directory); {self.memory.store.location} is a database")
        self._ttl = TTLTable(self.memory.path) if self.supports_ttl and not self.memory.read_only else None

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the TTL table, and the memory if this store opened it."""
        if self._ttl is not None:
            self._ttl.close()
            self._ttl = None
        if self._owns_memory:
            self.memory.close()

    def __enter__(self) -> CtxMemStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- batch ----------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ops in order; reads see the state before this batch's writes (as InMemoryStore).

        Puts to the same ``(namespace, key)`` in one batch: the last one wins.
        """
        ops = list(ops)
        for op in ops:
            _validate(op)
        now = self._clock()
        self.sweep_ttl(now)
        results: list[Result] = []
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        touched: list[tuple[str, str]] = []
        for op in ops:
            if isinstance(op, GetOp):
                item = self._get(op)
                if item is not None and op.refresh_ttl:
                    touched.append(self._ttl_entry(op.namespace, op.key))
                results.append(item)
            elif isinstance(op, SearchOp):
                items = self._search(op)
                if op.refresh_ttl:
                    touched += [self._ttl_entry(it.namespace, it.key) for it in items]
                results.append(items)
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(op))
            elif isinstance(op, PutOp):
                puts[(op.namespace, op.key)] = op
                results.append(None)
            else:
                raise ValueError(f"Unknown operation type: {type(op)}")
        if touched and self._ttl is not None:
            self._ttl.refresh(touched, now)
        if puts:
            self._put(list(puts.values()), now)
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async twin of :meth:`batch` (runs it in a worker thread)."""
        return await asyncio.to_thread(self.batch, list(ops))

    # -- ops ------------------------------------------------------------------------------

    def _core(self, namespace: Sequence[str], *, allow_empty: bool = True) -> core_ns.Namespace:
        return to_core(self.root, namespace, allow_empty=allow_empty)

    def _ttl_entry(self, namespace: Sequence[str], key: str) -> tuple[str, str]:
        return core_ns.to_key(self._core(namespace)), key

    def _get(self, op: GetOp) -> Item | None:
        space = self._core(op.namespace)
        if not space:
            return None  # nothing is ever stored at the root
        turn = self.memory.get_by_key(space, op.key)
        if turn is None or turn.metadata.get("store") != MARK:
            return None
        found = self._item(turn)
        return Item(
            value=found.value,
            key=found.key,
            namespace=found.namespace,
            created_at=found.created_at,
            updated_at=found.updated_at,
        )

    def _search(self, op: SearchOp) -> list[SearchItem]:
        if op.limit < 0 or op.offset < 0:
            raise ValueError("limit and offset must be >= 0")
        prefix = self._core(op.namespace_prefix)
        filters = {"store": MARK, **to_core_filters(op.filter)}
        if not op.query or not op.query.strip():
            rows = self.memory.list_turns(prefix, filters, limit=op.limit, offset=op.offset, order="-updated_at")
            return [self._item(row, None) for row in rows]
        want = op.offset + op.limit
        if want == 0:
            return []
        indexed = {**filters, "indexed": True}
        hits = self.memory.search(op.query, prefix, k=want, filters=indexed)
        ranked: list[tuple[int, float | None]] = [(h.id, h.score) for h in hits]
        if len(ranked) < want:
            ranked += self._fill(prefix, indexed, filters, {h.id for h in hits}, want - len(ranked))
        page = ranked[op.offset : want]
        rows = {t.id: t for t in self.memory.get([i for i, _ in page])}
        return [self._item(rows[i], score) for i, score in page if i in rows]

    def _fill(
        self, prefix: core_ns.Namespace, indexed: dict[str, Any], filters: dict[str, Any], seen: set[int], need: int
    ) -> list[tuple[int, float | None]]:
        """Matches the ranking did not return, unscored: indexed ones first, then the others.

        Hybrid retrieval draws a bounded candidate pool; a page past it still gets every match,
        as InMemoryStore (which scores everything) would give it.
        """
        out: list[tuple[int, float | None]] = []
        for rows in (
            self.memory.list_turns(prefix, indexed, limit=need + len(seen), order="-updated_at"),
            self.memory.list_turns(prefix, {**filters, "indexed": False}, limit=need, order="-updated_at"),
        ):
            out += [(row.id, None) for row in rows if row.id not in seen][: need - len(out)]
        return out

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conditions = op.match_conditions or ()
        lead: tuple[str, ...] = ()
        for cond in conditions:
            if cond.match_type == "prefix":
                literal = tuple(label for label in _until_wildcard(cond.path))
                lead = literal if len(literal) > len(lead) else lead
        spaces = [from_core(self.root, space) for space, _count in self.memory.namespaces(self._core(lead))]
        spaces = [space for space in spaces if space and all(_matches(cond, space) for cond in conditions)]
        depth = op.max_depth
        spaces = sorted({space[:depth] for space in spaces}) if depth is not None else sorted(spaces)
        return spaces[op.offset : op.offset + op.limit]

    def _put(self, ops: list[PutOp], now: float) -> None:
        deletes: list[int] = []
        gone: list[tuple[str, str]] = []
        writes: dict[core_ns.Namespace, list[dict[str, Any]]] = defaultdict(list)
        expiring: list[tuple[str, str, float]] = []
        lasting: list[tuple[str, str]] = []
        for op in ops:  # everything is validated before the first write
            space = self._core(op.namespace, allow_empty=False)
            entry = (core_ns.to_key(space), op.key)
            if op.value is None:
                turn = self.memory.get_by_key(space, op.key)
                if turn is not None and turn.metadata.get("store") == MARK:
                    deletes.append(turn.id)
                gone.append(entry)
                continue
            value = dict(op.value)
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"value of {op.namespace!r}/{op.key!r} is not JSON-serialisable: {exc}") from exc
            texts = self._texts(value, op.index)
            writes[space].append(
                {
                    "role": "user",
                    "content": "\n".join(texts) if texts else NOT_INDEXED,
                    "key": op.key,
                    "metadata": {"store": MARK, "indexed": bool(texts), "value": value},
                }
            )
            if op.ttl is not None:
                expiring.append((*entry, float(op.ttl)))
            else:
                lasting.append(entry)
        if expiring and not self.supports_ttl:
            raise NotImplementedError(REMOTE_TTL)
        if expiring and self._ttl is None:
            raise ValueError("TTLs need a writable memory")
        if self._ttl is not None:
            self._ttl.set(expiring, now)  # before the items: a crash leaves a harmless expiry, never loses one
        for space, messages in writes.items():
            self.memory.add(messages, space)
        if deletes:
            self.memory.delete(deletes)
        if self._ttl is not None:
            self._ttl.clear([*lasting, *gone])

    def _texts(self, value: dict[str, Any], index: Any) -> list[str]:
        if index is False:
            return []
        paths = self._fields if index is None else [(p, p if p == "$" else tokenize_path(p)) for p in index]
        texts: list[str] = []
        for _path, tokens in paths:
            texts += [t for t in get_text_at_path(value, tokens) if t.strip()]
        return texts

    def _item(self, turn: StoredTurn, score: float | None = None) -> SearchItem:
        return SearchItem(
            namespace=from_core(self.root, turn.namespace),
            key=turn.key or "",
            value=turn.metadata["value"],
            created_at=datetime.fromtimestamp(turn.created_at, tz=UTC),
            updated_at=datetime.fromtimestamp(turn.updated_at, tz=UTC),
            score=score,
        )

    # -- TTL ------------------------------------------------------------------------------

    def sweep_ttl(self, now: float | None = None) -> int:
        """Delete the items whose TTL has run out; returns how many. Runs before every batch."""
        if self._ttl is None or self._ttl.empty:
            return 0
        expired = self._ttl.expired(self._clock() if now is None else now)
        if not expired:
            return 0
        ids = []
        for space_key, key in expired:
            turn = self.memory.get_by_key(core_ns.from_key(space_key), key)
            if turn is not None and turn.metadata.get("store") == MARK:
                ids.append(turn.id)
        if ids:
            self.memory.delete(ids)
        self._ttl.clear(expired)
        return len(ids)


def _validate(op: Op) -> None:
    """LangGraph's own label rules, plus what ``put()`` checks before it batches."""
    validate_op_namespace(op)
    if isinstance(op, PutOp) and op.value is not None:
        if not op.namespace:
            raise InvalidNamespaceError("Namespace cannot be empty.")
        if op.namespace[0] == "langgraph":
            raise InvalidNamespaceError(f'Root label for namespace cannot be "langgraph". Got: {op.namespace}')


def _until_wildcard(path: Sequence[str]) -> Iterable[str]:
    for label in path:
        if label == "*":
            return
        yield label


def _matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    """Whether ``namespace`` starts (``prefix``) or ends (``suffix``) with the path; ``*`` = any label."""
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace[: len(path)], path, strict=True)
    elif condition.match_type == "suffix":
        pairs = zip(namespace[len(namespace) - len(path) :][::-1], path[::-1], strict=True)
    else:
        raise ValueError(f"Unsupported match type: {condition.match_type}")
    return all(want == "*" or have == want for have, want in pairs)
