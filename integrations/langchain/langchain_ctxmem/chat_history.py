"""CtxMemChatMessageHistory: a LangChain ``BaseChatMessageHistory`` kept in a ContextMemory.

One history = one exact namespace (e.g. ``("users", "u1", "session-7")``). Because the
messages are ctxmem turns, the same conversation is searchable by the retriever and the
middleware under any prefix of that namespace.
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from ctxmem_plugin import namespaces as core_ns
from ctxmem_plugin.api import MemoryAPI
from ctxmem_plugin.records import StoredTurn
from langchain_ctxmem._messages import from_turn, to_turn


class CtxMemChatMessageHistory(BaseChatMessageHistory):
    """Chat message history stored as turns of one ctxmem namespace.

    Args:
        memory: the memory (``ContextMemory`` or ``RemoteMemory``) to keep the messages in.
        namespace: the conversation's namespace (a tuple, or ``"user/session"``).

    Example:
        >>> history = CtxMemChatMessageHistory(mem, ("users", "u1", "s1"))  # doctest: +SKIP
        >>> history.add_user_message("hi")  # doctest: +SKIP
        >>> RunnableWithMessageHistory(chain, lambda sid: CtxMemChatMessageHistory(mem, ("s", sid)))  # doctest: +SKIP
    """

    def __init__(self, memory: MemoryAPI, namespace: Sequence[str] | str) -> None:
        self.memory = memory
        self.namespace = core_ns.validate(namespace)

    def _turns(self) -> list[StoredTurn]:
        # ContextMemory.list reads a prefix; a history is its exact namespace only.
        return [t for t in self.memory.list_turns(self.namespace) if t.namespace == self.namespace]

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The messages, oldest first."""
        return [from_turn(t) for t in self._turns()]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append messages (one transaction)."""
        if messages:
            self.memory.add([to_turn(m) for m in messages], self.namespace)

    def clear(self) -> None:
        """Delete this conversation's messages (not those of deeper namespaces)."""
        ids = [t.id for t in self._turns()]
        if ids:
            self.memory.delete(ids)
