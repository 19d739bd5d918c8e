"""The JSON forms of records and errors, as a memory server and its client exchange them.

Both sides use these functions, so a record that goes over the wire comes back equal: namespaces
travel as lists of labels and come back as tuples, vectors as lists of floats (float32 values
are exact as JSON numbers), and an error as ``{"error": {"type", "message", "source"}}`` that
the client raises again as the same exception class of :mod:`ctxmem_plugin.errors`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ctxmem_plugin import errors
from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.errors import CtxMemError, InputError
from ctxmem_plugin.records import Hit, IngestReport, NewTurn, StoredTurn, Turn, to_turn

API_PREFIX = "/v1"
"""Every memory call is under this path; ``/health`` is outside it."""

# The most specific class first: an error takes the status of the first class it is an instance of.
STATUS: tuple[tuple[type[CtxMemError], int], ...] = (
    (errors.AuthError, 401),
    (errors.MemoryNotFoundError, 404),
    (errors.ModelMismatchError, 409),
    (InputError, 400),
    (errors.MemoryLockedError, 503),
    (errors.DependencyError, 501),
)


def dumps(payload: Any) -> bytes:
    """Standard JSON (no NaN), compact, UTF-8; numpy numbers and arrays as JSON numbers and lists."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_plain).encode("utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


# -- records ----------------------------------------------------------------------------------


def turn_to_json(turn: Turn) -> dict[str, Any]:
    return turn.model_dump(mode="json")


def stored_to_json(turn: StoredTurn) -> dict[str, Any]:
    return {**dataclasses.asdict(turn), "namespace": list(turn.namespace)}


def stored_from_json(data: Mapping[str, Any]) -> StoredTurn:
    return StoredTurn(**{**data, "namespace": tuple(data["namespace"])})


def hit_to_json(hit: Hit) -> dict[str, Any]:
    return {**dataclasses.asdict(hit), "namespace": list(hit.namespace)}


def hit_from_json(data: Mapping[str, Any]) -> Hit:
    return Hit(**{**data, "namespace": tuple(data["namespace"])})


def entry_to_json(entry: NewTurn) -> dict[str, Any]:
    return {
        "namespace": list(entry.namespace) if isinstance(entry.namespace, (tuple, list)) else entry.namespace,
        "turn": turn_to_json(entry.turn),
        "position": entry.position,
        "vector": None if entry.vector is None else vector_to_json(entry.vector, "entry vector"),
    }


def entry_from_json(data: Mapping[str, Any], where: str) -> NewTurn:
    vector, space = data.get("vector"), data["namespace"]
    return NewTurn(
        namespace=ns.validate(space),
        turn=to_turn(data["turn"], where),
        position=data.get("position"),
        vector=None if vector is None else np.asarray(vector, dtype=np.float32),
    )


def report_to_json(report: IngestReport) -> dict[str, Any]:
    return dataclasses.asdict(report)


def vector_to_json(vector: Sequence[float] | np.ndarray, what: str = "the query vector") -> list[float]:
    """A vector as JSON numbers; JSON has no NaN, so a vector holding one is refused here."""
    array = np.asarray(vector, dtype=np.float32).reshape(-1)  # (d,)
    if not np.isfinite(array).all():
        raise InputError(f"{what} holds NaN or infinite values")
    return array.tolist()


def vectors_from_json(rows: Sequence[Sequence[float]], dim: int) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), dim)  # (n, d)


# -- errors -----------------------------------------------------------------------------------


def status_of(exc: CtxMemError) -> int:
    """The HTTP status of a library error: 4xx for what the caller can fix, 5xx otherwise."""
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_to_json(exc: CtxMemError) -> dict[str, Any]:
    message = exc.message if isinstance(exc, InputError) else str(exc)
    return {
        "error": {
            "type": type(exc).__name__,
            "message": one_line(message),
            "source": exc.source if isinstance(exc, InputError) else "",
        }
    }


def one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"


def error_from_json(status: int, body: bytes, where: str) -> CtxMemError:
    """The exception an error answer stands for: the same class as on the server when it is one of ours.

    Args:
        status: the HTTP status.
        body: the answer's body (JSON ``{"error": ...}`` from a ctxmem server; anything from others).
        where: the URL asked, for errors that did not come from a ctxmem server.
    """
    try:
        error = json.loads(body)["error"]
        name, message, source = str(error["type"]), str(error["message"]), str(error.get("source") or "")
    except (ValueError, KeyError, TypeError):
        return errors.ServerError(f"{where}: HTTP {status} without a ctxmem error body (is this a ctxmem server?)")
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, CtxMemError)):
        cls = errors.AuthError if status in (401, 403) else InputError if 400 <= status < 500 else errors.ServerError
    if issubclass(cls, InputError):
        return cls(message, source)
    return cls(message)
