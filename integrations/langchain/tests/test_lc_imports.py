"""The public names of langchain_ctxmem: exactly ``__all__``, each importable."""

from __future__ import annotations

import langchain_ctxmem

EXPECTED_ALL = [
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


def test_all_imports() -> None:
    assert sorted(langchain_ctxmem.__all__) == sorted(EXPECTED_ALL)
    for name in langchain_ctxmem.__all__:
        assert getattr(langchain_ctxmem, name) is not None


def test_interfaces_subclass_the_langchain_bases() -> None:
    from langchain.agents.middleware import AgentMiddleware
    from langchain_classic.base_memory import BaseMemory
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.vectorstores import VectorStore
    from langgraph.store.base import BaseStore

    assert issubclass(langchain_ctxmem.CtxMemStore, BaseStore)
    assert issubclass(langchain_ctxmem.CtxMemMiddleware, AgentMiddleware)
    assert issubclass(langchain_ctxmem.CtxMemVectorStore, VectorStore)
    assert issubclass(langchain_ctxmem.CtxMemRetriever, BaseRetriever)
    assert issubclass(langchain_ctxmem.CtxMemChatMessageHistory, BaseChatMessageHistory)
    assert issubclass(langchain_ctxmem.CtxMemMemory, BaseMemory)
    assert issubclass(langchain_ctxmem.CtxMemEmbeddings, Embeddings)


def test_package_imports_without_the_classic_extra() -> None:
    """Importing the package must not import langchain_classic (an optional extra)."""
    import subprocess
    import sys

    code = "import sys, langchain_ctxmem; assert 'langchain_classic' not in sys.modules, 'imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)
