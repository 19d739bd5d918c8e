"""CtxMemRetriever: a LangChain ``BaseRetriever`` over ``ContextMemory.search``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, field_validator

from ctxmem_plugin import namespaces as core_ns
from ctxmem_plugin.records import Hit
from langchain_ctxmem._memory import MemoryField


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
        focus: the namespace of the conversation going on, when it is kept apart from the
            history searched: with a trained model, a follow-up ("and what did she say about
            it?") is resolved against its latest turns (``ContextMemory.search(focus=...)``).
            ``None``: the searched namespace's own. ``invoke(query, focus=...)`` overrides it.

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
    focus: tuple[str, ...] | None = None

    @field_validator("namespace", mode="before")
    @classmethod
    def _namespace(cls, value: Sequence[str] | str) -> tuple[str, ...]:
        return core_ns.validate(value, allow_empty=True)

    @field_validator("focus", mode="before")
    @classmethod
    def _focus(cls, value: Sequence[str] | str | None) -> tuple[str, ...] | None:
        return None if value is None else core_ns.validate(value)

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filters: dict[str, Any] | None = None,
        focus: Sequence[str] | str | None = None,
    ) -> list[Document]:
        hits = self.memory.search(
            query,
            self.namespace,
            k=self.k if k is None else k,
            filters=self.filters if filters is None else filters,
            method=self.method,
            focus=self.focus if focus is None else focus,
        )
        return [hit_to_document(h) for h in hits]


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
