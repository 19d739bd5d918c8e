"""The server's optional dependencies (the extra ``[server]``), checked with one clear error."""

from __future__ import annotations

import importlib.util

from ctxmem_plugin.errors import DependencyError


def require_server_deps() -> None:
    """Raise :class:`DependencyError` unless FastAPI and uvicorn can be imported."""
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise DependencyError(f"the memory server needs {' and '.join(missing)}: pip install 'ctxmem-plugin[server]'")
