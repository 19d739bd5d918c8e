"""CtxMemMemory: legacy ``langchain_classic`` ``BaseMemory`` for chains (``pip install 'langchain-ctxmem[classic]'``).

New code should use :class:`~langchain_ctxmem.middleware.CtxMemMiddleware` with
``create_agent``; this keeps ``ConversationChain``-style code working on ctxmem. Unlike a
buffer memory it does not replay the whole conversation: it retrieves the turns most relevant
to the current input, within a token budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from langchain_classic.base_memory import BaseMemory
except ImportError as exc:  # the class is only importable with the extra installed
    raise ImportError("CtxMemMemory needs langchain-classic: pip install 'langchain-ctxmem[classic]'") from exc
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from pydantic import ConfigDict, Field, field_validator

from ctxmem_plugin import namespaces as core_ns
from ctxmem_plugin.retrieval.context import pack_hits
from langchain_ctxmem._memory import MemoryField


class CtxMemMemory(BaseMemory):
    """Retrieval memory for legacy chains, backed by ctxmem.

    Args:
        memory: the memory (``ContextMemory`` or ``RemoteMemory``).
        namespace: where this conversation is saved and searched (a prefix search: saving
            under ``("u1", "s1")`` and searching ``("u1",)`` finds every session of ``u1``).
        search_namespace: the prefix searched on load; ``None`` = ``namespace``. The
            conversation under ``namespace`` is the thread the input is asked in
            (``ContextMemory.search(history=namespace)``): a follow-up is searched for what it
            refers to.
        memory_key: the chain input variable the memories are put in.
        input_key / output_key: which input / output is the human / AI text (``None`` = the
            only one, as in ``ConversationBufferMemory``).
        k: hits retrieved per load; max_tokens: budget for the text they become.
        return_messages: give a list of messages instead of one string.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memory: MemoryField
    namespace: tuple[str, ...]
    search_namespace: tuple[str, ...] | None = None
    memory_key: str = "history"
    input_key: str | None = None
    output_key: str | None = None
    k: int = Field(default=5, ge=1)
    max_tokens: int = Field(default=500, ge=1)
    human_prefix: str = "Human"
    ai_prefix: str = "AI"
    return_messages: bool = False

    @field_validator("namespace", "search_namespace", mode="before")
    @classmethod
    def _namespace(cls, value: Sequence[str] | str | None) -> tuple[str, ...] | None:
        return None if value is None else core_ns.validate(value, allow_empty=False)

    @property
    def memory_variables(self) -> list[str]:
        """The one variable this memory fills: :attr:`memory_key`."""
        return [self.memory_key]

    def _key(self, values: dict[str, Any], key: str | None, what: str) -> str:
        if key is not None:
            return key
        candidates = [k for k in values if k != self.memory_key]
        if len(candidates) != 1:
            raise ValueError(f"set {what}_key: the {what}s have several keys ({sorted(candidates)})")
        return candidates[0]

    def load_memory_variables(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The turns most relevant to the current input, oldest first, within ``max_tokens``."""
        query = str(inputs[self._key(inputs, self.input_key, "input")])
        if not query.strip():
            return {self.memory_key: [] if self.return_messages else ""}
        # The input is asked in this conversation, even when a wider prefix is searched: a
        # follow-up ("what was its name again?") is searched for what its latest turns say.
        hits = self.memory.search(query, self.search_namespace or self.namespace, k=self.k, history=self.namespace)
        chosen = pack_hits(hits, self.max_tokens)
        if self.return_messages:
            messages: list[BaseMessage] = [
                AIMessage(content=h.text) if h.role == "assistant" else HumanMessage(content=h.text) for h in chosen
            ]
            return {self.memory_key: messages}
        prefix = {"assistant": self.ai_prefix, "user": self.human_prefix}
        return {self.memory_key: "\n".join(f"{prefix.get(h.role, h.role)}: {h.text}" for h in chosen)}

    def save_context(self, inputs: dict[str, Any], outputs: dict[str, str]) -> None:
        """Save the human input and the AI output as two turns."""
        turns = [
            {"role": "user", "content": str(inputs[self._key(inputs, self.input_key, "input")])},
            {"role": "assistant", "content": str(outputs[self._key(outputs, self.output_key, "output")])},
        ]
        self.memory.add([t for t in turns if t["content"].strip()], self.namespace)

    def clear(self) -> None:
        """Forget everything under :attr:`namespace`."""
        self.memory.forget(self.namespace)
