"""CtxMemChatMessageHistory and the legacy CtxMemMemory (langchain-classic)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.retrieval.history import CONCAT_TURNS, concat_query
from langchain_ctxmem import CtxMemChatMessageHistory, CtxMemMemory


@pytest.fixture(params=["local", "remote"])
def memory(request: pytest.FixtureRequest, make_memory: Any) -> Any:
    """Each test runs on a ContextMemory and through a memory server (RemoteMemory)."""
    return make_memory(request.param)


def test_history_round_trips_messages_exactly(memory: ContextMemory) -> None:
    history = CtxMemChatMessageHistory(memory, ("users", "u1", "s1"))
    messages = [
        SystemMessage(content="be brief"),
        HumanMessage(content="weather in Lisbon?", id="h1"),
        AIMessage(content="", tool_calls=[{"name": "weather", "args": {"city": "Lisbon"}, "id": "c1"}], id="a1"),
        ToolMessage(content="sunny, 24C", tool_call_id="c1"),
        AIMessage(content=[{"type": "text", "text": "Sunny and 24C."}], id="a2"),
    ]
    history.add_messages(messages)
    assert history.messages == messages


def test_history_is_its_exact_namespace(memory: ContextMemory) -> None:
    parent = CtxMemChatMessageHistory(memory, ("users", "u1"))
    child = CtxMemChatMessageHistory(memory, "users/u1/s2")
    parent.add_user_message("in the parent")
    child.add_ai_message("in the child")
    assert [m.content for m in parent.messages] == ["in the parent"]
    parent.clear()
    assert parent.messages == [] and [m.content for m in child.messages] == ["in the child"]


def test_history_messages_are_searchable(memory: ContextMemory) -> None:
    CtxMemChatMessageHistory(memory, ("users", "u1", "s1")).add_user_message("my bike is a blue Brompton")
    assert memory.search("Brompton bike", ("users", "u1"))[0].text == "my bike is a blue Brompton"


def test_history_reads_turns_written_by_others(memory: ContextMemory) -> None:
    memory.add([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi!"}], ("chat",))
    assert CtxMemChatMessageHistory(memory, ("chat",)).messages == [
        HumanMessage(content="hello"),
        AIMessage(content="hi!"),
    ]


async def test_history_async(memory: ContextMemory) -> None:
    history = CtxMemChatMessageHistory(memory, ("a",))
    await history.aadd_messages([HumanMessage(content="x")])
    assert [m.content for m in await history.aget_messages()] == ["x"]
    await history.aclear()
    assert await history.aget_messages() == []


def test_classic_memory_saves_and_recalls_relevant_turns(memory: ContextMemory, search_calls: list[Any]) -> None:
    mem = CtxMemMemory(memory=memory, namespace=("users", "u1", "s1"), search_namespace=("users", "u1"), k=2)
    assert mem.memory_variables == ["history"]
    mem.save_context({"input": "My sister Ana plays the cello"}, {"output": "Lovely!"})
    mem.save_context({"input": "I bought a red bicycle"}, {"output": "Nice ride."})
    history = mem.load_memory_variables({"input": "what instrument does Ana play?"})["history"]
    assert "Human: My sister Ana plays the cello" in history
    # The wider prefix is searched, the input asked in this conversation (a follow-up's history).
    assert search_calls[-1][0][1] == ("users", "u1") and search_calls[-1][1]["history"] == ("users", "u1", "s1")
    # The default conversational search (history_mode "fuse"): the input alone and joined to
    # the conversation's latest turns, both searched, merged: the same hits as that search.
    said = ["My sister Ana plays the cello", "Lovely!", "I bought a red bicycle", "Nice ride."]
    fused = memory.search("what instrument does Ana play?", ("users", "u1"), k=2, history=("users", "u1", "s1"))
    assert concat_query("what instrument does Ana play?", said, CONCAT_TURNS).count("\n") == len(said)
    assert len(fused) == 2 and all(h.text in history for h in fused)
    as_messages = mem.model_copy(update={"return_messages": True}).load_memory_variables({"input": "cello"})["history"]
    assert isinstance(as_messages[0], HumanMessage)
    mem.clear()
    assert mem.load_memory_variables({"input": "cello"}) == {"history": ""}


async def test_classic_memory_async_and_keys(memory: ContextMemory) -> None:
    mem = CtxMemMemory(memory=memory, namespace="u2", input_key="question", output_key="answer")
    await mem.asave_context({"question": "Where is the key?", "lang": "en"}, {"answer": "Under the mat.", "n": "1"})
    assert "Under the mat." in (await mem.aload_memory_variables({"question": "key", "lang": "en"}))["history"]
    await mem.aclear()
    assert memory.namespaces() == []
