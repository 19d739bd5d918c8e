"""langmem's memory tools running on CtxMemStore (directly and inside create_agent)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ctxmem_plugin.memory import ContextMemory
from langchain_ctxmem import CtxMemStore

langmem = pytest.importorskip("langmem", reason="langmem is in the [test] extra")


def _config(user: str) -> dict[str, Any]:
    return {"configurable": {"langgraph_user_id": user}}


@pytest.fixture
def store(memory: ContextMemory) -> CtxMemStore:
    return CtxMemStore(memory)


def test_manage_and_search_tools(store: CtxMemStore) -> None:
    manage = langmem.create_manage_memory_tool(namespace=("memories", "{langgraph_user_id}"), store=store)
    search = langmem.create_search_memory_tool(namespace=("memories", "{langgraph_user_id}"), store=store)
    created = manage.invoke({"content": "Prefers window seats on trains", "action": "create"}, _config("alice"))
    manage.invoke({"content": "Is vegetarian", "action": "create"}, _config("alice"))
    manage.invoke({"content": "Prefers aisle seats", "action": "create"}, _config("bob"))
    memory_id = created.split()[-1]

    found = json.loads(search.invoke({"query": "which seat on the train?"}, _config("alice")))
    assert found[0]["value"] == {"content": "Prefers window seats on trains"}
    assert all(f["namespace"] == ["memories", "alice"] for f in found)

    manage.invoke({"content": "Prefers aisle seats now", "action": "update", "id": memory_id}, _config("alice"))
    assert store.get(("memories", "alice"), memory_id).value == {"content": "Prefers aisle seats now"}
    manage.invoke({"action": "delete", "id": memory_id}, _config("alice"))
    assert store.get(("memories", "alice"), memory_id) is None
    assert [i.value["content"] for i in store.search(("memories", "alice"))] == ["Is vegetarian"]


async def test_tools_async(store: CtxMemStore) -> None:
    manage = langmem.create_manage_memory_tool(namespace=("memories", "{langgraph_user_id}"), store=store)
    search = langmem.create_search_memory_tool(namespace=("memories", "{langgraph_user_id}"), store=store)
    await manage.ainvoke({"content": "Allergic to cats", "action": "create"}, _config("carol"))
    found = json.loads(await search.ainvoke({"query": "allergy"}, _config("carol")))
    assert found[0]["value"]["content"] == "Allergic to cats"


def test_tools_from_the_agent_store(store: CtxMemStore) -> None:
    """Without store=..., langmem takes the store of the running graph: create_agent(store=...)."""
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    class ToolCallingFake(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> ToolCallingFake:
            return self

    call = {"name": "manage_memory", "args": {"content": "Works at the harbour", "action": "create"}, "id": "c1"}
    model = ToolCallingFake(messages=iter([AIMessage(content="", tool_calls=[call]), AIMessage(content="Noted.")]))
    agent = create_agent(
        model, tools=[langmem.create_manage_memory_tool(namespace=("memories", "{langgraph_user_id}"))], store=store
    )
    agent.invoke({"messages": [{"role": "user", "content": "I work at the harbour"}]}, _config("dan"))
    assert [i.value for i in store.search(("memories", "dan"))] == [{"content": "Works at the harbour"}]
