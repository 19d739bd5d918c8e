"""The client of a memory server: :class:`RemoteMemory`, with the methods of ``ContextMemory``.

It needs the standard library only (``http.client``); the server side is :mod:`ctxmem_plugin.server`.
"""

from __future__ import annotations

from ctxmem_plugin.remote.encoder import RemoteEncoder
from ctxmem_plugin.remote.memory import TOKEN_ENV, RemoteMemory
from ctxmem_plugin.remote.transport import is_server_url

__all__ = ["TOKEN_ENV", "RemoteEncoder", "RemoteMemory", "is_server_url"]
