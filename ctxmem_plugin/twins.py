"""Async twins: the async version of a sync method is the same code, run in a worker thread.

langchain-core's pattern: one implementation, a thin ``a``-prefixed wrapper per method, so the
two can never drift apart (no copied async class).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def async_twin(method: Callable[P, R]) -> Callable[P, Any]:
    """The async version of a method: the same code, run in a worker thread."""

    @functools.wraps(method)
    async def twin(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(method, *args, **kwargs)

    twin.__doc__ = f"Async twin of :meth:`{method.__name__}` (runs it in a worker thread)."
    return twin
