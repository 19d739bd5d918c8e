"""Readers of message logs: OpenAI-style messages, LangChain message dumps and ShareGPT.

A file holds messages at the top level (one conversation, named after the file) or
conversations: arrays of messages, or objects holding them under ``messages`` (OpenAI,
LangChain) or ``conversations`` (ShareGPT), named by their ``id`` when they have one.
Messages that only carry a tool call (OpenAI ``tool_calls``/``function_call``, LangChain
``tool_calls``, with no text) are passed over: they hold nothing to remember.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ctxmem_plugin.errors import FormatError
from ctxmem_plugin.formats.document import Convert, Document, Pending, build_turn, kind_of
from ctxmem_plugin.records import Turn

_LANGCHAIN_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool",
                    "function": "tool"}


_MORE_ROLES = {"developer": "system", "observation": "tool", "function_call": "assistant",
               "bing": "assistant"}


def text_of(content: Any, source: str) -> str | None:
    """A message's text: a string, or the text parts of an OpenAI/LangChain list of parts joined."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise FormatError(f"content must be a string or a list of text parts, found {kind_of(content)}", source)
    texts = [part if isinstance(part, str) else part["text"] for part in content
             if isinstance(part, str) or (isinstance(part, dict) and isinstance(part.get("text"), str))]
    if not texts:
        raise FormatError("content has no text parts; expected {'type': 'text', 'text': ...}", source)
    return "\n".join(texts)


def openai_turn(message: Any, source: str) -> Turn | None:
    if not isinstance(message, dict) or "role" not in message:
        found = "an object without 'role'" if isinstance(message, dict) else kind_of(message)
        raise FormatError(f"expected a message object with 'role' and 'content', found {found}", source)
    content = text_of(message.get("content"), source)
    if not content and (message.get("tool_calls") or message.get("function_call")):
        return None
    if content is None:
        raise FormatError("message has no 'content'; expected a string", source)
    metadata = message.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise FormatError(f"'metadata' must be an object, found {kind_of(metadata)}", source)
    role = message["role"]
    role = _MORE_ROLES.get(role.strip().lower(), role) if isinstance(role, str) else role
    return build_turn(source, role=role, content=content, timestamp=message.get("timestamp"),
                      speaker=message.get("speaker", message.get("name")), metadata=metadata)


def langchain_turn(message: Any, source: str) -> Turn | None:
    if not isinstance(message, dict) or "type" not in message or not isinstance(message.get("data"), dict):
        raise FormatError(f"expected a LangChain message {{'type', 'data'}}, found {kind_of(message)}", source)
    kind, data = message["type"], message["data"]
    if kind == "chat":  # ChatMessage: the role is in the data
        role = data.get("role")
    elif isinstance(kind, str) and kind in _LANGCHAIN_ROLES:
        role = _LANGCHAIN_ROLES[kind]
    else:
        known = "human, ai, system, tool, function, chat"
        raise FormatError(f"unknown LangChain message type {kind!r:.40}; expected one of {known}", source)
    extra = data.get("additional_kwargs")
    timestamp = extra.get("timestamp") if isinstance(extra, dict) else None
    fields = {"content": data.get("content"), "name": data.get("name"), "tool_calls": data.get("tool_calls")}
    return openai_turn({**fields, "role": role, "timestamp": timestamp}, source)


def sharegpt_turn(message: Any, source: str) -> Turn | None:
    if not isinstance(message, dict) or "from" not in message:
        raise FormatError(f"expected a ShareGPT message {{'from', 'value'}}, found {kind_of(message)}", source)
    if not isinstance(message.get("value"), str):
        raise FormatError(f"ShareGPT 'value' must be a string, found {kind_of(message.get('value'))}", source)
    fields = {"role": message["from"], "content": message["value"], "name": message.get("name")}
    return openai_turn(fields, source)


def read_grouped(doc: Document, key: str, convert: Convert) -> Iterator[Pending]:
    """Top-level messages form the conversation ``<stem>``; an array of messages, or an object
    holding one under ``key``, is a conversation of its own."""
    stem, count = doc.path.stem, 0
    for record in doc.records:
        if isinstance(record, FormatError):
            yield record
            continue
        value, keypath = record
        if not (isinstance(value, list) or (isinstance(value, dict) and key in value)):
            yield from convert_record(convert, value, stem, doc.where(keypath))
            continue
        count += 1
        name = f"{stem}#{count}" if keypath else stem
        messages, base = value, keypath
        if isinstance(value, dict):
            name = name if value.get("id") is None else str(value["id"])
            messages, base = value[key], (*keypath, key)
        if not isinstance(messages, list):
            yield FormatError(f"{key!r} must be an array of messages, found {kind_of(messages)}", doc.where(base))
            continue
        for index, message in enumerate(messages):
            yield from convert_record(convert, message, name, doc.where((*base, index)))


def convert_record(convert: Convert, message: Any, conversation: str, source: str) -> Iterator[Pending]:
    try:
        turn = convert(message, source)
    except FormatError as error:
        yield error
        return
    if turn is not None:
        yield conversation, turn, source


def read_openai(doc: Document) -> Iterator[Pending]:
    """OpenAI-style messages (``role``, ``content``), alone or grouped under ``messages``."""
    return read_grouped(doc, "messages", openai_turn)


def read_langchain(doc: Document) -> Iterator[Pending]:
    """LangChain message dumps (``type``, ``data``), alone or grouped under ``messages``."""
    return read_grouped(doc, "messages", langchain_turn)


def read_sharegpt(doc: Document) -> Iterator[Pending]:
    """ShareGPT (``from``, ``value``), grouped under ``conversations``."""
    return read_grouped(doc, "conversations", sharegpt_turn)
