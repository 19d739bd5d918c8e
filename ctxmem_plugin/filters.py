"""Metadata filters: parsed and checked once here, compiled to each backend's SQL in its store.

A filter is a dict ``{field: value}`` (equality) or ``{field: {"$op": value, ...}}`` with ops
``$eq $ne $gt $gte $lt $lte $in``; several fields and ops are ANDed. ``role``, ``speaker``,
``timestamp``, ``created_at`` and ``updated_at`` name columns; any other field is a key of the
turn's metadata (dotted for nested keys: ``"place.city"``). A missing field equals nothing and
is unequal to everything (as in Python: ``None != value``). Values are JSON values that SQLite
compares as given: integers within 64 bits, finite numbers, valid Unicode text, nested at most
:data:`~ctxmem_plugin.safejson.MAX_DEPTH` levels; anything else is an :class:`InputError`.
:func:`matches` is the reference both backends are tested against; the embedded store's SQL is
:func:`compile_filters`, the PostgreSQL store's is :mod:`ctxmem_plugin.storage.postgres_filters`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
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


def _check_value(value: Any, field: str, op: str) -> None:
    """``value`` is one a turn can hold and ``op`` can compare on ``field``, else :class:`InputError`."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if not safejson.INT64[0] <= value <= safejson.INT64[1]:
            raise InputError(f"filter on {field!r}: {safejson.show(value)} is outside the 64-bit integer range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"filter on {field!r}: {value!r} is not a number a turn can hold")
    elif isinstance(value, str):
        if not safejson.is_unicode(value):
            raise InputError(f"filter on {field!r}: the value is not valid Unicode text (a lone surrogate)")
    elif isinstance(value, (dict, list)):
        if field in COLUMNS:
            raise InputError(f"filter on {field!r}: the column holds text or numbers, not a list or an object")
        if op not in ("$eq", "$ne", "$in"):
            raise InputError(f"filter on {field!r}: {op} compares numbers or text, not a list or an object")
        found = safejson.problem(value)
        if found is not None:
            raise InputError(f"filter on {field!r}: the value is not JSON a turn can hold: {found}")
    else:
        raise InputError(f"filter on {field!r}: unsupported value type {type(value).__name__}")


def parse_filters(filters: Filters | None) -> list[Condition]:
    """The conditions of a filter dict, checked (field names, operators, values, size)."""
    if not filters:
        return []
    if not isinstance(filters, dict):
        raise InputError(f"filters must be a dict, got {type(filters).__name__}")
    out: list[Condition] = []
    values = 0
    for field, spec in filters.items():
        if not isinstance(field, str):
            raise InputError(f"filter field {safejson.show(field)} must be a string, got {type(field).__name__}")
        if field not in COLUMNS and not _FIELD.fullmatch(field):
            raise InputError(f"filter field {field!r} must be letters, digits, '_', '-', dotted for nesting")
        ops = spec if isinstance(spec, dict) and spec and all(isinstance(k, str) and k.startswith("$") for k in spec) else {"$eq": spec}
        for op, value in ops.items():
            if op == "$in":
                if not isinstance(value, (list, tuple)) or not value:
                    raise InputError(f"filter on {field!r}: $in takes a non-empty list")
                for v in value:
                    _check_value(v, field, op)
                value = list(value)
                values += len(value)
            elif op not in OPERATORS:
                raise InputError(f"filter on {field!r}: unknown operator {op!r}; expected one of {', '.join([*OPERATORS, '$in'])}")
            else:
                _check_value(value, field, op)
                values += 1
            out.append(Condition(field, op, value))
            if len(out) > MAX_CONDITIONS or values > MAX_VALUES:
                raise InputError(f"filters may hold at most {MAX_CONDITIONS} conditions and {MAX_VALUES} values")
    return out


# -- the embedded store's SQL (SQLite) ----------------------------------------------------------


def _json_path(cond: Condition) -> str:
    return "$" + "".join(f'."{part}"' for part in cond.path)


def _expression(cond: Condition) -> str:
    if cond.column:
        return f"t.{cond.field}"
    return f"json_extract(t.metadata, '{_json_path(cond)}')"


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
    lhs = expr
    if isinstance(value, (dict, list)):
        # The stored value as normalised JSON when it is a list or an object too, else NULL.
        lhs = f"(CASE WHEN json_type(t.metadata, '{_json_path(cond)}') IN ('object', 'array') THEN json({expr}) END)"
    params.append(_scalar(value))
    if op == "$ne":
        return f"({lhs} IS NULL OR {lhs} != ?)"
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
