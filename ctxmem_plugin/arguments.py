"""Arguments of the public API checked as they come in: counts, queries, turn ids.

A wrong type or value is one :class:`~ctxmem_plugin.errors.InputError` naming the argument,
never a ``TypeError`` from deep inside a search or a ``sqlite3.OverflowError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ctxmem_plugin import safejson
from ctxmem_plugin.errors import InputError


def count(name: str, value: Any) -> int:
    """``value`` if it is an integer >= 0 (a count, a k, an offset), else an :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"{name} must be an integer >= 0, got {safejson.show(value)}")
    return int(value)


def query(text: Any) -> None:
    """Refuse a query that is not non-empty, valid Unicode text."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("query must be a non-empty string")
    if not safejson.is_unicode(text):
        raise InputError("query is not valid Unicode text (a lone surrogate)")


def turn_ids(ids: Any) -> list[int]:
    """Turn ids as a list of ints, or an :class:`InputError` (a string, a float, an id beyond 64 bits)."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise InputError(f"ids must be a sequence of integers, got {type(ids).__name__}")
    out = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not safejson.INT64[0] <= i <= safejson.INT64[1]:
            raise InputError(f"ids must be 64-bit integers, got {safejson.show(i)}")
        out.append(int(i))
    return out


def resident_bytes() -> int | None:
    """This process's resident memory in bytes (Linux ``/proc``; else the peak, where known)."""
    import os
    import sys

    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        try:
            import resource
        except ImportError:
            return None
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
