"""RemoteMemory: ContextMemory's methods, answered by a memory server (``ctxmem-plugin serve``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.filters import Filters
from ctxmem_plugin.ingesting import ingest_logs
from ctxmem_plugin.records import Hit, IngestReport, Message, NewTurn, StoredTurn, Turn, to_turn
from ctxmem_plugin.remote.encoder import RemoteEncoder
from ctxmem_plugin.remote.transport import Transport
from ctxmem_plugin.search import History, thread_of
from ctxmem_plugin.twins import async_twin
from ctxmem_plugin.wire import (
    API_PREFIX,
    entry_to_json,
    hit_from_json,
    stored_from_json,
    turn_to_json,
    vector_to_json,
)

if TYPE_CHECKING:
    from ctxmem_plugin.formats import ParsedLog

NamespaceLike = Sequence[str] | str

TOKEN_ENV = "CTXMEM_TOKEN"
"""Environment variable holding the bearer token, when none is passed."""


class RemoteMemory:
    """A memory served by ``ctxmem-plugin serve``, with the methods of :class:`~ctxmem_plugin.memory.ContextMemory`.

    Every call is one HTTP request (JSON bodies) to the server, which keeps the encoder and the
    model loaded and is the one process writing the memory: any number of agent processes can
    share it. Results equal those of a ``ContextMemory`` on the same directory; the server's
    errors are raised again as the same exception classes.

    Args:
        url: the server, ``http://127.0.0.1:8765`` (a path prefix is kept, for a reverse proxy).
        token: the server's bearer token; ``None`` = the environment variable ``CTXMEM_TOKEN``, if set.
        timeout: seconds to wait for each answer (:class:`~ctxmem_plugin.errors.ServerError` after).

    Raises:
        ServerError: the server cannot be reached.
        AuthError: the token is missing or wrong.

    Example:
        >>> with RemoteMemory("http://127.0.0.1:8765") as mem:  # doctest: +SKIP
        ...     mem.add({"role": "user", "content": "My dog is called Biscuit"}, ("u1",))
        ...     mem.search("what is my dog's name?", ("u1",))[0].text
    """

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 60.0) -> None:
        self._http = Transport(url, token if token is not None else os.environ.get(TOKEN_ENV), timeout)
        self.url = self._http.url
        try:
            info = self._call("GET", "info")
        except BaseException:
            self._http.close()
            raise
        self.read_only: bool = bool(info["read_only"])
        self.encoder = RemoteEncoder(self._http, info["encoder"], int(info["dim"]))

    def __repr__(self) -> str:
        return f"RemoteMemory({self.url!r})"

    def _call(self, method: str, name: str, body: Any = None) -> Any:
        return self._http.request(method, f"{API_PREFIX}/{name}", body)

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> RemoteMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RemoteMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close this client's connections (the server and its memory stay up)."""
        self._http.close()

    def flush(self) -> None:
        """Have the server write the vector index to disk now."""
        self._call("POST", "flush", {})

    def load(self) -> None:
        """Nothing to do: the server loaded its encoder when it started."""

    @property
    def dim(self) -> int:
        """Width of the stored vectors, as the server's memory records it."""
        return int(self._call("GET", "info")["dim"])

    # -- writes ---------------------------------------------------------------------------

    def write(
        self, entries: Sequence[NewTurn], *, dedupe: bool = True, progress: Callable[[int], None] | None = None
    ) -> list[int]:
        """Store many turns at once (one request, one transaction on the server).

        ``progress`` is called once, with the number of entries, when the server has answered.
        """
        entries = list(entries)
        ids = self._call("POST", "write", {"entries": [entry_to_json(e) for e in entries], "dedupe": dedupe})["ids"]
        if progress is not None and entries:
            progress(len(entries))
        return ids

    def add(self, messages: Message | Iterable[Message], namespace: NamespaceLike, *, dedupe: bool = False) -> list[int]:
        """Store messages in ``namespace``; returns their ids, in order (validated here, stored there)."""
        if isinstance(messages, (Turn, Mapping)):
            messages = [messages]
        space = ns.validate(namespace)
        turns = [turn_to_json(to_turn(m, f"message {i}")) for i, m in enumerate(messages)]
        return self._call("POST", "add", {"messages": turns, "namespace": list(space), "dedupe": dedupe})["ids"]

    def ingest(
        self,
        logs: Sequence[ParsedLog],
        namespace: NamespaceLike,
        *,
        split_conversations: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Add parsed chat logs: parsed here, one write request per file."""
        return ingest_logs(self.write, logs, namespace, split_conversations=split_conversations, progress=progress)

    def delete(self, ids: Sequence[int]) -> list[int]:
        """Delete turns by id; returns the ids that existed."""
        return self._call("POST", "delete", {"ids": [int(i) for i in ids]})["ids"]

    def forget(self, namespace: NamespaceLike) -> int:
        """Remove everything under ``namespace`` (scrubbed from the server's disk); returns the count."""
        return int(self._call("POST", "forget", {"namespace": _labels(namespace)})["count"])

    def reembed(self, *, batch: int = 256, progress: Callable[[int], None] | None = None) -> int:
        """Re-encode every stored turn with the server's encoder; ``progress`` is called once at the end."""
        done = int(self._call("POST", "reembed", {"batch": batch})["count"])
        if progress is not None:
            progress(done)
        return done

    # -- reads ----------------------------------------------------------------------------

    def get(self, ids: Sequence[int]) -> list[StoredTurn]:
        """Turns by id (unknown ids are left out)."""
        return [stored_from_json(t) for t in self._call("POST", "get", {"ids": [int(i) for i in ids]})["turns"]]

    def get_by_key(self, namespace: NamespaceLike, key: str) -> StoredTurn | None:
        """The turn stored under ``key`` in exactly ``namespace``, if any."""
        turn = self._call("POST", "get_by_key", {"namespace": _labels(namespace), "key": key})["turn"]
        return None if turn is None else stored_from_json(turn)

    def list_turns(
        self,
        namespace: NamespaceLike = (),
        filters: Filters | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        order: str = "id",
    ) -> list[StoredTurn]:
        """Turns under a namespace prefix, without a query (``order``: ``id`` or ``-updated_at``)."""
        body = {"namespace": _labels(namespace), "filters": filters, "limit": limit, "offset": offset, "order": order}
        return [stored_from_json(t) for t in self._call("POST", "list_turns", body)["turns"]]

    def iter_turns(self, namespace: NamespaceLike = (), *, batch: int = 1000) -> Iterator[list[StoredTurn]]:
        """Every turn under a namespace prefix in the order stored, ``batch`` at a time, streamed in one answer."""
        for page in self._http.stream(f"{API_PREFIX}/iter_turns", {"namespace": _labels(namespace), "batch": batch}):
            yield [stored_from_json(t) for t in page["turns"]]

    def namespaces(self, prefix: NamespaceLike = ()) -> list[tuple[ns.Namespace, int]]:
        """Every namespace under ``prefix`` with its number of turns."""
        rows = self._call("POST", "namespaces", {"prefix": _labels(prefix)})["namespaces"]
        return [(tuple(row["namespace"]), int(row["turns"])) for row in rows]

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
    ) -> list[Hit]:
        """The ``k`` turns under the namespace prefix most relevant to ``query`` (see ``ContextMemory.search``)."""
        body = {
            "query": query, "namespace": _labels(namespace), "k": k, "filters": filters, "method": method,
            "offset": offset, "history": _history(history), "history_mode": history_mode,
        }
        return [hit_from_json(h) for h in self._call("POST", "search", body)["hits"]]

    def search_by_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        namespace: NamespaceLike = (),
        *,
        k: int = 10,
        filters: Filters | None = None,
    ) -> list[Hit]:
        """Exact dense search with a vector the caller embedded (see ``ContextMemory.search_by_vector``)."""
        body = {"vector": vector_to_json(vector), "namespace": _labels(namespace), "k": k, "filters": filters}
        return [hit_from_json(h) for h in self._call("POST", "search_by_vector", body)["hits"]]

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored embeddings of turns by id, ``(dim,)`` float32 each; unknown ids are left out."""
        answer = self._call("POST", "vectors", {"ids": [int(i) for i in ids]})
        return {int(i): np.asarray(v, dtype=np.float32) for i, v in zip(answer["ids"], answer["vectors"], strict=True)}

    @property
    def generation(self) -> int:
        """The server memory's write counter (equal values: nothing changed in between)."""
        return int(self._call("GET", "generation")["generation"])

    def context(
        self, query: str, namespace: NamespaceLike = (), max_tokens: int = 1000, *, k: int = 20,
        history: History | None = None,
    ) -> str:
        """Prompt-ready text: the most relevant memories, with speaker and time, within a budget."""
        body = {"query": query, "namespace": _labels(namespace), "max_tokens": max_tokens, "k": k,
                "history": _history(history)}
        return str(self._call("POST", "context", body)["text"])

    def explain(self, query: str, namespace: NamespaceLike, *, top_turns: int = 3) -> dict[str, Any]:
        """Which slots the query attends to, and which turns each of those slots holds most of."""
        return self._call("POST", "explain", {"query": query, "namespace": _labels(namespace), "top_turns": top_turns})

    def stats(self) -> dict[str, Any]:
        """Counts and sizes of the server's memory: turns per namespace, files on disk, encoder, model."""
        return self._call("GET", "stats")

    awrite = async_twin(write)
    aadd = async_twin(add)
    aingest = async_twin(ingest)
    adelete = async_twin(delete)
    aforget = async_twin(forget)
    aget = async_twin(get)
    aget_by_key = async_twin(get_by_key)
    alist_turns = async_twin(list_turns)
    anamespaces = async_twin(namespaces)
    asearch = async_twin(search)
    asearch_by_vector = async_twin(search_by_vector)
    avectors = async_twin(vectors)
    acontext = async_twin(context)
    aexplain = async_twin(explain)
    astats = async_twin(stats)


def _history(history: History | None) -> list[str] | str | list[dict[str, Any]] | None:
    """A search's thread as the server takes it: a namespace's labels, or its messages as turns
    (validated here, as ``ContextMemory.search`` validates them)."""
    thread = thread_of(history)
    if thread is None or isinstance(thread, tuple):
        return None if thread is None else list(thread)
    return [turn_to_json(t) for t in thread]


def _labels(namespace: NamespaceLike) -> list[str] | str:
    """A namespace as the server takes it: labels as given (it validates them, as ContextMemory does)."""
    return list(namespace) if isinstance(namespace, (tuple, list)) else namespace  # type: ignore[return-value]
