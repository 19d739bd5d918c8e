"""ctxmem-plugin: offline long-term memory for LLM agents.

>>> from ctxmem_plugin import ContextMemory   # doctest: +SKIP
>>> with ContextMemory("./mem") as memory:      # doctest: +SKIP
...     memory.add([{"role": "user", "content": "My dog is called Pretzel"}], ("user-1",))
...     memory.search("what is my dog called?", ("user-1",))
"""

from __future__ import annotations

from ctxmem_plugin.encoders.hashing import HashEncoder
from ctxmem_plugin.errors import (
    CheckpointError,
    CtxMemError,
    DependencyError,
    FormatError,
    InputError,
    MemoryLockedError,
    MemoryNotFoundError,
    ModelMismatchError,
    NamespaceError,
)
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.records import Hit, IngestReport, NewTurn, StoredTurn, Turn
from ctxmem_plugin.retrieval.hybrid import RetrievalConfig

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ContextMemory",
    "CtxMemError",
    "DependencyError",
    "FormatError",
    "HashEncoder",
    "Hit",
    "IngestReport",
    "InputError",
    "MemoryLockedError",
    "MemoryNotFoundError",
    "ModelMismatchError",
    "NamespaceError",
    "NewTurn",
    "RetrievalConfig",
    "StoredTurn",
    "Turn",
    "__version__",
]
