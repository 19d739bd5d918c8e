"""CtxMemMiddleware: long-term memory for ``create_agent``, injected into each model call.

Before every model call it searches the user's namespace for the latest user message, asked in
the running thread (``search(history=...)``: a follow-up such as "and the painting?" is searched
for what it refers to), and adds the best hits, within a token budget, to the system message.
After the agent finishes it writes the run's user and assistant messages into ``(*user
namespace, thread id)``, so the next conversation of the same user (another thread) can recall
them, and no other user can.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from ctxmem_plugin.api import MemoryAPI
from ctxmem_plugin.records import Hit
from ctxmem_plugin.retrieval.context import render_hits
from langchain_ctxmem._messages import ROLES, message_text, thread_history, to_turn
from langchain_ctxmem._scope import resolve, thread_id, thread_namespace
from langchain_ctxmem.tools import create_memory_tools

DEFAULT_HEADER = "Relevant memories from earlier conversations with this user (oldest first):"
NO_THREAD = "no-thread"
"""Thread label for runs without a thread id (no checkpointer)."""

_RECALL_CACHE_SIZE = 256


class CtxMemMiddleware(AgentMiddleware):
    """Agent middleware that gives the model ctxmem long-term memory.

    Args:
        memory: the memory (``ContextMemory`` or ``RemoteMemory``).
        namespace: the user's namespace template; ``{names}`` are filled from the run's context
            (``agent.invoke(..., context={"user_id": ...})``) or ``config["configurable"]``.
            A missing value is an error, never a shared namespace.
        k: hits retrieved per model call.
        max_tokens: budget for the injected memories (estimated as characters / 4).
        save: write each run's user and assistant messages into memory after the agent ends.
        tools: also give the model ``save_memory`` / ``search_memory`` tools (same scope).
        exclude_current_thread: leave out memories of the running thread: the checkpointer
            already puts that conversation in the messages.
        header: the line introducing the memories in the system message.

    Example:
        >>> agent = create_agent(  # doctest: +SKIP
        ...     model, tools=[], middleware=[CtxMemMiddleware(ContextMemory("mem"))], checkpointer=InMemorySaver()
        ... )
        >>> config = {"configurable": {"thread_id": "t1"}}
        >>> agent.invoke({"messages": [...]}, config, context={"user_id": "u1"})  # doctest: +SKIP
    """

    def __init__(
        self,
        memory: MemoryAPI,
        *,
        namespace: Sequence[str] = ("users", "{user_id}"),
        k: int = 5,
        max_tokens: int = 400,
        save: bool = True,
        tools: bool = False,
        exclude_current_thread: bool = True,
        header: str = DEFAULT_HEADER,
    ) -> None:
        super().__init__()
        self.memory = memory
        self.namespace = tuple(namespace)
        self.k = k
        self.max_tokens = max_tokens
        self.save = save
        self.exclude_current_thread = exclude_current_thread
        self.header = header
        self.tools = create_memory_tools(memory, self.namespace, k=k) if tools else []
        # An agent calls the model once per tool round with the same latest user message: the
        # hits are reused while the memory is unchanged (its write generation is the same).
        self._recalled: OrderedDict[tuple[Any, ...], tuple[int, list[Hit]]] = OrderedDict()
        self._recalled_lock = threading.Lock()

    # -- recall ---------------------------------------------------------------------------

    def recall(self, query: str, runtime: Runtime[Any] | None, history: Sequence[BaseMessage] = ()) -> list[Hit]:
        """The hits for ``query`` asked after ``history`` (the thread's earlier messages), in the
        run's user namespace (other threads only, by default)."""
        context = getattr(runtime, "context", None)
        space = resolve(self.namespace, context)
        current = thread_id(runtime)
        filters = {"thread_id": {"$ne": current}} if current and self.exclude_current_thread else None
        thread = thread_history(history)
        key = (space, current if filters else None, query, tuple((m["role"], m["content"]) for m in thread))
        generation = self.memory.generation
        with self._recalled_lock:
            cached = self._recalled.get(key)
            if cached is not None and cached[0] == generation:
                self._recalled.move_to_end(key)
                return list(cached[1])
        hits = self.memory.search(query, space, k=self.k, filters=filters, history=thread)
        with self._recalled_lock:
            self._recalled[key] = (generation, hits)
            while len(self._recalled) > _RECALL_CACHE_SIZE:
                self._recalled.popitem(last=False)
        return list(hits)

    def render(self, hits: Sequence[Hit]) -> str:
        """The best hits that fit in ``max_tokens``, oldest first, under :attr:`header` ("" if none)."""
        return render_hits(hits, self.max_tokens, header=self.header)

    def with_memories(self, request: ModelRequest) -> ModelRequest:
        """``request`` with the memories for its latest user message (asked after the messages
        before it) added to the system message."""
        at = _latest_user(request.messages)
        query = message_text(request.messages[at]).strip() if at is not None else ""
        if at is None or not query:
            return request
        block = self.render(self.recall(query, request.runtime, request.messages[:at]))
        if not block:
            return request
        return request.override(system_message=_extend(request.system_message, block))

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> ModelResponse:
        """Inject memories, then call the model."""
        return handler(self.with_memories(request))

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> ModelResponse:
        """Async twin of :meth:`wrap_model_call` (the search runs in a worker thread)."""
        return await handler(await asyncio.to_thread(self.with_memories, request))

    # -- remember -------------------------------------------------------------------------

    def after_agent(self, state: AgentState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Write the run's user and assistant messages that memory does not hold yet."""
        if not self.save:
            return None
        space = resolve(self.namespace, getattr(runtime, "context", None))
        thread = thread_id(runtime) or NO_THREAD
        target = thread_namespace(space, thread)
        # Message ids are the turn keys: a thread's earlier messages (replayed from the
        # checkpoint) are recognised and not written again.
        fresh = [
            m
            for m in state["messages"]
            if ROLES.get(m.type) in ("user", "assistant")
            and message_text(m).strip()
            and (m.id is None or self.memory.get_by_key(target, m.id) is None)
        ]
        if fresh:
            self.memory.add([to_turn(m, {"thread_id": thread}, key=m.id) for m in fresh], target)
        return None

    async def aafter_agent(self, state: AgentState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Async twin of :meth:`after_agent` (runs it in a worker thread)."""
        return await asyncio.to_thread(self.after_agent, state, runtime)


def _latest_user(messages: Sequence[BaseMessage]) -> int | None:
    """The index of the latest user message, if any."""
    for at in range(len(messages) - 1, -1, -1):
        if isinstance(messages[at], HumanMessage):
            return at
    return None


def _extend(system: SystemMessage | None, block: str) -> SystemMessage:
    """The system message with ``block`` appended (text or content-block form kept)."""
    if system is None:
        return SystemMessage(content=block)
    if isinstance(system.content, str):
        content: Any = f"{system.content}\n\n{block}" if system.content else block
    else:
        content = [*system.content, {"type": "text", "text": block}]
    return system.model_copy(update={"content": content})
