"""Portable JSONL export and import: one object per turn, readable without ctxmem-plugin.

Each line: ``{"namespace": [...], "role", "speaker", "content", "timestamp", "created_at",
"updated_at", "metadata", "key"}`` and, with vectors, ``"encoder"`` and ``"vector"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin import safejson
from ctxmem_plugin.encoders import TextEncoder
from ctxmem_plugin.errors import FormatError, InputError, NamespaceError
from ctxmem_plugin.formats.document import build_turn, json_problem
from ctxmem_plugin.records import NewTurn, StoredTurn, Turn


class PortableMemory(Protocol):
    """What export and import need of a memory (a :class:`~ctxmem_plugin.memory.ContextMemory`)."""

    encoder: TextEncoder

    @property
    def dim(self) -> int: ...

    def stats(self) -> dict[str, Any]: ...

    def iter_turns(self, namespace: Sequence[str] = (), *, batch: int = 1000) -> Iterator[list[StoredTurn]]: ...

    def vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]: ...

    def write(self, entries: Sequence[NewTurn], *, dedupe: bool = True) -> list[int]: ...


_FLOAT32_MAX = 3.4e38  # beyond it (and NaN, which compares False) a vector would hold infinities


@dataclass(frozen=True)
class ExportedTurn:
    """One line of an export, validated: the turn, where it belongs, and its vector if it has one."""

    namespace: ns.Namespace
    turn: Turn
    vector: list[float] | None
    encoder: str | None


def export_jsonl(memory: PortableMemory, out: Path, prefix: ns.Namespace = (), *, with_vectors: bool = False) -> int:
    """Write every turn under ``prefix`` to ``out`` (atomically; its folder is created); returns the count."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    count = 0
    encoder = memory.stats()["encoder"] if with_vectors else None
    try:
        # Owner-only, as the memory's own files: an export holds the same conversations.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
            for batch in memory.iter_turns(prefix):
                vectors = memory.vectors([t.id for t in batch]) if with_vectors else {}
                for turn in batch:
                    record: dict[str, Any] = {
                        "namespace": list(turn.namespace), "role": turn.role, "speaker": turn.speaker,
                        "content": turn.content, "timestamp": turn.timestamp, "created_at": turn.created_at,
                        "updated_at": turn.updated_at, "metadata": turn.metadata, "key": turn.key,
                    }
                    if with_vectors:
                        record["encoder"] = encoder
                        record["vector"] = vectors[turn.id].tolist()
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                    count += 1
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def read_export(src: Path) -> list[ExportedTurn]:
    """Read and validate a whole export; raises :class:`FormatError` naming ``file:line``."""
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror}", str(src)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FormatError(f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); expected UTF-8 JSONL", f"{src}:{line}") from None
    records: list[ExportedTurn] = []
    for line_no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{src}:{line_no}"
        try:
            obj = safejson.loads(line)
        except json.JSONDecodeError as exc:
            raise FormatError(f"invalid JSON ({json_problem(exc)}); expected one exported turn per line", where) from None
        if not isinstance(obj, dict) or "namespace" not in obj or "content" not in obj:
            raise FormatError("expected an object with 'namespace' and 'content'", where)
        if not isinstance(obj["namespace"], list):
            raise FormatError("'namespace' must be an array of labels", where)
        try:
            space = ns.validate(obj["namespace"])
        except NamespaceError as exc:
            raise FormatError(exc.message, where) from None
        fields = {k: obj.get(k) for k in ("role", "speaker", "content", "timestamp", "key") if obj.get(k) is not None}
        turn = build_turn(where, **fields, metadata=obj.get("metadata") or {})
        vec = obj.get("vector")
        if vec is not None and not (
            isinstance(vec, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) < _FLOAT32_MAX for x in vec)
        ):
            raise FormatError("vector: expected an array of finite 32-bit numbers", where)
        encoder = obj.get("encoder")
        records.append(ExportedTurn(space, turn, vec, encoder if isinstance(encoder, str) else None))
    return records


def import_records(memory: PortableMemory, records: list[ExportedTurn]) -> tuple[int, int]:
    """Add exported turns to ``memory`` in one transaction; ``(added, duplicates)``.

    Vectors are reused when they were made by the memory's encoder; otherwise the text is
    embedded again. Importing the same file again adds nothing, while identical turns said twice
    stay two turns.
    """
    name, dim = memory.encoder.name, memory.dim
    occurrences: dict[tuple[ns.Namespace, str], int] = {}
    entries: list[NewTurn] = []
    for rec in records:
        first = rec.turn.content_hash("import")
        seen = occurrences[rec.namespace, first] = occurrences.get((rec.namespace, first), -1) + 1
        usable = rec.vector is not None and rec.encoder == name and len(rec.vector) == dim
        vector = np.asarray(rec.vector, dtype=np.float32) if usable else None
        entries.append(NewTurn(rec.namespace, rec.turn, "import" if seen == 0 else f"import#{seen}", vector))
    ids = memory.write(entries)
    added = sum(1 for i in ids if i >= 0)
    return added, len(ids) - added


def import_jsonl(memory: PortableMemory, src: Path) -> tuple[int, int]:
    """Read an export whole, then add it (:func:`import_records`); ``(added, duplicates)``."""
    return import_records(memory, read_export(src))
