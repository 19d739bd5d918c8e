"""Metadata filters: parsed and checked once here, compiled to each backend's SQL in its store.

A filter is a dict ``{field: value}`` (equality) or ``{field: {"$op": value, ...}}`` with ops
``$eq $ne $gt $gte $lt $lte $in``; several fields and ops are ANDed. ``role``, ``speaker``,
``timestamp``, ``created_at`` and ``updated_at`` name columns; any other field is a key of the
turn's metadata (dotted for nested keys: ``"place.city"``). A missing field equals nothing and
is unequal to everything (as in Python: ``None != value``). :func:`matches` is the reference
both backends are tested against; the embedded store's SQL is :func:`compile_filters`, the
PostgreSQL store's is :mod:`ctxmem_plugin.storage.postgres_filters`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ctxmem_plugin.errors import InputError

Filters = dict[str, Any]

COLUMNS = frozenset({"role", "speaker", "timestamp", "created_at", "updated_at"})
OPERATORS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_FIELD = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


@dataclass(frozen=True)
class Condition:
    """One checked condition: ``field`` (a column or a dotted metadata path), ``op`` and ``value``."""

    field: str
    op: str
    value: Any

    @property
    def column(self) -> bool:
        return self.field in COLUMNS

    @property
    def path(self) -> list[str]:
        """The metadata keys from the root to the field."""
        return self.field.split(".")


def _check_value(value: Any, field: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str, dict, list)):
        return
    raise InputError(f"filter on {field!r}: unsupported value type {type(value).__name__}")


def parse_filters(filters: Filters | None) -> list[Condition]:
    """The conditions of a filter dict, checked (field names, operators, value types)."""
    if not filters:
        return []
    if not isinstance(filters, dict):
        raise InputError(f"filters must be a dict, got {type(filters).__name__}")
    out: list[Condition] = []
    for field, spec in filters.items():
        if field not in COLUMNS and not (isinstance(field, str) and _FIELD.match(field)):
            raise InputError(f"filter field {field!r} must be letters, digits, '_', '-', dotted for nesting")
        ops = spec if isinstance(spec, dict) and spec and all(isinstance(k, str) and k.startswith("$") for k in spec) else {"$eq": spec}
        for op, value in ops.items():
            if op == "$in":
                if not isinstance(value, (list, tuple)) or not value:
                    raise InputError(f"filter on {field!r}: $in takes a non-empty list")
                for v in value:
                    _check_value(v, field)
                value = list(value)
            elif op not in OPERATORS:
                raise InputError(f"filter on {field!r}: unknown operator {op!r}; expected one of {', '.join([*OPERATORS, '$in'])}")
            else:
                _check_value(value, field)
            out.append(Condition(field, op, value))
    return out


# -- the embedded store's SQL (SQLite) ----------------------------------------------------------


def _expression(cond: Condition) -> str:
    if cond.column:
        return f"t.{cond.field}"
    path = "$" + "".join(f'."{part}"' for part in cond.path)
    return f"json_extract(t.metadata, '{path}')"


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)  # json_extract returns JSON true/false as 1/0
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value


def _condition(cond: Condition, params: list[Any]) -> str:
    expr, op, value = _expression(cond), cond.op, cond.value
    if op == "$in":
        params.extend(_scalar(v) for v in value)
        return f"{expr} IN ({', '.join('?' * len(value))})"
    if value is None:
        return f"{expr} IS NULL" if op == "$eq" else f"{expr} IS NOT NULL" if op == "$ne" else "0"
    lhs = f"json({expr})" if isinstance(value, (dict, list)) else expr
    params.append(_scalar(value))
    if op == "$ne":
        return f"({expr} IS NULL OR {lhs} != ?)"
    return f"{lhs} {OPERATORS[op]} ?"


def compile_filters(filters: Filters | None) -> tuple[str, list[Any]]:
    """SQLite condition over a ``turns`` row aliased ``t``, and its parameters (``"1"`` if empty)."""
    conditions = parse_filters(filters)
    if not conditions:
        return "1", []
    params: list[Any] = []
    return " AND ".join(_condition(c, params) for c in conditions), params


def matches(filters: Filters | None, row: dict[str, Any]) -> bool:
    """Python reference semantics of the filters over a flat row (used in tests)."""
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
