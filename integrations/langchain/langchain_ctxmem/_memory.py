"""The memory an integration object works on: given open, or opened from a location.

Any :class:`ctxmem_plugin.MemoryAPI` will do: a ``ContextMemory`` in this process, or a
``RemoteMemory`` talking to a memory server. A location is a directory or ``http(s)://host:port``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeAlias

from pydantic import PlainValidator

from ctxmem_plugin.api import MemoryAPI, is_memory
from ctxmem_plugin.api import open_memory as open_location
from ctxmem_plugin.remote import is_server_url

MemoryLike: TypeAlias = MemoryAPI | str | Path


def _require_memory(value: Any) -> MemoryAPI:
    if not is_memory(value):
        raise ValueError(f"expected a memory (ContextMemory or RemoteMemory), got {type(value).__name__}")
    return value


MemoryField = Annotated[MemoryAPI, PlainValidator(_require_memory)]
"""A pydantic field holding a memory (checked to have every method of ``MemoryAPI``)."""


def open_memory(memory: MemoryLike, encoder: Any = None, **kwargs: Any) -> tuple[MemoryAPI, bool]:
    """``(memory, owned)``: an open memory is used as is; a location is opened (and owned: closed by us).

    Raises:
        ValueError: an encoder was given together with an already open memory or a memory
            server (each has its own encoder).
    """
    if is_memory(memory):
        if encoder is not None:
            raise ValueError(
                "this memory already has its encoder; pass the embeddings to ContextMemory(path, encoder=...) "
                "or give a path instead of an open memory"
            )
        return memory, False  # type: ignore[return-value]
    if isinstance(memory, (str, Path)):
        if is_server_url(memory) and encoder is not None:
            raise ValueError(f"the memory server at {memory} embeds with its own encoder; leave the embeddings out")
        return open_location(memory, **({} if encoder is None else {"encoder": encoder}), **kwargs), True
    raise TypeError(f"expected a memory, a directory path or a server URL, got {type(memory).__name__}")
