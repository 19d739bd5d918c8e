"""JSON from untrusted text, and JSON values checked before they are stored or compared.

``json.loads`` lets two errors through that are not :class:`json.JSONDecodeError`: a
``RecursionError`` on arrays or objects nested a thousand deep, and a ``ValueError`` on a number
of more than 4,300 digits. :func:`loads` turns both into a ``JSONDecodeError`` that the callers
already report as bad input. :func:`problem` says what keeps a value from being stored as JSON
that SQLite's JSON functions read back the same: nesting deeper than :data:`MAX_DEPTH`, an
integer outside 64 bits, NaN or an infinity, a lone surrogate, a key that is not a string.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in metadata and filter values."""

INT64 = (-(1 << 63), (1 << 63) - 1)
"""The integers SQLite stores as integers (larger ones would silently become floats)."""


def loads(text: str) -> Any:
    """``json.loads`` whose every failure is a :class:`json.JSONDecodeError`."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("arrays or objects nested too deeply", text, _deep_position(text)) from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise json.JSONDecodeError(f"number too long ({str(exc).split(':')[0]})", text, 0) from None


def raw_decode(decoder: json.JSONDecoder, text: str, index: int) -> tuple[Any, int]:
    """``decoder.raw_decode`` whose every failure is a :class:`json.JSONDecodeError` (see :func:`loads`)."""
    try:
        return decoder.raw_decode(text, index)
    except RecursionError:
        raise json.JSONDecodeError("arrays or objects nested too deeply", text, _deep_position(text, index)) from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:
        raise json.JSONDecodeError(f"number too long ({str(exc).split(':')[0]})", text, index) from None


def _deep_position(text: str, start: int = 0, limit: int = 500) -> int:
    """Where nesting first passes ``limit`` levels (outside strings); only run on the error path."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return i
        elif ch in "]}":
            depth -= 1
    return start


def problem(value: Any, max_depth: int = MAX_DEPTH) -> str | None:
    """What keeps ``value`` from being stored as JSON, as a noun phrase (``None``: nothing),
    e.g. ``"nested deeper than 64 levels (at a[0][0])"``.

    Walks the value without recursion, so a value nested a million deep is reported, not a
    ``RecursionError``.
    """
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, where = stack.pop()
        at = f" (at {where if len(where) <= 40 else where[:37] + '...'})" if where else ""
        if isinstance(item, (dict, list, tuple)):
            if depth >= max_depth:
                return f"nested deeper than {max_depth} levels{at}"
            if isinstance(item, dict):
                for key, sub in item.items():
                    if not isinstance(key, str):
                        return f"a key that is not a string ({show(key)}){at}"
                    if not is_unicode(key):
                        return f"a key that is not valid Unicode text (a lone surrogate){at}"
                    stack.append((sub, depth + 1, f"{where}.{key}" if where else key))
            else:
                stack.extend((sub, depth + 1, f"{where}[{i}]") for i, sub in enumerate(item))
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64[0] <= item <= INT64[1]:
                return f"an integer outside the 64-bit range ({show(item)}){at}"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{item!r}, which is not a JSON number{at}"
        elif isinstance(item, str):
            if not is_unicode(item):
                return f"text that is not valid Unicode (a lone surrogate){at}"
        else:
            return f"a {type(item).__name__}, which is not JSON{at}"
    return None


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters; a huge integer by its size (its repr would raise)."""
    try:
        text = repr(value)
    except ValueError:  # an integer of more than 4,300 digits
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits"
    except RecursionError:
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_unicode(text: str) -> bool:
    """Whether ``text`` can be stored: no lone surrogate (as undecodable command-line bytes give)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
