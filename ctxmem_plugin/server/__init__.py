"""The memory server: one ContextMemory served over HTTP (FastAPI + uvicorn, the extra ``[server]``).

``ctxmem-plugin serve --memory DIR`` runs it; :func:`serve` does the same from Python with a
memory opened by the caller (any encoder), and :func:`create_app` gives the ASGI application for
another ASGI server. The client is :class:`ctxmem_plugin.remote.RemoteMemory`. FastAPI is
imported only by :mod:`.app`, when a server is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ctxmem_plugin.server.run import DEFAULT_HOST, DEFAULT_PORT, check_exposure, is_loopback, serve

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ctxmem_plugin.memory import ContextMemory

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "check_exposure", "create_app", "is_loopback", "serve"]


def create_app(memory: ContextMemory, **kwargs: Any) -> FastAPI:
    """The ASGI application serving ``memory`` (see :func:`ctxmem_plugin.server.app.create_app`)."""
    from ctxmem_plugin.server.deps import require_server_deps

    require_server_deps()
    from ctxmem_plugin.server.app import create_app as build

    return build(memory, **kwargs)
