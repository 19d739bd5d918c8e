"""Portable JSONL export/import: a lossless round trip, vectors reused only when they fit, atomic writes."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from ctxmem_plugin.errors import FormatError, InputError, MemoryNotFoundError, ModelMismatchError
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.formats.portable import export_jsonl, import_jsonl


def export(directory: Path, out: Path, prefix: tuple[str, ...] = (), **kwargs: bool) -> int:
    """Export the memory in ``directory`` as the CLI does: opened read-only for the export alone."""
    with ContextMemory(directory, read_only=True) as memory:
        return export_jsonl(memory, out, prefix, **kwargs)

from helpers import HashEncoder

FIELDS = ("namespace", "role", "speaker", "content", "timestamp", "metadata", "key")


class CountingEncoder(HashEncoder):
    def __init__(self, dim: int = 64, name: str = "hash-64") -> None:
        super().__init__(dim, name)
        self.texts = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += len(texts)
        return super().encode(texts)


def random_memory(path: Path, encoder: HashEncoder, seed: int, n: int = 60) -> None:
    """Turns with every field varied, repeated messages, keys (some upserted) and nested namespaces."""
    rng = random.Random(seed)
    spaces = [("u1",), ("u1", "s1"), ("u1", "s2"), ("ü2 ✓",), ("u10",)]
    with ContextMemory(path, encoder=encoder) as mem:
        for i in range(n):
            turn = {
                "role": rng.choice(["user", "assistant", "system", "tool"]),
                "content": rng.choice(["ok", "yes", f"message {i} 🐶 über \"quoted\"\nline two", "tab\there"]),
                "speaker": rng.choice([None, "Ana", "Bo Li"]),
                "timestamp": rng.choice([None, "2024-03-02T09:15:00", "2023-05-08T13:56:00+02:00"]),
                "metadata": rng.choice([{}, {"n": i}, {"tags": ["a", "b"], "deep": {"x": [1.5, None, True]}}]),
                "key": rng.choice([None, None, f"k{rng.randint(0, 5)}"]),
            }
            mem.add(turn, rng.choice(spaces))
            if i % 10 == 0:
                mem.add({"content": "ok"}, ("u1",))  # said again and again: every one is a turn of its own


def records(path: Path, encoder: HashEncoder, prefix: tuple[str, ...] = ()) -> list[tuple]:
    with ContextMemory(path, encoder=encoder, read_only=True) as mem:
        return [(t.namespace, t.role, t.speaker, t.content, t.timestamp, t.metadata, t.key) for t in mem.list_turns(prefix)]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("with_vectors", [False, True])
def test_round_trip_keeps_every_turn_and_field(tmp_path: Path, seed: int, with_vectors: bool) -> None:
    encoder = CountingEncoder()
    random_memory(tmp_path / "a", encoder, seed)
    out = tmp_path / "a.jsonl"
    count = export(tmp_path / "a", out, with_vectors=with_vectors)
    original = records(tmp_path / "a", encoder)
    assert count == len(original) == len(out.read_text(encoding="utf-8").splitlines())
    encoder.texts = 0
    with ContextMemory(tmp_path / "b", encoder=encoder) as mem:
        assert import_jsonl(mem, out) == (count, 0)
    assert encoder.texts == (0 if with_vectors else count)
    assert records(tmp_path / "b", encoder) == original
    with ContextMemory(tmp_path / "b", encoder=encoder) as mem:
        assert import_jsonl(mem, out) == (0, count)  # importing again adds nothing
    # Export of the copy is the same file, apart from the ingest times.
    export(tmp_path / "b", tmp_path / "b.jsonl", with_vectors=with_vectors)
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k not in ("created_at", "updated_at")}
                       for line in p.read_text(encoding="utf-8").splitlines()]
    assert strip(tmp_path / "b.jsonl") == strip(out)


def test_export_line_format(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    with ContextMemory(tmp_path / "m", encoder=hash_encoder) as mem:
        (turn_id,) = mem.add({"role": "user", "speaker": "Maya", "content": "Her name is Pretzel.",
                              "timestamp": "2024-03-02T09:17:00", "metadata": {"session": 1}, "key": "dog"}, ("u", "s"))
        vector = mem.store.vectors([turn_id], hash_encoder.dim)[0]
    export(tmp_path / "m", tmp_path / "plain.jsonl")
    (line,) = (tmp_path / "plain.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(line)
    assert set(record) == {*FIELDS, "created_at", "updated_at"}
    assert {k: record[k] for k in FIELDS} == {
        "namespace": ["u", "s"], "role": "user", "speaker": "Maya", "content": "Her name is Pretzel.",
        "timestamp": "2024-03-02T09:17:00", "metadata": {"session": 1}, "key": "dog"}
    assert isinstance(record["created_at"], float) and record["updated_at"] >= record["created_at"]
    export(tmp_path / "m", tmp_path / "vec.jsonl", with_vectors=True)
    record = json.loads((tmp_path / "vec.jsonl").read_text(encoding="utf-8"))
    assert record["encoder"] == hash_encoder.name
    assert np.array_equal(np.asarray(record["vector"], dtype=np.float32), vector)  # exact, float32 survives JSON


def test_vectors_of_another_encoder_are_recomputed(tmp_path: Path) -> None:
    random_memory(tmp_path / "a", HashEncoder(), seed=5, n=20)
    out = tmp_path / "a.jsonl"
    count = export(tmp_path / "a", out, with_vectors=True)
    other = CountingEncoder(dim=32, name="hash-32")
    with ContextMemory(tmp_path / "b", encoder=other) as mem:
        assert import_jsonl(mem, out) == (count, 0)
        assert other.texts == count
        ids = mem.store.all_ids().tolist()
        assert np.allclose(mem.store.vectors(ids, 32), other.encode([f"{t.speaker or t.role}: {t.content}"
                                                                      for t in mem.get(ids)]))


def test_import_into_a_memory_opened_with_another_encoder_is_refused(tmp_path: Path) -> None:
    random_memory(tmp_path / "a", HashEncoder(), seed=6, n=5)
    export(tmp_path / "a", tmp_path / "a.jsonl", with_vectors=True)
    with ContextMemory(tmp_path / "b", encoder=HashEncoder(32, "hash-32")) as mem:
        mem.add({"content": "already here"}, ("x",))
    with ContextMemory(tmp_path / "b", encoder=HashEncoder()) as mem:
        with pytest.raises(ModelMismatchError, match="hash-32"):
            import_jsonl(mem, tmp_path / "a.jsonl")
    assert records(tmp_path / "b", HashEncoder(32, "hash-32")) == [(("x",), "user", None, "already here", None, {}, None)]


def test_a_bad_line_imports_nothing(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    random_memory(tmp_path / "a", hash_encoder, seed=7, n=10)
    out = tmp_path / "a.jsonl"
    export(tmp_path / "a", out)
    lines = out.read_text(encoding="utf-8").splitlines()
    out.write_text("\n".join(lines) + '\n\n{"namespace": ["u1"], "content": ""}\n', encoding="utf-8")
    with ContextMemory(tmp_path / "b", encoder=hash_encoder) as mem:
        with pytest.raises(FormatError) as caught:
            import_jsonl(mem, out)
        assert caught.value.source == f"{out}:{len(lines) + 2}" and "content is empty" in str(caught.value)
        assert mem.list_turns() == []


def test_export_of_a_prefix_and_of_nothing(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    random_memory(tmp_path / "a", hash_encoder, seed=8)
    assert export(tmp_path / "a", tmp_path / "u1.jsonl", ("u1",)) == len(records(tmp_path / "a", hash_encoder, ("u1",)))
    assert {tuple(json.loads(line)["namespace"])[:1] for line in (tmp_path / "u1.jsonl").read_text().splitlines()} == {("u1",)}
    assert export(tmp_path / "a", tmp_path / "none.jsonl", ("nobody",)) == 0
    assert (tmp_path / "none.jsonl").read_text() == ""
    with ContextMemory(tmp_path / "b", encoder=hash_encoder) as mem:
        assert import_jsonl(mem, tmp_path / "none.jsonl") == (0, 0)


def test_export_is_atomic_and_needs_a_memory(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("previous export\n")
    with pytest.raises(MemoryNotFoundError):
        export(tmp_path / "missing", out)
    assert out.read_text() == "previous export\n" and not (tmp_path / "missing").exists()
    random_memory(tmp_path / "a", hash_encoder, seed=9, n=5)
    assert export(tmp_path / "a", out) == len(out.read_text().splitlines()) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "out.jsonl"]  # no temporary file left


def test_import_into_a_read_only_memory(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    random_memory(tmp_path / "a", hash_encoder, seed=10, n=5)
    export(tmp_path / "a", tmp_path / "a.jsonl")
    with ContextMemory(tmp_path / "a", encoder=hash_encoder, read_only=True) as mem:
        with pytest.raises(InputError, match="read-only"):
            import_jsonl(mem, tmp_path / "a.jsonl")
