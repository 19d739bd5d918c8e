"""LangChain / LangGraph integration of ctxmem-plugin.

One module per interface: :mod:`~langchain_ctxmem.store` (LangGraph ``BaseStore``),
:mod:`~langchain_ctxmem.middleware` (``create_agent`` middleware), :mod:`~langchain_ctxmem.tools`,
:mod:`~langchain_ctxmem.vectorstores`, :mod:`~langchain_ctxmem.retrievers`,
:mod:`~langchain_ctxmem.chat_history`, :mod:`~langchain_ctxmem.embeddings`, and
:mod:`~langchain_ctxmem.classic_memory` (legacy chains; needs the ``[classic]`` extra, so it is
imported on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_ctxmem.chat_history import CtxMemChatMessageHistory
from langchain_ctxmem.embeddings import CtxMemEmbeddings, LangChainEncoder
from langchain_ctxmem.middleware import CtxMemMiddleware
from langchain_ctxmem.retrievers import CtxMemRetriever
from langchain_ctxmem.store import CtxMemStore
from langchain_ctxmem.tools import create_memory_tools
from langchain_ctxmem.vectorstores import CtxMemVectorStore

if TYPE_CHECKING:
    from langchain_ctxmem.classic_memory import CtxMemMemory

__all__ = [
    "CtxMemChatMessageHistory",
    "CtxMemEmbeddings",
    "CtxMemMemory",
    "CtxMemMiddleware",
    "CtxMemRetriever",
    "CtxMemStore",
    "CtxMemVectorStore",
    "LangChainEncoder",
    "create_memory_tools",
]


def __getattr__(name: str) -> Any:
    # langchain-classic is an optional extra: importing the package must not require it.
    if name == "CtxMemMemory":
        from langchain_ctxmem.classic_memory import CtxMemMemory

        return CtxMemMemory
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
