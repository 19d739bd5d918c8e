"""ctxmem-plugin: offline long-term memory for LLM agents.

>>> from ctxmem_plugin import ContextMemory   # doctest: +SKIP
>>> with ContextMemory("./mem") as memory:      # doctest: +SKIP
...     memory.add([{"role": "user", "content": "My dog is called Pretzel"}], ("user-1",))
...     memory.search("what is my dog called?", ("user-1",))
"""

from __future__ import annotations

from ctxmem_plugin.api import MemoryAPI, is_memory, open_memory
from ctxmem_plugin.encoders.hashing import HashEncoder
from ctxmem_plugin.errors import (
    AuthError,
    CheckpointError,
    CtxMemError,
    DependencyError,
    FormatError,
    InputError,
    MemoryLockedError,
    MemoryNotFoundError,
    ModelMismatchError,
    NamespaceError,
    ServerError,
)
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.records import Hit, IngestReport, NewTurn, StoredTurn, Turn
from ctxmem_plugin.remote import RemoteMemory
from ctxmem_plugin.retrieval.hybrid import RetrievalConfig

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "CheckpointError",
    "ContextMemory",
    "CtxMemError",
    "DependencyError",
    "FormatError",
    "HashEncoder",
    "Hit",
    "IngestReport",
    "InputError",
    "MemoryAPI",
    "MemoryLockedError",
    "MemoryNotFoundError",
    "ModelMismatchError",
    "NamespaceError",
    "NewTurn",
    "RemoteMemory",
    "RetrievalConfig",
    "ServerError",
    "StoredTurn",
    "Turn",
    "__version__",
    "is_memory",
    "open_memory",
]
