"""A vector index state file that is not ``{"generation": ...}`` is treated as unreadable: the
index is rebuilt from SQLite, never trusted and never a crash (issue 25, item 7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctxmem_plugin.memory import ContextMemory

from helpers import HashEncoder


@pytest.mark.parametrize("state", ["null", "[1, 2]", "7", '"generation"', "{}"])
def test_a_state_file_that_is_not_an_object_means_a_rebuild(tmp_path: Path, state: str) -> None:
    encoder = HashEncoder()
    with ContextMemory(tmp_path, encoder=encoder) as mem:
        ids = mem.add([{"content": f"turn {i} about the garden"} for i in range(12)], ("u",))
        mem.search("garden", ("u",))  # the index is loaded, caught up and saved
    assert (tmp_path / "vectors.faiss").is_file()
    (tmp_path / "vectors.json").write_text(state)
    for read_only in (True, False):
        with ContextMemory(tmp_path, encoder=encoder, read_only=read_only) as mem:
            query = encoder.encode_query("turn 3 about the garden")
            hits = mem.search_by_vector(query, ("u",), k=100)
            assert sorted(h.id for h in hits) == sorted(ids)
            vectors = mem.vectors(ids)
            best = max(ids, key=lambda i: (float(vectors[i] @ query), -i))
            assert hits[0].id == best  # the brute-force nearest turn
            assert np.isclose(hits[0].score, float(vectors[best] @ query), atol=1e-6)
