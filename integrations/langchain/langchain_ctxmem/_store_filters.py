"""LangGraph store filters -> ctxmem metadata filters (compiled to SQL by the core).

A store item is kept as a turn whose metadata is ``{"store": ..., "indexed": ..., "value": value}``,
so a filter on a value field ``f`` becomes a filter on ``value.f``. A nested dict without
operators matches as a subset (as in ``InMemoryStore``) and is flattened into dotted paths.
"""

from __future__ import annotations

import re
from typing import Any

SUPPORTED_OPERATORS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in"})
_PART = re.compile(r"^[A-Za-z0-9_\-]+$")


def to_core_filters(filter: dict[str, Any] | None, base: str = "value") -> dict[str, Any]:
    """The ctxmem filter of a LangGraph ``SearchOp.filter``.

    Raises:
        ValueError: an unknown operator, operators mixed with plain keys, or a field name the
            core cannot address (it takes letters, digits, ``_`` and ``-``; a ``.`` in a key
            separates nested fields).
    """
    out: dict[str, Any] = {}
    for key, spec in (filter or {}).items():
        _flatten([base, *_parts(key)], spec, out)
    return out


def _parts(key: Any) -> list[str]:
    if not isinstance(key, str):
        raise ValueError(f"filter keys must be strings, got {key!r}")
    parts = key.split(".")
    for part in parts:
        if not _PART.match(part):
            raise ValueError(
                f"filter field {key!r}: ctxmem filters address fields made of letters, digits, '_' and '-' "
                "('.' separates nested fields)"
            )
    return parts


def _flatten(path: list[str], spec: Any, out: dict[str, Any]) -> None:
    field = ".".join(path)
    if isinstance(spec, dict):
        ops = [k for k in spec if isinstance(k, str) and k.startswith("$")]
        if ops:
            if len(ops) != len(spec):
                raise ValueError(f"filter on {field!r} mixes operators and fields: {spec!r}")
            for op in ops:
                if op not in SUPPORTED_OPERATORS:
                    raise ValueError(f"Unsupported operator: {op}")
            _put(out, field, dict(spec))
            return
        if not spec:
            # {} matches any dict in InMemoryStore; the closest SQL condition is "present".
            _put(out, field, {"$ne": None})
            return
        for key, value in spec.items():
            _flatten([*path, *_parts(key)], value, out)
        return
    _put(out, field, spec)


def _put(out: dict[str, Any], field: str, spec: Any) -> None:
    if field not in out:
        out[field] = spec
        return
    old = out[field]
    old_ops = old if isinstance(old, dict) and all(str(k).startswith("$") for k in old) else {"$eq": old}
    new_ops = spec if isinstance(spec, dict) and all(str(k).startswith("$") for k in spec) else {"$eq": spec}
    if set(old_ops) & set(new_ops):
        raise ValueError(f"filter names {field!r} twice with the same operator")
    out[field] = {**old_ops, **new_ops}
