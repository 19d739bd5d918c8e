"""CtxMemVectorStore: a LangChain ``VectorStore`` over one namespace of a ContextMemory.

A document is a turn: ``key`` = document id (adding an existing id replaces the document),
``content`` = ``page_content``, ``metadata`` = ``{"doc": document metadata}`` (nested so that
document fields never collide with the fields ctxmem reads itself, such as ``image_caption``).
Text queries use ctxmem's hybrid retrieval (BM25 + dense) by default; vector queries and MMR use
exact dense search (FAISS, restricted to the namespace in the index).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from ctxmem_plugin import namespaces as core_ns
from ctxmem_plugin.api import MemoryAPI, is_memory
from ctxmem_plugin.records import StoredTurn
from langchain_ctxmem._dense import dense_search
from langchain_ctxmem._memory import MemoryLike, open_memory
from langchain_ctxmem.embeddings import CtxMemEmbeddings, LangChainEncoder

BLANK = "(empty document)"
"""Content stored for a blank ``page_content`` (a turn needs text); the real text is kept aside."""

# ctxmem embeds a turn as "speaker: content"; documents are written with role "user" and no
# speaker, so this is the prefix the encoder strips to embed the document text alone.
_DOC_PREFIX = "user: "

Method = Literal["hybrid", "dense", "bm25"]


class CtxMemVectorStore(VectorStore):
    """LangChain vector store backed by a ctxmem memory.

    Args:
        memory: an open memory (``ContextMemory`` or ``RemoteMemory``), a directory, a memory
            server's URL, or ``None`` for a temporary directory (deleted when the store is
            closed or garbage-collected).
        embedding: a LangChain ``Embeddings``; the memory is then opened with it as its encoder
            (so ``memory`` must be a path or ``None``). Without it, the memory's own encoder
            is used (all-MiniLM-L6-v2 by default) and exposed as :attr:`embeddings`.
        namespace: where the documents live in the memory; one store = one namespace.
        method: how text queries are answered: ``hybrid`` (BM25 + dense, default), ``dense``
            or ``bm25``. ``similarity_search_by_vector`` and MMR are always dense.

    Example:
        >>> store = CtxMemVectorStore("kb-memory", namespace=("kb", "docs"))  # doctest: +SKIP
        >>> store.add_texts(["Biscuit is a dog"], ids=["d1"])  # doctest: +SKIP
        >>> store.similarity_search("what is Biscuit?", k=1)  # doctest: +SKIP
    """

    def __init__(
        self,
        memory: MemoryLike | None = None,
        *,
        embedding: Embeddings | None = None,
        namespace: Sequence[str] = ("vectorstore", "default"),
        method: Method = "hybrid",
    ) -> None:
        self._tempdir: str | None = None
        if is_memory(memory):
            wrapped = getattr(memory.encoder, "embeddings", None)  # type: ignore[union-attr]
            if embedding is not None and wrapped is not embedding:
                raise ValueError(
                    "this memory has its own encoder; open it with ContextMemory(path, "
                    "encoder=LangChainEncoder(embedding)) or pass a path and embedding= here"
                )
            self.memory, self._owns_memory = memory, False  # type: ignore[assignment]
        else:
            if memory is None:
                self._tempdir = tempfile.mkdtemp(prefix="ctxmem-vectorstore-")
                memory = Path(self._tempdir)
            encoder = None if embedding is None else LangChainEncoder(embedding, strip_prefix=_DOC_PREFIX)
            self.memory, self._owns_memory = open_memory(memory, encoder)
        self._embedding = embedding if embedding is not None else CtxMemEmbeddings(self.memory.encoder)
        self.namespace = core_ns.validate(tuple(namespace))
        self.method = method
        if self._owns_memory:
            # Close (and delete a temporary directory) even if the caller never calls close().
            self._finalizer = weakref.finalize(self, _close, self.memory, self._tempdir)

    @property
    def embeddings(self) -> Embeddings:
        """The embeddings model (the memory's encoder, as a LangChain ``Embeddings``)."""
        return self._embedding

    def close(self) -> None:
        """Close the memory if this store opened it (and delete a temporary directory)."""
        if self._owns_memory:
            self._finalizer()

    # -- writes ---------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add texts; an id that exists in the namespace is replaced (upsert). Returns the ids.

        ``ids`` may hold ``None`` for some texts (``add_documents`` passes ``Document.id``):
        those get a new UUID.
        """
        texts = list(texts)
        metadatas = metadatas or [{} for _ in texts]
        given: list[str | None] = list(ids) if ids is not None else [None] * len(texts)
        if not len(texts) == len(metadatas) == len(given):
            raise ValueError(f"{len(texts)} texts, {len(metadatas)} metadatas and {len(given)} ids: lengths differ")
        out = [str(i) if i is not None else str(uuid.uuid4()) for i in given]
        messages = []
        for text, meta, doc_id in zip(texts, metadatas, out, strict=True):
            extra: dict[str, Any] = {} if text.strip() else {"text": text}
            messages.append(
                {
                    "role": "user",
                    "content": text if text.strip() else BLANK,
                    "key": doc_id,
                    "metadata": {"doc": dict(meta), **extra},
                }
            )
        self.memory.add(messages, self.namespace)
        return out

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete documents by id (unknown ids are ignored); ``None`` deletes the whole namespace."""
        if ids is None:
            self.memory.forget(self.namespace)
            return True
        found = [t.id for t in (self.memory.get_by_key(self.namespace, str(i)) for i in ids) if t is not None]
        if found:
            self.memory.delete(found)
        return True

    # -- reads ----------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Documents by id, in the order asked; unknown ids are left out."""
        turns = (self.memory.get_by_key(self.namespace, str(i)) for i in ids)
        return [_document(t) for t in turns if t is not None]

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents most relevant to ``query`` (by :attr:`method`)."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter=filter, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents with their score (cosine for ``dense``, the fused score for ``hybrid``)."""
        return [(doc, score) for doc, score, _ in self._search(query, k, filter)]

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        # Relevance is the cosine similarity (clipped to [0, 1]) whatever ranked the hits: the
        # fused hybrid score has no fixed range, and thresholds need one.
        return [(doc, min(1.0, max(0.0, cosine))) for doc, _, cosine in self._search(query, k, kwargs.get("filter"))]

    def _search(self, query: str, k: int, filter: dict[str, Any] | None) -> list[tuple[Document, float, float]]:
        """``(document, score, cosine)`` for a text query, best first."""
        if k <= 0:
            return []
        filters = _filters(filter)
        if self.method == "dense" or not query.strip():
            vector = self.memory.encoder.encode_query(query) if query.strip() else None
            return [(doc, cos, cos) for doc, cos, _ in self._by_vector(vector, k, filters)]
        hits = self.memory.search(query, self.namespace, k=k, filters=filters, method=self.method)
        turns = {t.id: t for t in self.memory.get([h.id for h in hits])}
        out = [(_document(turns[h.id]), h.score, h.signals.get("dense", {}).get("score", 0.0)) for h in hits]
        if len(out) < k:
            # The ranker draws a bounded candidate pool; top up with exact dense results.
            seen = {h.id for h in hits}
            extra = self._by_vector(self.memory.encoder.encode_query(query), k + len(seen), filters)
            out += [(doc, 0.0, cos) for doc, cos, turn_id in extra if turn_id not in seen][: k - len(out)]
        return out

    def _by_vector(
        self, vector: np.ndarray | None, k: int, filters: dict[str, Any] | None
    ) -> list[tuple[Document, float, int]]:
        """``(document, cosine, turn id)`` nearest to ``vector``; ``None``: insertion order, cosine 0."""
        if vector is None:
            return [(_document(t), 0.0, t.id) for t in self.memory.list_turns(self.namespace, filters, limit=k)]
        ids, scores, _ = dense_search(self.memory, vector, self.namespace, k, filters)
        turns = {t.id: t for t in self.memory.get(ids.tolist())}
        return [
            (_document(turns[i]), float(s), i) for i, s in zip(ids.tolist(), scores.tolist(), strict=True) if i in turns
        ]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents whose vectors are most similar (cosine) to ``embedding``."""
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, filter=filter)]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents with their cosine similarity to ``embedding``."""
        if k <= 0:
            return []
        return [(doc, cos) for doc, cos, _ in self._by_vector(np.asarray(embedding), k, _filters(filter))]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` documents relevant to ``query`` and diverse among themselves (MMR over dense vectors)."""
        return self.max_marginal_relevance_search_by_vector(
            self.memory.encoder.encode_query(query).tolist(), k, fetch_k, lambda_mult, filter=filter
        )

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """MMR over the ``fetch_k`` nearest documents to ``embedding``."""
        if k <= 0:
            return []
        ids, _, vectors = dense_search(
            self.memory, np.asarray(embedding), self.namespace, max(fetch_k, k), _filters(filter)
        )
        if not len(ids):
            return []
        chosen = maximal_marginal_relevance(
            np.asarray(embedding, dtype=np.float32), vectors.tolist(), lambda_mult=lambda_mult, k=k
        )
        turns = {t.id: t for t in self.memory.get([int(ids[j]) for j in chosen])}
        return [_document(turns[int(ids[j])]) for j in chosen if int(ids[j]) in turns]

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        memory: MemoryLike | None = None,
        namespace: Sequence[str] = ("vectorstore", "default"),
        method: Method = "hybrid",
        **kwargs: Any,
    ) -> CtxMemVectorStore:
        """A store holding ``texts`` (in ``memory``, a path, or a temporary directory)."""
        store = cls(memory, embedding=embedding, namespace=namespace, method=method)
        store.add_texts(texts, metadatas, ids=ids)
        return store


def _filters(filter: dict[str, Any] | None) -> dict[str, Any] | None:
    """Document-metadata filters (ctxmem syntax: ``$eq $ne $gt $gte $lt $lte $in``) on ``doc.*``."""
    if not filter:
        return None
    return {f"doc.{key}": value for key, value in filter.items()}


def _document(turn: StoredTurn) -> Document:
    return Document(
        page_content=turn.metadata.get("text", turn.content), metadata=dict(turn.metadata.get("doc", {})), id=turn.key
    )


def _close(memory: MemoryAPI, tempdir: str | None) -> None:
    memory.close()
    if tempdir is not None:
        shutil.rmtree(tempdir, ignore_errors=True)
