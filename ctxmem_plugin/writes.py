"""The one write path: entries -> duplicates skipped -> one batched encode -> one transaction.

Every write of a memory goes through :func:`write_entries` (``ContextMemory.write``, and so
``add``, ``ingest``, import, evaluation and training), so every write deduplicates, encodes and
commits the same way, and a re-ranker's slot states are updated in the same transaction as
the rows they summarise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.encoders import TextEncoder
from ctxmem_plugin.errors import InputError
from ctxmem_plugin.records import NewTurn, Turn
from ctxmem_plugin.retrieval.text import embed_text, index_text
from ctxmem_plugin.storage.base import MemoryStore, NewRow

ENCODE_CHUNK = 256
"""Turns encoded per step when a write reports progress."""

Progress = Callable[[int], None]
"""Called with a count of turns as they are done."""

OnRows = Callable[[list[tuple[ns.Namespace, np.ndarray, np.ndarray]]], None]
"""Told ``[(namespace, new ids, their vectors (n, d))]``, one per namespace written, inside the transaction."""


def write_entries(
    store: MemoryStore,
    encoder: TextEncoder,
    dim: int,
    entries: Sequence[NewTurn],
    *,
    dedupe: bool = True,
    progress: Progress | None = None,
    on_rows: OnRows | None = None,
    before_encoding: Callable[[], None] | None = None,
) -> list[int]:
    """Store many turns at once; returns an id per entry, in order (``-1``: skipped as present).

    Args:
        store: where the rows go.
        encoder: embeds the turns that bring no vector.
        dim: the memory's vector width (a given vector must have it).
        entries: the turns with their namespaces (and optionally positions and vectors).
        dedupe: skip a turn whose content and position are already stored in its namespace (or
            earlier in ``entries``).
        progress: called as turns are encoded (``ENCODE_CHUNK`` at a time) or found present.
        on_rows: told of the rows inserted, grouped by namespace, inside the transaction (slot
            updates, batched across the namespaces).
        before_encoding: called once when something is to be written, before any encoding (a
            check that the encoder is the memory's).
    """
    spaces = [ns.validate(e.namespace) for e in entries]
    hashes = [e.content_hash for e in entries]
    keep = [True] * len(entries)
    if dedupe:
        groups: dict[ns.Namespace, list[int]] = {}
        for j, space in enumerate(spaces):
            groups.setdefault(space, []).append(j)
        for space, mine in groups.items():
            seen = store.existing_hashes(space, [hashes[j] for j in mine])
            for j in mine:
                keep[j] = hashes[j] not in seen
                seen.add(hashes[j])
    todo = [j for j in range(len(entries)) if keep[j]]
    if progress is not None and len(todo) < len(entries):
        progress(len(entries) - len(todo))
    out = [-1] * len(entries)
    if not todo:  # nothing new: no transaction, no new generation
        return out
    if before_encoding is not None:
        before_encoding()
    vectors = _vectors_of(encoder, dim, entries, todo, progress)
    rows = {j: (spaces[j], NewRow(entries[j].turn, index_text(entries[j].turn), hashes[j], vectors[j])) for j in todo}
    with store.transaction():
        namespaces = list(dict.fromkeys(spaces[j] for j in todo))
        shared = store.lock_namespaces(namespaces)
        if dedupe and shared:  # another process may have stored some since the check above
            todo = _still_new(store, todo, spaces, hashes)
        ids, _ = store.insert_many([rows[j] for j in todo])  # one batch whatever the namespaces; ids follow the input
        for j, turn_id in zip(todo, ids):
            out[j] = turn_id
        if on_rows is not None and todo:
            groups: dict[ns.Namespace, list[int]] = {}
            for j in todo:
                groups.setdefault(spaces[j], []).append(j)
            on_rows([(space, np.asarray([out[j] for j in mine], dtype=np.int64), np.stack([vectors[j] for j in mine]))
                     for space, mine in groups.items()])
    return out


def _still_new(store: MemoryStore, todo: list[int], spaces: Sequence[ns.Namespace], hashes: Sequence[str]) -> list[int]:
    """``todo`` without the turns found stored now, under the write's namespace locks."""
    groups: dict[ns.Namespace, list[int]] = {}
    for j in todo:
        groups.setdefault(spaces[j], []).append(j)
    present: set[int] = set()
    for space, mine in groups.items():
        stored = store.existing_hashes(space, [hashes[j] for j in mine])
        present.update(j for j in mine if hashes[j] in stored)
    return [j for j in todo if j not in present]


def _vectors_of(
    encoder: TextEncoder, dim: int, entries: Sequence[NewTurn], todo: Sequence[int], progress: Progress | None
) -> dict[int, np.ndarray]:
    """Each listed entry's vector: the one it brings if its width fits, else encoded (batched)."""
    out: dict[int, np.ndarray] = {}
    missing: list[int] = []
    for j in todo:
        vector = entries[j].vector
        if vector is not None:
            v = np.asarray(vector, dtype=np.float32).reshape(-1)
            if v.shape[0] != dim:
                raise InputError(f"entry {j}: its vector has {v.shape[0]} dimensions, this memory's {dim}")
            out[j] = v
        else:
            missing.append(j)
    # Without progress, one call: the encoder batches (and sorts by length) as it likes.
    step = ENCODE_CHUNK if progress is not None else max(len(missing), 1)
    for start in range(0, len(missing), step):
        part = missing[start : start + step]
        for j, v in zip(part, encoder.encode([embed_text(entries[j].turn) for j in part])):
            out[j] = v
        if progress is not None:
            progress(len(part))
    if progress is not None and len(todo) > len(missing):
        progress(len(todo) - len(missing))
    return out


def reembed_all(store: MemoryStore, encoder: TextEncoder, *, batch: int = 256, progress: Progress | None = None) -> int:
    """Re-encode every stored turn with ``encoder`` and record it as the memory's encoder.

    One transaction: an interruption leaves the old vectors and encoder in place. Slot states
    are dropped (rebuilt from the new vectors on first use). Returns the number re-encoded.
    """
    with store.transaction():
        done = 0
        all_ids = store.ids_in(()).tolist()  # ids only: the old vectors are not read
        for start in range(0, len(all_ids), batch):
            rows = store.get(all_ids[start : start + batch])
            # Only the fields embed_text reads; they were validated when the turn was added.
            turns = [Turn.model_construct(role=r.role, content=r.content, speaker=r.speaker, metadata=r.metadata) for r in rows]
            store.set_vectors([r.id for r in rows], encoder.encode([embed_text(t) for t in turns]))  # (n, d)
            done += len(rows)
            if progress is not None:
                progress(len(rows))
        store.drop_slot_states()
        store.set_meta("encoder", encoder.name)
        store.set_meta("dim", str(encoder.dim))
    return done
