"""Portable JSONL export and import: one object per turn, readable without ctxmem-plugin.

Each line: ``{"namespace": [...], "role", "speaker", "content", "timestamp", "created_at",
"updated_at", "metadata", "key"}`` and, with vectors, ``"encoder"`` and ``"vector"``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.errors import FormatError, NamespaceError
from ctxmem_plugin.formats.document import build_turn
from ctxmem_plugin.records import Turn
from ctxmem_plugin.storage.sqlite import LongTermStore


def export_jsonl(memory_dir: Path, out: Path, prefix: ns.Namespace = (), *, with_vectors: bool = False) -> int:
    """Write every turn under ``prefix`` to ``out`` (atomically); returns the count."""
    if not (memory_dir / "memory.sqlite3").is_file():
        from ctxmem_plugin.errors import MemoryNotFoundError

        raise MemoryNotFoundError(f"no memory at {memory_dir}")
    store = LongTermStore(memory_dir, read_only=True)
    tmp = out.with_name(out.name + ".tmp")
    count = 0
    try:
        encoder = store.get_meta("encoder")
        dim = int(store.get_meta("dim") or 0)
        with tmp.open("w", encoding="utf-8") as fh:
            for turn in store.select(prefix):
                record: dict[str, Any] = {
                    "namespace": list(turn.namespace), "role": turn.role, "speaker": turn.speaker,
                    "content": turn.content, "timestamp": turn.timestamp, "created_at": turn.created_at,
                    "updated_at": turn.updated_at, "metadata": turn.metadata, "key": turn.key,
                }
                if with_vectors:
                    record["encoder"] = encoder
                    record["vector"] = store.vectors([turn.id], dim)[0].tolist()
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, out)
    finally:
        store.close()
        tmp.unlink(missing_ok=True)
    return count


def import_jsonl(memory: Any, src: Path) -> tuple[int, int]:
    """Add every turn of an export to ``memory`` in one transaction; ``(added, duplicates)``.

    Vectors in the file are reused when they were made by the memory's encoder; otherwise the
    text is embedded again. Re-importing the same file adds nothing.
    """
    records: list[tuple[ns.Namespace, Turn, np.ndarray | None]] = []
    data = src.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FormatError(f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); expected UTF-8 JSONL", f"{src}:{line}") from None
    for line_no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{src}:{line_no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FormatError(f"invalid JSON ({exc.msg}); expected one exported turn per line", where) from None
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
        if vec is not None and not (isinstance(vec, list) and all(isinstance(x, (int, float)) for x in vec)):
            raise FormatError("vector: expected an array of numbers", where)
        usable = vec is not None and obj.get("encoder") == memory.encoder.name and len(vec) == memory.encoder.dim
        records.append((space, turn, np.asarray(vec, dtype=np.float32) if usable else None))
    # Identical turns said twice stay two turns; the same file imported again adds nothing.
    occurrences: dict[tuple[ns.Namespace, str], int] = {}
    runs: list[tuple[ns.Namespace, list[tuple[Turn, str, np.ndarray | None]]]] = []
    for space, turn, vec in records:
        first = turn.content_hash("import")
        seen = occurrences[space, first] = occurrences.get((space, first), -1) + 1
        digest = first if seen == 0 else turn.content_hash(f"import#{seen}")
        if not runs or runs[-1][0] != space:
            runs.append((space, []))
        runs[-1][1].append((turn, digest, vec))
    ids = memory._write(runs, dedupe=True)
    added = sum(1 for i in ids if i >= 0)
    return added, len(ids) - added
