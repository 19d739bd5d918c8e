"""The bridge between LangChain ``Embeddings`` and ctxmem encoders, both ways.

* :class:`LangChainEncoder` lets a ``ContextMemory`` embed with any LangChain ``Embeddings``
  (what ``CtxMemVectorStore(embedding=...)`` and ``CtxMemStore(index={"embed": ...})`` need).
* :class:`CtxMemEmbeddings` exposes a ctxmem encoder (e.g. the bundled all-MiniLM-L6-v2) as a
  LangChain ``Embeddings``, so other LangChain components can share the memory's model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from ctxmem_plugin.encoders import TextEncoder

_DIM_PROBE = "dimension probe"


def _normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero): ctxmem scores by inner product."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, d)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (n, 1)
    norms[norms == 0] = 1.0
    out: np.ndarray = vectors / norms
    return out


def encoder_name(embeddings: Embeddings) -> str:
    """A stable name for the memory's ``encoder`` record: class plus model, when it has one."""
    cls = type(embeddings)
    model = getattr(embeddings, "model", None) or getattr(embeddings, "model_name", None)
    return f"langchain:{cls.__module__}.{cls.__qualname__}" + (f":{model}" if model else "")


class LangChainEncoder:
    """A ctxmem encoder (``name``, ``dim``, ``encode``, ``encode_query``) over LangChain ``Embeddings``.

    Args:
        embeddings: the LangChain embeddings model.
        name: what the memory records as its encoder; defaults to the class and model name.
            A memory refuses to open with another encoder, so keep it stable.
        dim: vector width; ``None`` embeds a probe text once to find it.
        strip_prefix: a prefix removed from document texts before embedding. ctxmem embeds a
            turn as ``"speaker: content"``; a vector store sets this to ``"user: "`` so that a
            document's vector is the vector of its text alone (``similarity_search_by_vector``
            with ``embed_query(text)`` then finds it with cosine 1).
    """

    def __init__(
        self,
        embeddings: Embeddings,
        *,
        name: str | None = None,
        dim: int | None = None,
        strip_prefix: str | None = None,
    ) -> None:
        self.embeddings = embeddings
        self.name = name or encoder_name(embeddings)
        self._dim = dim
        self.strip_prefix = strip_prefix

    @property
    def dim(self) -> int:
        """Width of the vectors."""
        if self._dim is None:
            self._dim = len(self.embeddings.embed_query(_DIM_PROBE))
        return self._dim

    def _strip(self, text: str) -> str:
        if self.strip_prefix and text.startswith(self.strip_prefix):
            return text[len(self.strip_prefix) :]
        return text

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed documents; (n, dim) float32, L2-normalised."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings; use encode_query() for one")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self.embeddings.embed_documents([self._strip(t) for t in texts]), dtype=np.float32)
        return _normalise(vectors.reshape(len(texts), -1))  # (n, d)

    def encode_query(self, text: str) -> np.ndarray:
        """Embed one query; (dim,) float32, L2-normalised."""
        vector = np.asarray(self.embeddings.embed_query(text), dtype=np.float32)
        out: np.ndarray = _normalise(vector.reshape(1, -1))[0]  # (d,)
        return out


class CtxMemEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over a ctxmem encoder (vectors are L2-normalised).

    Args:
        encoder: a ctxmem encoder, e.g. ``ContextMemory.encoder`` or ``SentenceEncoder()``.

    Example:
        >>> from ctxmem_plugin.encoders import SentenceEncoder  # doctest: +SKIP
        >>> CtxMemEmbeddings(SentenceEncoder()).embed_query("hello")[:3]  # doctest: +SKIP
    """

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents."""
        vectors: list[list[float]] = self.encoder.encode(list(texts)).tolist()
        return vectors

    def embed_query(self, text: str) -> list[float]:
        """Embed a query."""
        vector: list[float] = self.encoder.encode_query(text).tolist()
        return vector

    # The encoders are CPU/GPU-bound and synchronous: the async twins run them in a thread.
    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async twin of :meth:`embed_documents` (runs in a worker thread)."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Async twin of :meth:`embed_query` (runs in a worker thread)."""
        return await asyncio.to_thread(self.embed_query, text)


def as_encoder(embed: Any, **kwargs: Any) -> TextEncoder:
    """A ctxmem encoder from a LangChain ``Embeddings`` or an object that already is an encoder."""
    if isinstance(embed, TextEncoder):
        return embed
    if isinstance(embed, Embeddings):
        return LangChainEncoder(embed, **kwargs)
    raise TypeError(f"expected a LangChain Embeddings or a ctxmem encoder, got {type(embed).__name__}")
