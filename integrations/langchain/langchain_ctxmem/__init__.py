"""LangChain / LangGraph integration of ctxmem-plugin."""

from langchain_ctxmem.embeddings import CtxMemEmbeddings, LangChainEncoder
from langchain_ctxmem.store import CtxMemStore

__all__ = ["CtxMemEmbeddings", "CtxMemStore", "LangChainEncoder"]
