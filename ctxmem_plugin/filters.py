"""Metadata filters, compiled to SQL so that they restrict candidates before ranking.

A filter is a dict ``{field: value}`` (equality) or ``{field: {"$op": value, ...}}`` with ops
``$eq $ne $gt $gte $lt $lte $in``; several fields and ops are ANDed. ``role``, ``speaker``,
``timestamp``, ``created_at`` and ``updated_at`` name columns; any other field is a key of the
turn's metadata (dotted for nested keys: ``"place.city"``). A missing field equals nothing and
is unequal to everything (as in Python: ``None != value``). Values are JSON values that SQLite
compares as given: integers within 64 bits, finite numbers, valid Unicode text, nested at most
:data:`~ctxmem_plugin.safejson.MAX_DEPTH` levels; anything else is an :class:`InputError`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ctxmem_plugin import safejson
from ctxmem_plugin.errors import InputError

Filters = dict[str, Any]

COLUMNS = frozenset({"role", "speaker", "timestamp", "created_at", "updated_at"})
OPERATORS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
MAX_CONDITIONS = 64
"""Conditions one filter may hold (SQLite bounds the depth of an expression)."""

MAX_VALUES = 512
"""Values one filter may compare with, ``$in`` lists included (SQLite bounds the parameters)."""

_FIELD = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


def _expression(field: Any) -> tuple[str, str | None]:
    """The SQL expression of a field, and its JSON path in the metadata (``None`` for a column)."""
    if not isinstance(field, str):
        raise InputError(f"filter field {safejson.show(field)} must be a string, got {type(field).__name__}")
    if field in COLUMNS:
        return f"t.{field}", None
    if not _FIELD.fullmatch(field):
        raise InputError(f"filter field {field!r} must be letters, digits, '_', '-', dotted for nesting")
    path = "$" + "".join(f'."{part}"' for part in field.split("."))
    return f"json_extract(t.metadata, '{path}')", path


def _scalar(value: Any, field: str) -> Any:
    if isinstance(value, bool):
        return int(value)  # json_extract returns JSON true/false as 1/0
    if isinstance(value, int) and not safejson.INT64[0] <= value <= safejson.INT64[1]:
        raise InputError(f"filter on {field!r}: {safejson.show(value)} is outside the 64-bit integer range")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"filter on {field!r}: {value!r} is not a number a turn can hold")
    if isinstance(value, str) and not safejson.is_unicode(value):
        raise InputError(f"filter on {field!r}: the value is not valid Unicode text (a lone surrogate)")
    if value is None or isinstance(value, (int, float, str)):
        return value
    if isinstance(value, (dict, list)):
        found = safejson.problem(value)
        if found is not None:
            raise InputError(f"filter on {field!r}: the value is not JSON a turn can hold: {found}")
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    raise InputError(f"filter on {field!r}: unsupported value type {type(value).__name__}")


def _condition(expr: str, path: str | None, op: str, value: Any, field: str, params: list[Any]) -> str:
    if op == "$in":
        if not isinstance(value, (list, tuple)) or not value:
            raise InputError(f"filter on {field!r}: $in takes a non-empty list")
        params.extend(_scalar(v, field) for v in value)
        return f"{expr} IN ({', '.join('?' * len(value))})"
    if op not in OPERATORS:
        raise InputError(f"filter on {field!r}: unknown operator {op!r}; expected one of {', '.join([*OPERATORS, '$in'])}")
    if value is None:
        return f"{expr} IS NULL" if op == "$eq" else f"{expr} IS NOT NULL" if op == "$ne" else "0"
    lhs = expr
    if isinstance(value, (dict, list)):
        if path is None:
            raise InputError(f"filter on {field!r}: the column holds text or numbers, not a list or an object")
        if op not in ("$eq", "$ne"):
            raise InputError(f"filter on {field!r}: {op} compares numbers or text, not a list or an object")
        # The stored value as normalised JSON when it is a list or an object too, else NULL.
        lhs = f"(CASE WHEN json_type(t.metadata, '{path}') IN ('object', 'array') THEN json({expr}) END)"
    params.append(_scalar(value, field))
    if op == "$ne":
        return f"({lhs} IS NULL OR {lhs} != ?)"
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
        expr, path = _expression(field)
        if isinstance(spec, dict) and spec and all(isinstance(k, str) and k.startswith("$") for k in spec):
            for op, value in spec.items():
                parts.append(_condition(expr, path, op, value, field, params))
        else:
            parts.append(_condition(expr, path, "$eq", spec, field, params))
        if len(parts) > MAX_CONDITIONS or len(params) > MAX_VALUES:
            raise InputError(f"filters may hold at most {MAX_CONDITIONS} conditions and {MAX_VALUES} values")
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
