"""Memory tools for the model: save a fact, search memories (scoped to the run's user).

The namespace comes from the run (context/config), never from the model's arguments, so a
model cannot read or write another user's memory whatever it is told.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from langchain.tools import ToolRuntime
from langchain_core.tools import BaseTool, StructuredTool

from ctxmem_plugin.api import MemoryAPI
from ctxmem_plugin.retrieval.context import format_hit
from langchain_ctxmem._messages import thread_history
from langchain_ctxmem._scope import resolve

SAVED = "saved"
"""Sub-namespace (under the user's) where facts saved by the tool live."""


def create_memory_tools(
    memory: MemoryAPI, namespace: Sequence[str] = ("users", "{user_id}"), *, k: int = 5
) -> list[BaseTool]:
    """``[save_memory, search_memory]`` tools over ``memory``.

    Args:
        memory: the memory (``ContextMemory`` or ``RemoteMemory``).
        namespace: the user's namespace template, filled from the run's context/config.
        k: hits returned by ``search_memory``.
    """
    template = tuple(namespace)

    def save_memory(fact: str, runtime: ToolRuntime[Any, Any]) -> str:
        """Save a fact worth remembering in later conversations (one short, self-contained sentence)."""
        space = (*resolve(template, runtime.context, runtime.config), SAVED)
        [turn_id] = memory.add(
            [{"role": "assistant", "speaker": "memory", "content": fact, "metadata": {"source": "save_memory"}}], space
        )
        return f"Saved memory {turn_id}."

    def search_memory(query: str, runtime: ToolRuntime[Any, Any]) -> str:
        """Search long-term memory (past conversations and saved facts) for what is relevant to the query."""
        space = resolve(template, runtime.context, runtime.config)
        # Asked in the run's thread, as the middleware's recall is: a query such as "what did I
        # say about it?" is searched for what the thread's latest turns talk about.
        state = runtime.state
        messages = state.get("messages", []) if isinstance(state, Mapping) else getattr(state, "messages", [])
        hits = memory.search(query, space, k=k, history=thread_history(messages or []))
        return "\n".join(format_hit(h) for h in hits) or "No memories found."

    # The memory is synchronous (SQLite, FAISS, the encoder): the async twins run it in a thread.
    async def asave_memory(fact: str, runtime: ToolRuntime[Any, Any]) -> str:
        """Async twin of save_memory."""
        return await asyncio.to_thread(save_memory, fact, runtime)

    async def asearch_memory(query: str, runtime: ToolRuntime[Any, Any]) -> str:
        """Async twin of search_memory."""
        return await asyncio.to_thread(search_memory, query, runtime)

    return [
        StructuredTool.from_function(save_memory, coroutine=asave_memory, name="save_memory"),
        StructuredTool.from_function(search_memory, coroutine=asearch_memory, name="search_memory"),
    ]
