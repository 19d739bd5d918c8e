"""What every memory offers, in this process or through a server, and opening one by its location.

:class:`MemoryAPI` is the contract that :class:`~ctxmem_plugin.memory.ContextMemory` (a memory
in this process) and :class:`~ctxmem_plugin.remote.RemoteMemory` (a memory server's client)
both implement, so code written against it (the LangChain integration, an agent) runs on
either. :func:`open_memory` picks the right one from a location string.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ctxmem_plugin.encoders.base import TextEncoder
from ctxmem_plugin.errors import InputError
from ctxmem_plugin.filters import Filters
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.records import Hit, IngestReport, Message, NewTurn, StoredTurn
from ctxmem_plugin.remote import RemoteMemory, is_server_url
from ctxmem_plugin.search import History

if TYPE_CHECKING:
    from ctxmem_plugin.formats import ParsedLog
    from ctxmem_plugin.namespaces import Namespace

NamespaceLike = Sequence[str] | str


class MemoryAPI(Protocol):
    """The methods of a memory, wherever it runs; each is documented on ``ContextMemory``.

    Attributes:
        read_only: whether writes are refused.
        encoder: the memory's encoder (through a server: one that asks the server).
    """

    read_only: bool
    encoder: TextEncoder

    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: object) -> None: ...
    def close(self) -> None: ...
    def flush(self) -> None: ...
    def load(self) -> None: ...

    @property
    def dim(self) -> int: ...

    @property
    def generation(self) -> int: ...

    def write(
        self, entries: Sequence[NewTurn], *, dedupe: bool = True, progress: Callable[[int], None] | None = None
    ) -> list[int]: ...
    def add(self, messages: Message | Iterable[Message], namespace: NamespaceLike, *, dedupe: bool = False) -> list[int]: ...
    def ingest(
        self,
        logs: Sequence[ParsedLog],
        namespace: NamespaceLike,
        *,
        split_conversations: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport: ...
    def delete(self, ids: Sequence[int]) -> list[int]: ...
    def forget(self, namespace: NamespaceLike) -> int: ...
    def reembed(self, *, batch: int = 256, progress: Callable[[int], None] | None = None) -> int: ...
    def get(self, ids: Sequence[int]) -> list[StoredTurn]: ...
    def get_by_key(self, namespace: NamespaceLike, key: str) -> StoredTurn | None: ...
    def list_turns(
        self,
        namespace: NamespaceLike = (),
        filters: Filters | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        order: str = "id",
    ) -> list[StoredTurn]: ...
    def iter_turns(self, namespace: NamespaceLike = (), *, batch: int = 1000) -> Iterator[list[StoredTurn]]: ...
    def namespaces(self, prefix: NamespaceLike = ()) -> list[tuple[Namespace, int]]: ...
    def search(
        self,
        query: str,
        namespace: NamespaceLike = (),
        k: int = 10,
        filters: Filters | None = None,
        *,
        method: str = "auto",
        offset: int = 0,
        history: History | None = None,
        history_mode: str = "auto",
    ) -> list[Hit]: ...
    def search_by_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        namespace: NamespaceLike = (),
        *,
        k: int = 10,
        filters: Filters | None = None,
    ) -> list[Hit]: ...
    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]: ...
    def context(
        self, query: str, namespace: NamespaceLike = (), max_tokens: int = 1000, *, k: int = 20,
        history: History | None = None,
    ) -> str: ...
    def explain(self, query: str, namespace: NamespaceLike, *, top_turns: int = 3) -> dict[str, Any]: ...
    def stats(self) -> dict[str, Any]: ...

    async def awrite(
        self, entries: Sequence[NewTurn], *, dedupe: bool = True, progress: Callable[[int], None] | None = None
    ) -> list[int]: ...
    async def aadd(self, messages: Message | Iterable[Message], namespace: NamespaceLike, *, dedupe: bool = False) -> list[int]: ...
    async def aingest(
        self,
        logs: Sequence[ParsedLog],
        namespace: NamespaceLike,
        *,
        split_conversations: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport: ...
    async def adelete(self, ids: Sequence[int]) -> list[int]: ...
    async def aforget(self, namespace: NamespaceLike) -> int: ...
    async def aget(self, ids: Sequence[int]) -> list[StoredTurn]: ...
    async def aget_by_key(self, namespace: NamespaceLike, key: str) -> StoredTurn | None: ...
    async def alist_turns(
        self,
        namespace: NamespaceLike = (),
        filters: Filters | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        order: str = "id",
    ) -> list[StoredTurn]: ...
    async def anamespaces(self, prefix: NamespaceLike = ()) -> list[tuple[Namespace, int]]: ...
    async def asearch(
        self,
        query: str,
        namespace: NamespaceLike = (),
        k: int = 10,
        filters: Filters | None = None,
        *,
        method: str = "auto",
        offset: int = 0,
        history: History | None = None,
        history_mode: str = "auto",
    ) -> list[Hit]: ...
    async def asearch_by_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        namespace: NamespaceLike = (),
        *,
        k: int = 10,
        filters: Filters | None = None,
    ) -> list[Hit]: ...
    async def avectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]: ...
    async def acontext(
        self, query: str, namespace: NamespaceLike = (), max_tokens: int = 1000, *, k: int = 20,
        history: History | None = None,
    ) -> str: ...
    async def aexplain(self, query: str, namespace: NamespaceLike, *, top_turns: int = 3) -> dict[str, Any]: ...
    async def astats(self) -> dict[str, Any]: ...


MEMBERS: tuple[str, ...] = tuple(
    sorted({n for n in vars(MemoryAPI) if not n.startswith("_")} | set(MemoryAPI.__annotations__) | {"__enter__", "__exit__"})
)
"""Every name of the contract."""

_MISSING = object()


def is_memory(obj: object) -> bool:
    """Whether ``obj`` has every member of :class:`MemoryAPI`.

    Looked up without running anything (``isinstance`` against a protocol would read each
    property, and a remote memory's properties are requests).
    """
    return not isinstance(obj, type) and all(inspect.getattr_static(obj, n, _MISSING) is not _MISSING for n in MEMBERS)


def open_memory(location: str | Path, *, token: str | None = None, timeout: float | None = None, **options: Any) -> MemoryAPI:
    """The memory at ``location``: a server's client for ``http(s)://...``, else a memory in this process.

    Args:
        location: ``http://host:port`` of a memory server (``ctxmem-plugin serve``), or what
            :class:`~ctxmem_plugin.memory.ContextMemory` opens (a directory).
        token: a server's bearer token (``None``: the environment variable ``CTXMEM_TOKEN``).
        timeout: seconds to wait for each answer of a server (default 60).
        options: ``ContextMemory``'s options (``model``, ``encoder``, ``read_only``...); a
            server has its own, so they are refused with a URL.

    Raises:
        InputError: options given for the other kind of location.
    """
    if is_server_url(location):
        if options:
            raise InputError(
                f"{', '.join(sorted(options))}: options of a memory in this process; the server at {location} "
                "has its own (give them to ctxmem-plugin serve)"
            )
        return RemoteMemory(str(location), token=token, timeout=60.0 if timeout is None else timeout)
    if token is not None or timeout is not None:
        raise InputError(f"token and timeout are options of a memory server; {location} is not one (http://host:port)")
    return ContextMemory(location, **options)
