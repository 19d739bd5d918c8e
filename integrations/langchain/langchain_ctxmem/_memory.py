"""Opening the ContextMemory an integration object works on (given, or opened from a path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeAlias

from ctxmem_plugin.memory import ContextMemory

MemoryLike: TypeAlias = ContextMemory | str | Path


def open_memory(memory: MemoryLike, encoder: Any = None, **kwargs: Any) -> tuple[ContextMemory, bool]:
    """``(memory, owned)``: an open memory is used as is; a path is opened (and owned: closed by us).

    Raises:
        ValueError: an encoder was given together with an already open memory (the memory has
            its own encoder, recorded in its directory).
    """
    if isinstance(memory, ContextMemory):
        if encoder is not None:
            raise ValueError(
                "this ContextMemory already has its encoder; pass the embeddings to ContextMemory(path, encoder=...) "
                "or give a path instead of an open memory"
            )
        return memory, False
    if isinstance(memory, (str, Path)):
        return ContextMemory(memory, encoder=encoder, **kwargs), True
    raise TypeError(f"expected a ContextMemory or a directory path, got {type(memory).__name__}")
