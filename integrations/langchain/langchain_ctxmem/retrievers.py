"""CtxMemRetriever: a LangChain ``BaseRetriever`` over ``ContextMemory.search``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, field_validator

from ctxmem_plugin import namespaces as core_ns
from ctxmem_plugin.records import Hit
from langchain_ctxmem._memory import MemoryField
from langchain_ctxmem._messages import thread_history


class CtxMemRetriever(BaseRetriever):
    """Retrieve the turns of a ctxmem memory most relevant to a query.

    Each hit becomes a ``Document`` whose ``page_content`` is the turn's text and whose
    metadata holds ``id``, ``score``, ``namespace`` (``"a/b"``), ``role``, ``speaker``,
    ``timestamp``, ``signals`` (which retrieval signal found it) and the turn's ``metadata``.

    Args:
        memory: the memory (``ContextMemory`` or ``RemoteMemory``) to search.
        namespace: the namespace prefix to search under (a security boundary: nothing outside
            it can be returned).
        k: how many documents to return; ``invoke(query, k=...)`` overrides it per call.
        filters: ctxmem metadata filters, e.g. ``{"session": {"$gte": 3}}``.
        method: ``auto``, ``ctxmem``, ``hybrid``, ``bm25`` or ``dense``.
        history: the conversation the queries are asked in (``ContextMemory.search(history=...)``):
            the namespace where it is stored, or its messages (LangChain messages or
            ``{"role", "content"}`` dicts), so that a follow-up ("and what did she say about
            it?") is searched for what it refers to. ``None``: the query alone.
            ``invoke(query, history=...)`` overrides it.

    Example:
        >>> retriever = CtxMemRetriever(memory=mem, namespace=("user-42",), k=5)  # doctest: +SKIP
        >>> retriever.invoke("what is my dog called?")  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memory: MemoryField
    namespace: tuple[str, ...] = ()
    k: int = Field(default=4, ge=0)
    filters: dict[str, Any] | None = None
    method: str = "auto"
    history: tuple[str, ...] | list[Any] | None = None

    @field_validator("namespace", mode="before")
    @classmethod
    def _namespace(cls, value: Sequence[str] | str) -> tuple[str, ...]:
        return core_ns.validate(value, allow_empty=True)

    @field_validator("history", mode="before")
    @classmethod
    def _history(cls, value: Any) -> tuple[str, ...] | list[Any] | None:
        return _as_history(value)

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filters: dict[str, Any] | None = None,
        history: Any = None,
    ) -> list[Document]:
        hits = self.memory.search(
            query,
            self.namespace,
            k=self.k if k is None else k,
            filters=self.filters if filters is None else filters,
            method=self.method,
            history=self.history if history is None else _as_history(history),
        )
        return [hit_to_document(h) for h in hits]


def _as_history(value: Any) -> tuple[str, ...] | list[Any] | None:
    """A retriever's history: a namespace tuple, or the messages (LangChain ones as text dicts)."""
    if value is None:
        return None
    if isinstance(value, str) or (isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value)):
        return core_ns.validate(value)
    if not isinstance(value, Sequence):
        raise ValueError(f"history must be a namespace or a list of messages, got {type(value).__name__}")
    if all(isinstance(m, BaseMessage) for m in value):
        return thread_history(value)
    return list(value)  # dicts or Turns: ContextMemory.search validates them


def hit_to_document(hit: Hit) -> Document:
    """A ``Document`` for one search hit (its id is the turn id, as a string)."""
    return Document(
        page_content=hit.text,
        metadata={
            "id": hit.id,
            "score": hit.score,
            "namespace": core_ns.format_namespace(hit.namespace),
            "role": hit.role,
            "speaker": hit.speaker,
            "timestamp": hit.timestamp,
            "signals": hit.signals,
            "metadata": hit.metadata,
        },
        id=str(hit.id),
    )
