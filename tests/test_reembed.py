"""Re-encoding a memory with another encoder: all or nothing, and searchable after."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from helpers import HashEncoder

from ctxmem_plugin.errors import ModelMismatchError
from ctxmem_plugin.memory import ContextMemory

TURNS = [
    {"role": "user", "content": "My sister Ines moved to Porto last spring."},
    {"role": "assistant", "content": "Porto is lovely. Does she like it?"},
    {"role": "user", "content": "She does, she works at a bookshop near the river.", "metadata": {"image_caption": "a shop"}},
]


class Failing(HashEncoder):
    """Encodes one batch, then fails: a crash in the middle of a re-encode."""

    def __init__(self) -> None:
        super().__init__(name="other")
        self.calls = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("power cut")
        return super().encode(texts)


def _build(path: Path) -> list[int]:
    with ContextMemory(path, encoder=HashEncoder()) as mem:
        ids = mem.add(TURNS, namespace=("u1",))
        mem.add([{"role": "user", "content": "Unrelated user's note about tea."}], namespace=("u2",))
        assert mem.search("Porto", namespace=("u1",))
    return ids


def test_reembed_replaces_every_vector_and_the_encoder(tmp_path: Path) -> None:
    ids = _build(tmp_path)
    other = HashEncoder(dim=32, name="other-32")
    with ContextMemory(tmp_path, encoder=other) as mem:
        with pytest.raises(ModelMismatchError, match="reembed"):
            mem.search("Porto", namespace=("u1",))
        before = mem.generation
        assert mem.reembed(batch=2) == 4
        assert mem.generation > before
        turns = mem.get(ids)
        expected = other.encode([f"user: {TURNS[0]['content']}", f"assistant: {TURNS[1]['content']}",
                                 f"user: {TURNS[2]['content']} [image: a shop]"])
        got = np.stack([mem.vectors(ids)[i] for i in ids])
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert [t.content for t in turns] == [t["content"] for t in TURNS]
        hits = mem.search("bookshop river", namespace=("u1",), method="dense")
        assert hits and hits[0].id == ids[2] and all(h.namespace == ("u1",) for h in hits)
    with ContextMemory(tmp_path, encoder=other, read_only=True) as mem:  # the vector index on disk is the new one
        assert mem.stats()["encoder"] == "other-32" and mem.search("tea", namespace=("u2",), method="dense")


def test_an_interrupted_reembed_leaves_the_memory_as_it_was(tmp_path: Path) -> None:
    ids = _build(tmp_path)
    with ContextMemory(tmp_path, encoder=HashEncoder()) as mem:
        old = mem.vectors(ids)
        hits = [(h.id, h.score) for h in mem.search("Porto", namespace=("u1",))]
    with ContextMemory(tmp_path, encoder=Failing()) as mem, pytest.raises(RuntimeError, match="power cut"):
        mem.reembed(batch=2)
    with ContextMemory(tmp_path, encoder=HashEncoder()) as mem:
        assert mem.stats()["encoder"] == "hash-64"
        now = mem.vectors(ids)
        assert all(np.array_equal(old[i], now[i]) for i in ids)
        assert [(h.id, h.score) for h in mem.search("Porto", namespace=("u1",))] == hits


def test_reembed_command_needs_a_memory_and_an_encoder(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ctxmem_plugin.cli import main

    missing = CliRunner().invoke(main, ["reembed", "--memory", str(tmp_path / "none"), "--encoder", str(tmp_path)])
    assert missing.exit_code == 2 and "no memory at" in missing.output
    assert not (tmp_path / "none").exists()
    _build(tmp_path / "mem")
    bare = CliRunner().invoke(main, ["reembed", "--memory", str(tmp_path / "mem")])
    assert bare.exit_code == 2 and "needs --model or --encoder" in bare.output
