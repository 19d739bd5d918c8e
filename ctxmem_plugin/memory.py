"""ContextMemory: the one API that the CLI and every integration call.

It ties the parts together and holds no logic of its own beyond that: rows live in the store
(:mod:`ctxmem_plugin.storage`), text becomes vectors in :mod:`ctxmem_plugin.encoders`, a search
is candidates (:mod:`ctxmem_plugin.retrieval`) -> an optional trained re-ranker
(:mod:`ctxmem_plugin.reranker`) -> hits.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin import arguments, safejson
from ctxmem_plugin.encoders import TextEncoder, load_encoder
from ctxmem_plugin.errors import InputError, ModelMismatchError
from ctxmem_plugin.filters import Filters
from ctxmem_plugin.ingesting import ingest_logs
from ctxmem_plugin.records import (
    Hit,
    IngestReport,
    Message,
    NewTurn,
    StoredTurn,
    Turn,
    to_turn,
)
from ctxmem_plugin.remote.transport import is_server_url
from ctxmem_plugin.retrieval.context import render_hits
from ctxmem_plugin.retrieval.hybrid import METHODS, HybridRetriever, RetrievalConfig
from ctxmem_plugin.search import (
    History,
    conversational_query,
    history_mode_of,
    hit_of,
    run_fused_search,
    run_search,
    thread_of,
)
from ctxmem_plugin.storage import is_url, open_store, require_memory
from ctxmem_plugin.storage.ann import IndexConfig
from ctxmem_plugin.storage.base import MemoryStore
from ctxmem_plugin.storage.opening import meta_number
from ctxmem_plugin.storage.sqlite import VECTOR_DTYPES
from ctxmem_plugin.twins import async_twin
from ctxmem_plugin.writes import reembed_all, write_entries

if TYPE_CHECKING:  # torch comes with the re-ranker: imported only when a model is given
    from ctxmem_plugin.formats import ParsedLog
    from ctxmem_plugin.reranker.runtime import Reranker

NamespaceLike = Sequence[str] | str


class ContextMemory:
    """Long-term memory for agents, in one directory or one PostgreSQL database.

    Args:
        path: where the memory lives: a directory (the embedded store; created if missing,
            unless ``read_only``) or ``postgresql://user@host/database`` (the PostgreSQL store,
            extra ``[postgres]``; its schema is created if missing, unless ``read_only``).
        model: a trained ctxmem model directory (slots + scorer); ``None`` = hybrid retrieval only.
        encoder: the embedding model: a local sentence-transformers directory or an encoder
            object; ``None`` = the encoder the model was trained with (the tuned one it carries,
            if any), else all-MiniLM-L6-v2. It is loaded on the first text to embed.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        read_only: open for reading only; a missing memory is then an error.
        create: create the memory if it does not exist (with ``False``, a missing one is an error).
        retrieval: hybrid retrieval settings.
        lock_timeout: seconds to wait for another process writing to this memory (a
            directory admits one writing process; PostgreSQL any number).
        index: how an embedded memory's dense search is done: exactly up to ``exact_limit``
            turns under the prefix searched, approximately above
            (:class:`~ctxmem_plugin.storage.ann.IndexConfig`).
        vector_dtype: how a new embedded memory stores its vectors: ``"float32"`` (default) or
            ``"float16"`` (half the bytes, scores within about 1e-3); an existing memory keeps
            the one it was created with, and naming another is an error.

    Example:
        >>> with ContextMemory("memdir") as mem:  # doctest: +SKIP
        ...     mem.add([{"role": "user", "content": "My dog is called Biscuit"}], namespace=("u1",))
        ...     mem.search("what is my dog's name?", namespace=("u1",))[0].text
    """

    def __init__(
        self,
        path: str | Path,
        *,
        model: str | Path | None = None,
        encoder: str | Path | TextEncoder | None = None,
        device: str = "auto",
        read_only: bool = False,
        create: bool = True,
        retrieval: RetrievalConfig | None = None,
        lock_timeout: float = 10.0,
        index: IndexConfig | None = None,
        vector_dtype: str | None = None,
    ) -> None:
        if is_server_url(path):
            raise InputError(
                f"{path} is a memory server, not a directory: open it with RemoteMemory({str(path)!r}) "
                "or ctxmem_plugin.open_memory(), which take the same methods"
            )
        self.location = str(path)
        self.path: Path | None = None if is_url(path) else Path(path)  # None for a database
        self.read_only = read_only
        self.device = device
        require_memory(path, read_only=read_only, create=create)  # before loading any model: fail fast
        # Model and encoder are checked before anything touches the disk: a bad --model or
        # --encoder must not leave an empty memory behind.
        self.reranker: Reranker | None = None
        if model is not None:
            from ctxmem_plugin.reranker.runtime import Reranker

            self.reranker = Reranker.load(Path(model), device=device)
            if encoder is None:
                encoder = self.reranker.encoder_for(device)
        self.encoder = load_encoder(encoder, device=device)
        if self.reranker is not None and self.reranker.bundles_encoder and self.encoder.name != self.reranker.model.config.encoder:
            raise ModelMismatchError(
                f"the model {model} carries its own encoder {self.reranker.model.config.encoder!r}; "
                f"it cannot rank with {self.encoder.name!r}: leave the encoder out"
            )
        if vector_dtype is not None and vector_dtype not in VECTOR_DTYPES:
            raise InputError(f"vector_dtype must be one of {', '.join(VECTOR_DTYPES)}, got {vector_dtype!r}")
        if self.path is None and (index is not None or vector_dtype not in (None, "float32")):
            raise InputError("index= and float16 vectors are settings of an embedded memory (a directory); "
                             "a PostgreSQL memory indexes its float32 vectors with pgvector's HNSW")
        self._vector_dtype = vector_dtype
        self._guard = threading.RLock()
        self._encoder_checked = False
        self.store: MemoryStore = open_store(
            path, read_only=read_only, create=create, lock_timeout=lock_timeout, index=index
        )
        try:
            recorded = self.store.get_meta("vector_dtype") or "float32"
            if vector_dtype is not None and self.store.get_meta("encoder") is not None and vector_dtype != recorded:
                raise InputError(f"{self.location} stores its vectors as {recorded}, not {vector_dtype}")
            if self.reranker is not None:
                self.reranker.store = self.store
            self.retrieval = retrieval or RetrievalConfig()
            if self.reranker is not None:
                # The model's features were computed with its own retrieval settings.
                self.retrieval = self.reranker.retrieval_config(self.retrieval)
        except BaseException:
            self.store.close()
            raise

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> ContextMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ContextMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Close the store: release the writer lock (a directory) or the connections (a database)."""
        with self._guard:
            if getattr(self, "store", None) is None:
                return
            self.store.close()
            self.store = None  # type: ignore[assignment]

    def flush(self) -> None:
        """Kept for compatibility: every write is in the database when it returns (nothing is kept aside)."""
        with self._guard:
            self.store.flush()

    def load(self) -> None:
        """Load the encoder now, instead of on the first text to embed."""
        with self._guard:
            self._require_encoder()

    # -- encoder and index --------------------------------------------------------------------

    def _require_encoder(self) -> None:
        """Before anything is embedded: this memory's recorded encoder must be this one.

        A new memory records the encoder's name and width; an existing one refuses another.
        """
        if self._encoder_checked:
            return
        name, dim = self.store.get_meta("encoder"), meta_number(self.store, "dim")
        if name is None:
            if not self.read_only:
                with self.store.transaction():
                    self.store.set_meta("encoder", self.encoder.name)
                    self.store.set_meta("dim", str(self.encoder.dim))
                    self.store.set_meta("vector_dtype", self._vector_dtype or "float32")
        elif name != self.encoder.name or (dim or 0) != self.encoder.dim:
            raise ModelMismatchError(
                f"{self.store.location} was built with encoder {name!r} ({dim}-d), not {self.encoder.name!r} "
                f"({self.encoder.dim}-d); open it with the same encoder, or re-encode it with this one "
                "(ctxmem-plugin reembed, ContextMemory.reembed())"
            )
        self._encoder_checked = True

    @property
    def dim(self) -> int:
        """Width of the stored vectors: as recorded in the memory, else the encoder's."""
        recorded = meta_number(self.store, "dim")
        return recorded if recorded else self.encoder.dim

    @property
    def retriever(self) -> HybridRetriever:
        """The candidate stage of search, over this memory's store and index."""
        return HybridRetriever(self.store, self.retrieval)

    # -- writes ---------------------------------------------------------------------------

    def write(
        self, entries: Sequence[NewTurn], *, dedupe: bool = True, progress: Callable[[int], None] | None = None
    ) -> list[int]:
        """Store many turns at once: one batched encode, one transaction; the path of every write.

        Args:
            entries: the turns with their namespaces (and optionally their positions and vectors).
            dedupe: skip a turn whose content and position are already stored in its namespace
                (or earlier in ``entries``); its id is returned as ``-1``.
            progress: called with a count of turns as they are encoded (256 at a time) or found
                already present.

        Returns:
            An id per entry, in order; ``-1`` for a turn skipped as already present.
        """
        self._writable()
        with self._guard:
            return write_entries(
                self.store, self.encoder, self.dim, entries, dedupe=dedupe, progress=progress,
                on_rows=self.reranker.update_many if self.reranker is not None else None, before_encoding=self._require_encoder,
            )

    def add(self, messages: Message | Iterable[Message], namespace: NamespaceLike, *, dedupe: bool = False) -> list[int]:
        """Store messages in ``namespace``; returns their ids, in order.

        Args:
            messages: one or more :class:`Turn` or dicts ``{"role", "content", "speaker"?,
                "timestamp"?, "metadata"?, "key"?}``.
            namespace: where they belong, e.g. ``("user-42", "session-7")``.
            dedupe: skip messages identical to one already in the namespace (their id is
                returned as ``-1``).
        """
        if isinstance(messages, (Turn, Mapping)):
            messages = [messages]
        space = ns.validate(namespace)
        turns = [to_turn(m, f"message {i}") for i, m in enumerate(messages)]
        return self.write([NewTurn(space, t) for t in turns], dedupe=dedupe)

    def ingest(
        self,
        logs: Sequence[ParsedLog],
        namespace: NamespaceLike,
        *,
        split_conversations: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Add parsed chat logs (:func:`ctxmem_plugin.formats.read_paths`), one transaction per file.

        Re-ingesting the same file adds nothing: each turn is identified by its content and its
        position in its conversation.

        Args:
            logs: the parsed files.
            namespace: where their turns go.
            split_conversations: each conversation in ``namespace/<conversation id>``.
            progress: called with a count of turns as they are encoded (or found present).
        """
        return ingest_logs(self.write, logs, namespace, split_conversations=split_conversations, progress=progress)

    def delete(self, ids: Sequence[int]) -> list[int]:
        """Delete turns by id; returns the ids that existed.

        Their words leave the full-text indexes' files when this memory is closed (a merge of
        the indexes, as :meth:`forget` runs at once), or on the next open after a crash.
        """
        self._writable()
        ids = arguments.turn_ids(ids)
        with self._guard, self.store.transaction():
            return self.store.delete(ids)

    def forget(self, namespace: NamespaceLike) -> int:
        """Remove everything under ``namespace`` (rows, full-text entries, vectors, slot states).

        In a directory, deleted content is overwritten in the database file, the full-text
        indexes are merged, the file is rewritten (``VACUUM``) and the WAL is truncated, so
        nothing of it is left on disk; the delete's transaction records a pending scrub, so that
        if the process dies before the scrub ends, the next writer to open the memory runs it.
        In PostgreSQL the rows are deleted (no query can see them once this returns) and the
        tables are vacuumed; the freed bytes stay on disk until reused (``docs/deployment.md``
        says how to erase them). Returns the count.
        """
        self._writable()
        space = ns.validate(namespace)
        with self._guard:
            with self.store.transaction():
                ids = self.store.forget(space)
            self.store.scrub()
            return len(ids)

    def reembed(self, *, batch: int = 256, progress: Callable[[int], None] | None = None) -> int:
        """Re-encode every stored turn with this memory's encoder and make it the memory's encoder.

        For a memory built before a model with its own tuned encoder was trained: open it with
        that model (or the new encoder) and re-encode it once. All in one transaction, so a
        crash leaves the old vectors and encoder in place. Slot states are dropped (they are
        rebuilt from the new vectors on first use) and the approximate index's cells are trained
        again from the new vectors before it commits (when the memory is large enough to have them).

        Args:
            batch: turns encoded per step.
            progress: called with the number of turns encoded after every step.

        Returns:
            The number of turns re-encoded.
        """
        self._writable()
        with self._guard:
            done = reembed_all(self.store, self.encoder, batch=batch, progress=progress)
            self._encoder_checked = True
            return done

    def _writable(self) -> None:
        if self.read_only:
            raise InputError("this memory was opened read-only")

    # -- reads ----------------------------------------------------------------------------

    def get(self, ids: Sequence[int]) -> list[StoredTurn]:
        """Turns by id (unknown ids are left out)."""
        ids = arguments.turn_ids(ids)
        with self._guard:
            return self.store.get(ids)

    def get_by_key(self, namespace: NamespaceLike, key: str) -> StoredTurn | None:
        """The turn stored under ``key`` in exactly ``namespace``, if any."""
        if not isinstance(key, str) or not safejson.is_unicode(key):
            raise InputError(f"key must be a string of valid Unicode text, got {safejson.show(key)}")
        with self._guard:
            return self.store.get_by_key(ns.validate(namespace), key)

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
        if limit is not None:
            arguments.count("limit", limit)
        arguments.count("offset", offset)
        if order not in ("id", "-updated_at"):
            raise InputError(f"order must be 'id' or '-updated_at', got {safejson.show(order)}")
        with self._guard:
            return self.store.select(ns.validate(namespace, allow_empty=True), filters, limit=limit, offset=offset, order=order)

    def iter_turns(self, namespace: NamespaceLike = (), *, batch: int = 1000) -> Iterator[list[StoredTurn]]:
        """Every turn under a namespace prefix in the order stored, ``batch`` at a time (exports, backups)."""
        space = ns.validate(namespace, allow_empty=True)
        pages = self.store.iter_select(space, batch)
        while True:
            with self._guard:
                page = next(pages, None)
            if page is None:
                return
            yield page

    def namespaces(self, prefix: NamespaceLike = ()) -> list[tuple[ns.Namespace, int]]:
        """Every namespace under ``prefix`` with its number of turns."""
        with self._guard:
            return self.store.namespaces(ns.validate(prefix, allow_empty=True))

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
        """The ``k`` turns under the namespace prefix most relevant to ``query``.

        The pipeline: candidates (BM25 and dense search under the prefix, fused, with their
        neighbouring turns) -> the trained re-ranker, with ``method="ctxmem"`` -> hits.

        Args:
            query: what to look for (a question, the user's latest message...).
            namespace: the prefix to search under; only turns under it can be returned.
            k: how many hits.
            filters: metadata filters, e.g. ``{"session": {"$gte": 3}}`` (see :mod:`ctxmem_plugin.filters`).
            method: ``auto`` (``ctxmem`` with a model, else ``hybrid``), ``ctxmem``, ``hybrid``,
                ``bm25`` or ``dense``.
            offset: skip this many of the best hits (paging).
            history: the running thread the query is asked in, oldest first, so that a
                follow-up ("and the painting?") is searched for what it refers to: a list of
                messages (:class:`Turn` or ``{"role", "content"}`` dicts), or the namespace
                where the thread is stored (kept apart from the history searched, as the
                LangChain middleware keeps it). ``None`` or empty: the query alone.
            history_mode: how the thread is used (:mod:`ctxmem_plugin.retrieval.history`):
                ``fuse`` (the query alone and the query after the thread's last 5 turns, both
                searched, their rankings merged), ``concat`` (only the latter) or ``slots``
                (the model's focus slot, a trace of the thread; needs ``method`` ``ctxmem``).
                ``auto`` is ``fuse``: on held-out threads it keeps most of ``concat``'s gain
                on follow-ups without its loss on questions that need no thread
                (docs/benchmarks.md).
        """
        arguments.query(query)
        arguments.count("k", k)
        arguments.count("offset", offset)
        space = ns.validate(namespace, allow_empty=True)
        if method == "auto":
            method = "ctxmem" if self.reranker is not None else "hybrid"
        if method not in (*METHODS, "ctxmem"):
            raise InputError(f"unknown method {method!r}; expected auto, ctxmem, {', '.join(METHODS)}")
        if method == "ctxmem" and self.reranker is None:
            raise InputError("method 'ctxmem' needs a trained model: ContextMemory(path, model=DIR)")
        thread = thread_of(history)
        mode = history_mode_of(history_mode, method, thread_given=thread is not None)
        with self._guard:
            text, focus = query, None
            if thread is not None:
                if mode == "slots":  # its focus embeds the thread's messages
                    self._require_encoder()
                encoder = self.encoder if mode == "slots" else None
                text, focus = conversational_query(self.store, encoder, self.reranker, query, thread, mode, self.dim)
            if mode == "fuse" and text != query:  # an empty thread joins nothing: one plain search
                alone, joined = ((t, self._query_vector(t, method)) for t in (query, text))
                return run_fused_search(self.store, self.retrieval, self.reranker, alone, joined, space, k=k,
                                        filters=filters, method=method, offset=offset)
            qv = self._query_vector(text, method)
            return run_search(
                self.store, self.retrieval, self.reranker, text, qv, space, k=k, filters=filters, method=method,
                offset=offset, focus=focus,
            )

    def _query_vector(self, text: str, method: str) -> np.ndarray:
        if method == "bm25":  # BM25 alone needs no embedding: skip the encoder's ~20 ms
            return np.zeros(self.dim, np.float32)
        self._require_encoder()
        return self.encoder.encode_query(text)

    def search_by_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        namespace: NamespaceLike = (),
        *,
        k: int = 10,
        filters: Filters | None = None,
    ) -> list[Hit]:
        """Exact dense search with a vector the caller embedded (any scale: it is L2-normalised).

        For callers that bring their own query vectors: a vector store's search by vector, MMR,
        a query embedded once and reused. ``score`` is the cosine to the stored turn vector, and
        ``signals["dense"]`` holds it with its rank. Ties are broken by id.

        Raises:
            InputError: ``k < 0``, a vector that is not finite, or not of the encoder's width.
        """
        arguments.count("k", k)
        q = np.asarray(vector, dtype=np.float32).reshape(-1)  # (d,)
        if not np.isfinite(q).all():
            raise InputError("the query vector holds NaN or infinite values")
        norm = float(np.linalg.norm(q))
        q = q / norm if norm > 0 else q
        space = ns.validate(namespace, allow_empty=True)
        with self._guard, self.store.reading():  # FAISS must not be searched while another thread adds to it
            dim = self.dim
            if q.shape[0] != dim:
                raise InputError(f"the query vector has {q.shape[0]} dimensions; this memory's encoder has {dim}")
            ids, scores = self.store.dense(q, k, space, filters)
            rows = {t.id: t for t in self.store.get(ids.tolist())}
        return [
            hit_of(row, float(score), {"dense": {"score": float(score), "rank": rank}})
            for rank, (turn_id, score) in enumerate(zip(ids.tolist(), scores.tolist()), start=1)
            if (row := rows.get(int(turn_id))) is not None
        ]

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored embeddings of turns by id, ``(dim,)`` float32 each; unknown ids are left out."""
        ids = arguments.turn_ids(ids)
        with self._guard:
            by_id = self.store.vector_map(ids)
        return {int(i): by_id[int(i)].copy() for i in ids if int(i) in by_id}  # writable, in the order asked

    @property
    def generation(self) -> int:
        """A counter that every committed write moves on (add, delete, forget, import).

        Equal values mean the memory's content has not changed in between: a cache of search
        results can be kept while it stays the same.
        """
        with self._guard:
            return self.store.generation

    def context(
        self, query: str, namespace: NamespaceLike = (), max_tokens: int = 1000, *, k: int = 20,
        history: History | None = None,
    ) -> str:
        """Prompt-ready text: the most relevant memories, with speaker and time, within a budget.

        The best hits (``search(query, namespace, k=k, history=history)``) are taken while they
        fit in ``max_tokens`` (estimated as characters / 4), then shown in the order they were
        said (:func:`ctxmem_plugin.retrieval.context.pack_hits`).
        """
        arguments.count("max_tokens", max_tokens)
        return render_hits(self.search(query, namespace, k=k, history=history), max_tokens)

    def explain(self, query: str, namespace: NamespaceLike, *, top_turns: int = 3) -> dict[str, Any]:
        """Which slots the query attends to, and which turns each of those slots holds most of."""
        if self.reranker is None:
            raise InputError("explain needs a trained model: ContextMemory(path, model=DIR)")
        arguments.query(query)
        arguments.count("top_turns", top_turns)
        space = ns.validate(namespace)
        with self._guard:
            self._require_encoder()
            return self.reranker.explain(self.encoder.encode_query(query), space, self.store, top_turns=top_turns)

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: turns per namespace, bytes used (files or tables), bytes per turn on disk and in RAM, encoder, model.

        ``ram_bytes`` is this process's resident memory now (what it has searched and loaded
        included); ``ram_bytes_per_turn`` divides it by the turns stored.
        """
        with self._guard:
            spaces = self.store.namespaces(())
            files = self.store.sizes()
            turns = sum(c for _, c in spaces)
            ram = arguments.resident_bytes()
            return {
                "path": self.store.location,
                "turns": turns,
                "namespaces": {ns.format_namespace(s): c for s, c in spaces},
                "encoder": self.store.get_meta("encoder"),
                "dim": meta_number(self.store, "dim") or 0,
                "vector_dtype": self.store.get_meta("vector_dtype") or "float32",
                "schema_version": self.store.schema_version,
                "model": None if self.reranker is None else self.reranker.describe(),
                "files": files,
                "bytes": sum(files.values()),
                "bytes_per_turn": round(sum(files.values()) / turns, 1) if turns else None,
                "ram_bytes": ram,
                "ram_bytes_per_turn": round(ram / turns, 1) if turns and ram else None,
            }

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
