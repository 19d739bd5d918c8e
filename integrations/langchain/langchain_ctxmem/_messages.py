"""LangChain messages <-> ctxmem turns.

A message is stored as a turn with its role and text (what retrieval indexes) and, in
``metadata["lc_message"]``, the whole serialised message, so that tool calls, ids and
multimodal content come back exactly. Turns written by other code (no ``lc_message``) are
rebuilt from their role and content.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)

from ctxmem_plugin.records import StoredTurn

ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


def message_text(message: BaseMessage) -> str:
    """The plain text of a message (text blocks of multimodal content joined)."""
    return message.text if isinstance(message.text, str) else str(message.text)


def placeholder(message: BaseMessage) -> str:
    """Text for a message with no text of its own (e.g. an AI message that only calls tools)."""
    calls = getattr(message, "tool_calls", None) or []
    if calls:
        return "; ".join(f"[tool call {c['name']}({json.dumps(c.get('args', {}), ensure_ascii=False)})]" for c in calls)
    return f"[{message.type} message without text]"


def to_turn(message: BaseMessage, metadata: dict[str, Any] | None = None, *, key: str | None = None) -> dict[str, Any]:
    """A ``ContextMemory.add`` message dict for a LangChain message."""
    text = message_text(message)
    turn: dict[str, Any] = {
        "role": ROLES.get(message.type, "user"),
        "content": text if text.strip() else placeholder(message),
        "timestamp": datetime.now(UTC).isoformat(),
        "metadata": {**(metadata or {}), "lc_message": message_to_dict(message)},
    }
    if message.name:
        turn["speaker"] = message.name
    if key is not None:
        turn["key"] = key
    return turn


def thread_history(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """The user and assistant messages of a thread that say something, as ``search(history=...)`` takes them.

    Tool calls, tool results and system messages are left out: they are not what a follow-up
    refers to.
    """
    out = []
    for message in messages:
        role = ROLES.get(message.type)
        text = message_text(message).strip()
        if role in ("user", "assistant") and text:
            out.append({"role": role, "content": text})
    return out


def from_turn(turn: StoredTurn) -> BaseMessage:
    """The LangChain message a turn holds (exact when it was written by :func:`to_turn`)."""
    stored = turn.metadata.get("lc_message")
    if isinstance(stored, dict):
        return messages_from_dict([stored])[0]
    if turn.role == "assistant":
        return AIMessage(content=turn.content, name=turn.speaker)
    if turn.role == "system":
        return SystemMessage(content=turn.content)
    if turn.role == "tool":
        return ToolMessage(content=turn.content, tool_call_id=str(turn.metadata.get("tool_call_id", "")))
    return HumanMessage(content=turn.content, name=turn.speaker)
