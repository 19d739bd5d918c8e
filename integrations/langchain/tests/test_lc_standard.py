"""LangChain's standard test suites (langchain-tests), run in full: none skipped or overridden."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import RetrieversIntegrationTests, VectorStoreIntegrationTests

from ctxmem_plugin.memory import ContextMemory
from langchain_ctxmem import CtxMemRetriever, CtxMemVectorStore, LangChainEncoder


class TestCtxMemVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, new_location: Any) -> Iterator[VectorStore]:  # type: ignore[override]
        store = CtxMemVectorStore(new_location("vs"), embedding=self.get_embeddings())
        try:
            yield store
        finally:
            store.close()


KNOWLEDGE = [
    "Biscuit is Maya's golden retriever; he is three years old.",
    "Maya works night shifts as a nurse at the city hospital.",
    "Maya's favourite food is spicy ramen from the place on 5th street.",
    "Maya plans a trip to Lisbon in May with her sister Ana.",
    "Ana plays the cello in a string quartet.",
]


class TestCtxMemRetrieverStandard(RetrieversIntegrationTests):
    _memory: ContextMemory

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _populated_memory(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
        # The suite builds the retriever from ``retriever_constructor_params``, so the memory
        # they name is made once for the class, with a fast fake embedding.
        encoder = LangChainEncoder(DeterministicFakeEmbedding(size=32))
        with ContextMemory(tmp_path_factory.mktemp("retriever"), encoder=encoder) as mem:
            mem.add([{"role": "user", "speaker": "Maya", "content": text} for text in KNOWLEDGE], ("users", "maya"))
            cls._memory = mem
            yield

    @property
    def retriever_constructor(self) -> type[CtxMemRetriever]:
        return CtxMemRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"memory": type(self)._memory, "namespace": ("users", "maya")}

    @property
    def retriever_query_example(self) -> str:
        return "What is Maya's dog called?"
