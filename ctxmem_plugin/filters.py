"""Metadata filters, compiled to SQL so that they restrict candidates before ranking.

A filter is a dict ``{field: value}`` (equality) or ``{field: {"$op": value, ...}}`` with ops
``$eq $ne $gt $gte $lt $lte $in``; several fields and ops are ANDed. ``role``, ``speaker``,
``timestamp``, ``created_at`` and ``updated_at`` name columns; any other field is a key of the
turn's metadata (dotted for nested keys: ``"place.city"``). A missing field equals nothing and
is unequal to everything (as in Python: ``None != value``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ctxmem_plugin.errors import InputError

Filters = dict[str, Any]

COLUMNS = frozenset({"role", "speaker", "timestamp", "created_at", "updated_at"})
OPERATORS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_FIELD = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


def _expression(field: str) -> str:
    if field in COLUMNS:
        return f"t.{field}"
    if not _FIELD.match(field):
        raise InputError(f"filter field {field!r} must be letters, digits, '_', '-', dotted for nesting")
    path = "$" + "".join(f'."{part}"' for part in field.split("."))
    return f"json_extract(t.metadata, '{path}')"


def _scalar(value: Any, field: str) -> Any:
    if isinstance(value, bool):
        return int(value)  # json_extract returns JSON true/false as 1/0
    if value is None or isinstance(value, (int, float, str)):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    raise InputError(f"filter on {field!r}: unsupported value type {type(value).__name__}")


def _condition(expr: str, op: str, value: Any, field: str, params: list[Any]) -> str:
    if op == "$in":
        if not isinstance(value, (list, tuple)) or not value:
            raise InputError(f"filter on {field!r}: $in takes a non-empty list")
        params.extend(_scalar(v, field) for v in value)
        return f"{expr} IN ({', '.join('?' * len(value))})"
    if op not in OPERATORS:
        raise InputError(f"filter on {field!r}: unknown operator {op!r}; expected one of {', '.join([*OPERATORS, '$in'])}")
    if value is None:
        return f"{expr} IS NULL" if op == "$eq" else f"{expr} IS NOT NULL" if op == "$ne" else "0"
    lhs = f"json({expr})" if isinstance(value, (dict, list)) else expr
    params.append(_scalar(value, field))
    if op == "$ne":
        return f"({expr} IS NULL OR {lhs} != ?)"
    return f"{lhs} {OPERATORS[op]} ?"


def compile_filters(filters: Filters | None) -> tuple[str, list[Any]]:
    """SQL condition over a ``turns`` row aliased ``t``, and its parameters (``"1"`` if empty)."""
    if not filters:
        return "1", []
    if not isinstance(filters, dict):
        raise InputError(f"filters must be a dict, got {type(filters).__name__}")
    parts: list[str] = []
    params: list[Any] = []
    for field, spec in filters.items():
        expr = _expression(field)
        if isinstance(spec, dict) and spec and all(isinstance(k, str) and k.startswith("$") for k in spec):
            for op, value in spec.items():
                parts.append(_condition(expr, op, value, field, params))
        else:
            parts.append(_condition(expr, "$eq", spec, field, params))
    return " AND ".join(parts), params


def matches(filters: Filters | None, row: dict[str, Any]) -> bool:
    """Python reference semantics of :func:`compile_filters` over a flat row (used in tests)."""
    for field, spec in (filters or {}).items():
        value: Any = row
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        conds = spec if isinstance(spec, dict) and spec and all(str(k).startswith("$") for k in spec) else {"$eq": spec}
        for op, want in conds.items():
            if op == "$in":
                ok = value in want
            elif op == "$eq":
                ok = value == want
            elif op == "$ne":
                ok = value != want
            elif value is None or want is None:
                ok = False
            else:
                ok = {"$gt": value > want, "$gte": value >= want, "$lt": value < want, "$lte": value <= want}[op]
            if not ok:
                return False
    return True
