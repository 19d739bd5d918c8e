"""CtxMemMiddleware end to end with create_agent and a fake chat model that records its requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.runtime import Runtime
from pydantic import Field
from typing_extensions import TypedDict

from ctxmem_plugin.memory import ContextMemory
from langchain_ctxmem import CtxMemMiddleware
from langchain_ctxmem._scope import MissingScopeError


@pytest.fixture(params=["local", "remote"])
def memory(request: pytest.FixtureRequest, make_memory: Any) -> Any:
    """Each test runs on a ContextMemory and through a memory server (RemoteMemory)."""
    return make_memory(request.param)


class UserContext(TypedDict):
    user_id: str


class RecordingChatModel(BaseChatModel):
    """Answers from a script (default "ok") and keeps every request it was sent."""

    requests: list[list[BaseMessage]] = Field(default_factory=list)
    script: list[AIMessage] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "recording"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.requests.append(list(messages))
        reply = self.script.pop(0) if self.script else AIMessage(content="ok")
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def bind_tools(self, tools: Any, **kwargs: Any) -> RecordingChatModel:
        return self

    def last_system(self) -> str:
        first = self.requests[-1][0]
        return first.text if isinstance(first, SystemMessage) else ""


def _ask(agent: Any, text: str, user: str, thread: str, **kwargs: Any) -> dict[str, Any]:
    return agent.invoke(
        {"messages": [{"role": "user", "content": text}]},
        {"configurable": {"thread_id": thread}},
        context={"user_id": user},
        **kwargs,
    )


async def _aask(agent: Any, text: str, user: str, thread: str) -> dict[str, Any]:
    return await agent.ainvoke(
        {"messages": [{"role": "user", "content": text}]},
        {"configurable": {"thread_id": thread}},
        context={"user_id": user},
    )


@pytest.fixture
def model() -> RecordingChatModel:
    return RecordingChatModel()


def _agent(model: RecordingChatModel, memory: ContextMemory, **kwargs: Any) -> Any:
    return create_agent(
        model,
        tools=[],
        system_prompt="You are helpful.",
        middleware=[CtxMemMiddleware(memory, **kwargs)],
        checkpointer=InMemorySaver(),
        context_schema=UserContext,
    )


def test_fact_reaches_the_same_user_in_another_thread_never_another_user(
    model: RecordingChatModel, memory: ContextMemory
) -> None:
    agent = _agent(model, memory)
    _ask(agent, "My dog is called Biscuit and he loves the beach.", "alice", "t1")
    _ask(agent, "My cat is called Whiskers and my dog is called Rex.", "bob", "t2")

    _ask(agent, "What is my dog called?", "alice", "t3")
    system = model.last_system()
    assert system.startswith("You are helpful.")
    assert "Biscuit" in system
    assert "Whiskers" not in system and "Rex" not in system

    _ask(agent, "What is my dog called?", "bob", "t4")
    assert "Rex" in model.last_system()
    assert "Biscuit" not in model.last_system()

    _ask(agent, "What is my dog called?", "carol", "t5")
    assert "Biscuit" not in model.last_system() and "Rex" not in model.last_system()


async def test_async_agent(model: RecordingChatModel, memory: ContextMemory) -> None:
    agent = _agent(model, memory)
    await _aask(agent, "My dog is called Biscuit.", "alice", "t1")
    await _aask(agent, "My dog is called Rex.", "bob", "t2")
    await _aask(agent, "What is my dog called?", "alice", "t3")
    assert "Biscuit" in model.last_system() and "Rex" not in model.last_system()


def test_user_from_config_configurable(model: RecordingChatModel, memory: ContextMemory) -> None:
    agent = _agent(model, memory)
    for thread, text in [("t1", "I live in Lisbon."), ("t2", "Where do I live?")]:
        agent.invoke(
            {"messages": [{"role": "user", "content": text}]},
            {"configurable": {"thread_id": thread, "user_id": "dana"}},
        )
    assert "Lisbon" in model.last_system()


def test_missing_user_is_an_error_not_a_shared_namespace(model: RecordingChatModel, memory: ContextMemory) -> None:
    agent = _agent(model, memory)
    with pytest.raises(MissingScopeError, match="user_id"):
        agent.invoke({"messages": [{"role": "user", "content": "hi"}]}, {"configurable": {"thread_id": "t"}})
    assert memory.namespaces() == []


def test_exchange_written_once_per_thread_and_current_thread_not_injected(
    model: RecordingChatModel, memory: ContextMemory
) -> None:
    agent = _agent(model, memory)
    _ask(agent, "My favourite colour is teal.", "alice", "t1")
    _ask(agent, "And my favourite colour of car is teal too.", "alice", "t1")
    # The checkpointer already shows this thread to the model: no memory block is added.
    assert model.last_system() == "You are helpful."
    turns = memory.list_turns(("users", "alice", "t1"))
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
    assert all(t.metadata["thread_id"] == "t1" for t in turns)


def test_budget_limits_what_is_injected(model: RecordingChatModel, memory: ContextMemory) -> None:
    facts = [f"Fact number {i}: the garden has {i} apple trees and a long fence." for i in range(20)]
    memory.add([{"role": "user", "content": f} for f in facts], ("users", "alice", "old"))
    agent = _agent(model, memory, k=20, max_tokens=60)
    _ask(agent, "How many apple trees are in the garden?", "alice", "t1")
    block = model.last_system().split("You are helpful.\n\n", 1)[1]
    assert 0 < len(block) / 4 <= 60 + 5  # ~characters/4, plus a little rounding per line
    assert block.count("apple trees") < 20


def test_no_user_message_no_search(model: RecordingChatModel, memory: ContextMemory) -> None:
    agent = _agent(model, memory)
    agent.invoke({"messages": []}, {"configurable": {"thread_id": "t"}}, context={"user_id": "alice"})
    assert model.last_system() == "You are helpful."


def test_memory_tools_are_scoped_to_the_user(
    model: RecordingChatModel, memory: ContextMemory, search_calls: list[Any]
) -> None:
    model.script = [
        AIMessage(
            content="",
            tool_calls=[{"name": "save_memory", "args": {"fact": "Alice is allergic to peanuts."}, "id": "c1"}],
        ),
        AIMessage(content="Saved."),
        AIMessage(
            content="", tool_calls=[{"name": "search_memory", "args": {"query": "allergic peanuts"}, "id": "c2"}]
        ),
        AIMessage(content="Done."),
        AIMessage(
            content="", tool_calls=[{"name": "search_memory", "args": {"query": "allergic peanuts"}, "id": "c3"}]
        ),
        AIMessage(content="Done."),
    ]
    agent = _agent(model, memory, tools=True)
    _ask(agent, "Remember that I am allergic to peanuts.", "alice", "t1")
    assert [t.content for t in memory.list_turns(("users", "alice", "saved"))] == ["Alice is allergic to peanuts."]
    out = _ask(agent, "Am I allergic to anything?", "alice", "t2")
    assert "allergic to peanuts" in out["messages"][-2].content  # the tool result
    out = _ask(agent, "Am I allergic to anything?", "bob", "t3")
    assert "peanuts" not in out["messages"][-2].content
    # The tool searches the user's namespace, asked in the thread going on.
    tool_call = [c for c in search_calls if c[0][0] == "allergic peanuts"][-1]
    assert tool_call[0][1] == ("users", "bob")
    assert tool_call[1]["history"] == [{"role": "user", "content": "Am I allergic to anything?"}]


@pytest.fixture(scope="module")
def real_memory(tmp_path_factory: pytest.TempPathFactory, minilm: Any) -> Iterator[ContextMemory]:
    with ContextMemory(tmp_path_factory.mktemp("real"), encoder=minilm) as mem:
        yield mem


@pytest.mark.slow
def test_real_encoder_recalls_a_paraphrase(real_memory: ContextMemory, tmp_path: Path) -> None:
    """With all-MiniLM-L6-v2 the question shares no content word with the fact."""
    model = RecordingChatModel()
    agent = _agent(model, real_memory)
    _ask(agent, "We adopted a golden retriever puppy last week and named him Biscuit.", "alice", "t1")
    _ask(agent, "I drive a red Volvo to work.", "alice", "t2")
    _ask(agent, "Our new kitten is named Whiskers.", "bob", "t3")
    _ask(agent, "What's the name of my pet?", "alice", "t4")
    system = model.last_system()
    assert "Biscuit" in system and "Whiskers" not in system


def test_tool_rounds_reuse_the_recall_until_memory_changes(
    model: RecordingChatModel, memory: ContextMemory, search_calls: list[Any]
) -> None:
    memory.add([{"role": "user", "content": "The spare key is under the blue pot."}], ("users", "alice", "old"))
    middleware = CtxMemMiddleware(memory)
    runtime = Runtime(context={"user_id": "alice"})
    a = middleware.recall("where is the spare key?", runtime)
    b = middleware.recall("where is the spare key?", runtime)
    assert a == b and len(search_calls) == 1
    memory.add([{"role": "user", "content": "Moved the spare key to the drawer."}], ("users", "alice", "old"))
    c = middleware.recall("where is the spare key?", runtime)
    assert len(search_calls) == 2 and len(c) == 2


def test_the_running_thread_is_the_history_of_the_search(
    model: RecordingChatModel, memory: ContextMemory, search_calls: list[Any]
) -> None:
    agent = _agent(model, memory)
    _ask(agent, "I adopted a greyhound called Comet.", "alice", "t2")
    _ask(agent, "And what did I say about it?", "alice", "t2")
    # The query is asked after the thread's earlier messages; the thread itself is never a hit.
    args, kwargs = search_calls[-1]
    assert args[0] == "And what did I say about it?"
    assert kwargs["history"] == [{"role": "user", "content": "I adopted a greyhound called Comet."},
                                 {"role": "assistant", "content": "ok"}]
    assert kwargs["filters"] == {"thread_id": {"$ne": "t2"}}
    # A new thread has no history yet.
    _ask(agent, "Hello again", "alice", "t3")
    assert search_calls[-1][1]["history"] == []
