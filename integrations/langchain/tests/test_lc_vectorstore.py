"""CtxMemVectorStore and CtxMemRetriever properties the standard suites do not check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.embeddings import DeterministicFakeEmbedding

from ctxmem_plugin.errors import NamespaceError
from ctxmem_plugin.memory import ContextMemory
from langchain_ctxmem import CtxMemEmbeddings, CtxMemRetriever, CtxMemVectorStore, LangChainEncoder

TEXTS = [
    f"document {i} about {topic}" for i, topic in enumerate(["cats", "dogs", "boats", "trains", "cats and dogs"] * 6)
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CtxMemVectorStore]:
    vs = CtxMemVectorStore(tmp_path / "vs", embedding=DeterministicFakeEmbedding(size=24))
    vs.add_texts(
        TEXTS,
        [{"i": i, "topic": t.split(" about ")[1]} for i, t in enumerate(TEXTS)],
        ids=[f"d{i}" for i in range(len(TEXTS))],
    )
    yield vs
    vs.close()


def test_search_by_vector_equals_brute_force(store: CtxMemVectorStore) -> None:
    emb = store.embeddings
    matrix = np.asarray(emb.embed_documents(TEXTS))
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    for probe in ["cats", "a train", "document 7 about trains"]:
        q = np.asarray(emb.embed_query(probe))
        expected = np.argsort(-(matrix @ (q / np.linalg.norm(q))), kind="stable")[:5]
        got = store.similarity_search_with_score_by_vector(q.tolist(), k=5)
        assert [d.id for d, _ in got] == [f"d{i}" for i in expected]
        assert np.allclose([s for _, s in got], (matrix @ (q / np.linalg.norm(q)))[expected], atol=1e-5)


def test_a_document_vector_is_the_vector_of_its_text(store: CtxMemVectorStore) -> None:
    """The "user: " prefix ctxmem puts before a turn is not embedded: cosine 1 with its own text."""
    [(doc, score)] = store.similarity_search_with_score_by_vector(store.embeddings.embed_query(TEXTS[3]), k=1)
    assert doc.id == "d3" and score == pytest.approx(1.0, abs=1e-5)


def test_filters_on_document_metadata(store: CtxMemVectorStore) -> None:
    docs = store.similarity_search("cats", k=100, filter={"topic": "cats"})
    assert {d.metadata["topic"] for d in docs} == {"cats"} and len(docs) == 6
    docs = store.similarity_search_by_vector(store.embeddings.embed_query("x"), k=100, filter={"i": {"$lt": 3}})
    assert sorted(d.id for d in docs) == ["d0", "d1", "d2"]


def test_k_larger_than_the_hybrid_pool(tmp_path: Path) -> None:
    vs = CtxMemVectorStore(tmp_path / "big", embedding=DeterministicFakeEmbedding(size=8))
    n = vs.memory.retrieval.pool + 20
    vs.add_texts([f"t{i}" for i in range(n)])
    assert len(vs.similarity_search("t1", k=n + 5)) == n
    vs.close()


def test_mmr_prefers_diversity(tmp_path: Path) -> None:
    vs = CtxMemVectorStore(tmp_path / "mmr", embedding=DeterministicFakeEmbedding(size=16))
    vs.add_texts(["same text", "same text", "same text", "different words entirely"], ids=["a", "b", "c", "z"])
    plain = vs.similarity_search_by_vector(vs.embeddings.embed_query("same text"), k=2)
    diverse = vs.max_marginal_relevance_search("same text", k=2, fetch_k=4, lambda_mult=0.1)
    assert {d.page_content for d in plain} == {"same text"}
    assert {d.page_content for d in diverse} == {"same text", "different words entirely"}
    vs.close()


async def test_async_interface(store: CtxMemVectorStore) -> None:
    await store.aadd_documents([Document(page_content="zebra crossing", metadata={"i": -1}, id="z")])
    assert (await store.asimilarity_search("zebra crossing", k=1))[0].id == "z"
    assert [d.id for d in await store.aget_by_ids(["z", "nope"])] == ["z"]
    await store.adelete(["z"])
    assert await store.aget_by_ids(["z"]) == []
    assert len(await store.amax_marginal_relevance_search("cats", k=3)) == 3


def test_blank_documents_round_trip(tmp_path: Path) -> None:
    vs = CtxMemVectorStore(tmp_path / "b", embedding=DeterministicFakeEmbedding(size=8))
    vs.add_documents([Document(page_content="", metadata={"k": 1}, id="e"), Document(page_content="  ", id="s")])
    assert [d.page_content for d in vs.get_by_ids(["e", "s"])] == ["", "  "]
    vs.close()


def test_relevance_scores_are_in_unit_range(store: CtxMemVectorStore) -> None:
    scored = store.similarity_search_with_relevance_scores("document 3 about trains", k=5)
    assert scored[0][0].id == "d3"
    assert all(0.0 <= s <= 1.0 for _, s in scored)


def test_from_texts_in_a_temporary_directory_is_cleaned_up() -> None:
    vs = CtxMemVectorStore.from_texts(["a b", "c d"], DeterministicFakeEmbedding(size=8), ids=["1", "2"])
    path = vs.memory.path
    assert path.exists() and vs.get_by_ids(["2"])[0].page_content == "c d"
    vs.close()
    assert not path.exists()


def test_delete_none_empties_only_this_namespace(tmp_path: Path) -> None:
    emb = DeterministicFakeEmbedding(size=8)
    with ContextMemory(tmp_path / "m", encoder=LangChainEncoder(emb, strip_prefix="user: ")) as mem:
        one = CtxMemVectorStore(mem, embedding=emb, namespace=("vs", "one"))
        two = CtxMemVectorStore(mem, embedding=emb, namespace=("vs", "two"))
        one.add_texts(["x"], ids=["1"])
        two.add_texts(["y"], ids=["1"])  # same id, other namespace: another document
        one.delete()
        assert one.get_by_ids(["1"]) == [] and two.get_by_ids(["1"])[0].page_content == "y"


def test_open_memory_with_another_embedding_is_refused(memory: ContextMemory) -> None:
    with pytest.raises(ValueError, match="own encoder"):
        CtxMemVectorStore(memory, embedding=DeterministicFakeEmbedding(size=8))
    assert isinstance(CtxMemVectorStore(memory).embeddings, CtxMemEmbeddings)


def test_retriever_respects_namespace_and_metadata(memory: ContextMemory) -> None:
    memory.add([{"role": "user", "content": "Alice's dog is Biscuit", "metadata": {"session": 1}}], ("users", "alice"))
    memory.add([{"role": "user", "content": "Bob's dog is Rex", "metadata": {"session": 2}}], ("users", "bob"))
    docs = CtxMemRetriever(memory=memory, namespace=("users", "alice"), k=10).invoke("dog")
    assert [d.page_content for d in docs] == ["Alice's dog is Biscuit"]
    doc = docs[0]
    assert doc.metadata["namespace"] == "users/alice" and doc.metadata["metadata"] == {"session": 1}
    assert doc.id == str(doc.metadata["id"])
    docs = CtxMemRetriever(memory=memory, k=10).invoke("dog", filters={"session": 2})
    assert [d.page_content for d in docs] == ["Bob's dog is Rex"]


def test_retriever_passes_the_conversation_going_on_as_the_history(
    memory: ContextMemory, search_calls: list[Any]
) -> None:
    memory.add([{"role": "user", "content": "I adopted a greyhound called Comet."}], ("users", "alice", "history"))
    retriever = CtxMemRetriever(memory=memory, namespace="users/alice", history=("users", "alice", "t2"), k=3)
    assert retriever.namespace == ("users", "alice")
    docs = retriever.invoke("what was its name again?")
    assert [d.page_content for d in docs] == ["I adopted a greyhound called Comet."]
    assert search_calls[-1][1]["history"] == ("users", "alice", "t2")
    retriever.invoke("and its age?", history="users/alice/t3")  # a per-call history wins
    assert search_calls[-1][1]["history"] == ("users", "alice", "t3")
    # LangChain messages become the role and text of those that say something.
    thread = [HumanMessage(content="Tell me about Comet"), AIMessage(content="", tool_calls=[]), AIMessage(content="A greyhound.")]
    retriever.invoke("and its age?", history=thread)
    assert search_calls[-1][1]["history"] == [{"role": "user", "content": "Tell me about Comet"},
                                              {"role": "assistant", "content": "A greyhound."}]
    assert CtxMemRetriever(memory=memory).history is None
    with pytest.raises(NamespaceError):
        CtxMemRetriever(memory=memory, history="")  # a stored thread is a conversation, never the root
