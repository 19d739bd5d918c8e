"""Metadata filters as PostgreSQL SQL over ``jsonb`` (the semantics of :mod:`ctxmem_plugin.filters`).

Every value travels as a bound parameter (``%s``), never in the SQL text. A metadata field is
``t.metadata #> path`` (``jsonb``, SQL NULL when missing). Equality is ``jsonb`` equality
(numbers by value, objects regardless of key order, as Python's ``==``); ``true``/``false``
also equal ``1``/``0``, as they do in Python and in the embedded store. An ordering
(``$gt``...) holds only between values of the same JSON type (numbers, strings in code-point
order): where the embedded store's SQLite ranks any text above any number, PostgreSQL says
no match, as Python's reference raises. Ordering objects or arrays is refused.
"""

from __future__ import annotations

import json
from typing import Any

from ctxmem_plugin.errors import InputError
from ctxmem_plugin.filters import OPERATORS, Condition, Filters, parse_filters

TEXT_COLUMNS = frozenset({"role", "speaker", "timestamp"})
NUMBER_COLUMNS = frozenset({"created_at", "updated_at"})


def _jsonb(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _meta_equal(cond: Condition, value: Any, params: list[Any]) -> str:
    """``metadata #> path`` equals ``value`` (``None``: missing or JSON null)."""
    params.append(cond.path)
    expr = "(t.metadata #> %s::text[])"
    if value is None:
        params.append(cond.path)
        return f"({expr} IS NULL OR (t.metadata #> %s::text[]) = 'null'::jsonb)"
    alternatives = [value]
    if isinstance(value, bool) or (_number(value) and value in (0, 1)):
        alternatives = [bool(value), int(value)]  # Python: True == 1, False == 0
    if len(alternatives) == 1:
        params.append(_jsonb(value))
        return f"{expr} = %s::jsonb"
    params.append([_jsonb(v) for v in alternatives])
    return f"{expr} = ANY(%s::jsonb[])"


def _meta_order(cond: Condition, params: list[Any]) -> str:
    value, sign = cond.value, OPERATORS[cond.op]
    if value is None:
        return "FALSE"
    if isinstance(value, (dict, list)):
        raise InputError(f"filter on {cond.field!r}: {cond.op} compares numbers or strings, not a JSON object or array")
    if isinstance(value, str):
        params += [cond.path, cond.path, value]
        return ("(CASE WHEN jsonb_typeof(t.metadata #> %s::text[]) = 'string'"
                f" THEN ((t.metadata #>> %s::text[]) COLLATE \"C\") {sign} %s ELSE FALSE END)")
    params += [cond.path, cond.path, _jsonb(float(value) if isinstance(value, bool) else value)]
    return ("(CASE WHEN jsonb_typeof(t.metadata #> %s::text[]) = 'number'"
            f" THEN (t.metadata #> %s::text[])::numeric {sign} %s::numeric ELSE FALSE END)")


def _column(cond: Condition, params: list[Any]) -> str:
    col, op, value = f"t.{cond.field}", cond.op, cond.value
    fits = isinstance(value, str) if cond.field in TEXT_COLUMNS else _number(value)

    def equal(v: Any) -> str:
        if v is None:
            return f"{col} IS NULL"
        if not (isinstance(v, str) if cond.field in TEXT_COLUMNS else _number(v)):
            return "FALSE"  # a text column never equals a number, and the reverse
        params.append(v)
        return f"{col} = %s"

    if op == "$in":
        return "(" + " OR ".join(equal(v) for v in value) + ")"
    if op == "$eq":
        return equal(value)
    if op == "$ne":
        if value is None:
            return f"{col} IS NOT NULL"
        return f"({col} IS NULL OR NOT {equal(value)})"
    if value is None or not fits:
        return "FALSE"
    params.append(value)
    collate = ' COLLATE "C"' if cond.field in TEXT_COLUMNS else ""
    return f"({col}{collate} {OPERATORS[op]} %s)"


def _condition(cond: Condition, params: list[Any]) -> str:
    if cond.column:
        return _column(cond, params)
    if cond.op == "$in":
        return "(" + " OR ".join(_meta_equal(cond, v, params) for v in cond.value) + ")"
    if cond.op == "$eq":
        return _meta_equal(cond, cond.value, params)
    if cond.op == "$ne":
        if cond.value is None:
            params += [cond.path, cond.path]
            return "((t.metadata #> %s::text[]) IS NOT NULL AND (t.metadata #> %s::text[]) <> 'null'::jsonb)"
        params.append(cond.path)
        missing = "(t.metadata #> %s::text[]) IS NULL"
        return f"({missing} OR NOT {_meta_equal(cond, cond.value, params)})"
    return _meta_order(cond, params)


def compile_pg_filters(filters: Filters | None) -> tuple[str, list[Any]]:
    """PostgreSQL condition over a ``turns`` row aliased ``t``, and its parameters (``"TRUE"`` if empty)."""
    conditions = parse_filters(filters)
    if not conditions:
        return "TRUE", []
    params: list[Any] = []
    return " AND ".join(_condition(c, params) for c in conditions), params
