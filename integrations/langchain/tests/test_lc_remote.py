"""The integration over a memory server: LangChain's standard suites through RemoteMemory, and what differs.

The server runs in a child process (started and stopped here) with the same fake embedding
the standard suites use, so the vector store and the retriever behave as over a local memory.
The store's differential suite, the middleware and the chat history tests run through a server
too (``test_lc_store_differential.py``, ``test_lc_middleware.py``, ``test_lc_history.py``).
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import RetrieversIntegrationTests, VectorStoreIntegrationTests
from langchain_tests.integration_tests.vectorstores import EMBEDDING_SIZE
from langgraph.store.base import PutOp

from ctxmem_plugin.remote import RemoteMemory
from ctxmem_plugin.server.testing import ServerProcess
from langchain_ctxmem import CtxMemRetriever, CtxMemStore, CtxMemVectorStore

# What CtxMemVectorStore(path, embedding=DeterministicFakeEmbedding(size)) opens, served.
FAKE_EMBEDDING_SERVER = textwrap.dedent("""
    import sys
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from ctxmem_plugin.memory import ContextMemory
    from ctxmem_plugin.server import serve
    from langchain_ctxmem import LangChainEncoder
    from langchain_ctxmem.vectorstores import _DOC_PREFIX

    encoder = LangChainEncoder(DeterministicFakeEmbedding(size=int(sys.argv[2])), strip_prefix=_DOC_PREFIX)
    with ContextMemory(sys.argv[1], encoder=encoder) as memory:
        serve(memory, port=0, ready=lambda url: print(url, flush=True))
""")

KNOWLEDGE = [
    "Biscuit is Maya's golden retriever; he is three years old.",
    "Maya works night shifts as a nurse at the city hospital.",
    "Maya's favourite food is spicy ramen from the place on 5th street.",
    "Maya plans a trip to Lisbon in May with her sister Ana.",
    "Ana plays the cello in a string quartet.",
]


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    where = tmp_path_factory.mktemp("served") / "m"
    command = [sys.executable, "-c", FAKE_EMBEDDING_SERVER, str(where), str(EMBEDDING_SIZE)]
    with ServerProcess(where, command=command) as server:
        yield server


class TestRemoteVectorStoreStandard(VectorStoreIntegrationTests):
    """The standard vector store suite, each test in a namespace of its own of one served memory."""

    @pytest.fixture(autouse=True)
    def _reach_the_server(self, loopback: None) -> None:
        return None

    @pytest.fixture
    def vectorstore(self, fake_server: ServerProcess) -> Iterator[VectorStore]:  # type: ignore[override]
        with RemoteMemory(fake_server.url) as memory:
            yield CtxMemVectorStore(memory, namespace=("vs", uuid.uuid4().hex))


class TestRemoteRetrieverStandard(RetrieversIntegrationTests):
    _memory: RemoteMemory
    _namespace = ("users", "maya")

    @pytest.fixture(autouse=True)
    def _reach_the_server(self, loopback: None) -> None:
        return None

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _populated_memory(cls, fake_server: ServerProcess) -> Iterator[None]:
        with RemoteMemory(fake_server.url) as memory:
            cls._namespace = ("users", uuid.uuid4().hex)
            memory.add([{"role": "user", "speaker": "Maya", "content": text} for text in KNOWLEDGE], cls._namespace)
            cls._memory = memory
            yield

    @property
    def retriever_constructor(self) -> type[CtxMemRetriever]:
        return CtxMemRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"memory": type(self)._memory, "namespace": type(self)._namespace}

    @property
    def retriever_query_example(self) -> str:
        return "What is Maya's dog called?"


def test_store_opens_a_server_url_and_refuses_ttls_through_it(fake_server: ServerProcess, loopback: None) -> None:
    root = ("t", uuid.uuid4().hex)
    with CtxMemStore(fake_server.url, root=root) as store:
        assert not store.supports_ttl  # the expiry table lives beside a memory directory
        store.put(("u",), "k", {"text": "kept"})
        assert store.get(("u",), "k").value == {"text": "kept"}
        with pytest.raises(NotImplementedError, match="TTL"):
            store.put(("u",), "short", {"text": "x"}, ttl=1.0)
        with pytest.raises(NotImplementedError, match="no TTL"):
            store.batch([PutOp(("u",), "short", {"text": "x"}, ttl=1.0)])
        assert store.get(("u",), "short") is None  # refused before anything was written
    with pytest.raises(NotImplementedError, match="no TTL"):
        CtxMemStore(fake_server.url, root=root, ttl={"default_ttl": 5.0})
    with pytest.raises(ValueError, match="embeds with its own encoder"):
        CtxMemVectorStore(fake_server.url, embedding=DeterministicFakeEmbedding(size=EMBEDDING_SIZE))


def test_vector_store_queries_through_a_server_equal_local_ones(
    fake_server: ServerProcess, loopback: None, tmp_path: Path
) -> None:
    embedding = DeterministicFakeEmbedding(size=EMBEDDING_SIZE)
    local = CtxMemVectorStore(tmp_path / "local", embedding=embedding)
    with RemoteMemory(fake_server.url) as memory:
        remote = CtxMemVectorStore(memory, namespace=("vs", uuid.uuid4().hex))
        for store in (local, remote):
            store.add_texts(KNOWLEDGE, [{"i": i} for i in range(len(KNOWLEDGE))], ids=[f"d{i}" for i in range(len(KNOWLEDGE))])
        for query in ["Maya's dog", "cello quartet", "trip to Lisbon"]:
            assert local.similarity_search_with_score(query, k=3) == remote.similarity_search_with_score(query, k=3)
            assert local.max_marginal_relevance_search(query, k=2, fetch_k=5) == remote.max_marginal_relevance_search(
                query, k=2, fetch_k=5)
            vector = embedding.embed_query(query)
            assert local.similarity_search_by_vector(vector, k=4, filter={"i": {"$gte": 1}}) == \
                remote.similarity_search_by_vector(vector, k=4, filter={"i": {"$gte": 1}})
    local.close()
