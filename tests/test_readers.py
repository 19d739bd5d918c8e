"""A short run of ``benchmarks/readers.py`` (the long one is 60 s): reader processes searching
with every method, with and without a model, while a writer process adds, replaces, deletes and
forgets get no error, no hit outside the prefix searched and no id the memory never held
(issue 25, defect 1 and "Readers beside a writer" in its "Prove it")."""

from __future__ import annotations

import sys

from helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import readers  # noqa: E402  (benchmarks/ is not a package)


def test_reader_processes_beside_a_writer_see_consistent_results() -> None:
    result = readers.run(seconds=4, readers=2, seed=3)
    assert result["process_failures"] == []
    assert result["errors"] == 0, result["error_kinds"]
    assert result["outside_namespace"] == 0
    assert result["unknown_ids"] == 0
    assert result["keep_intact"]
    assert set(result["searches_by_method"]) == {"bm25", "dense", "hybrid", "ctxmem"}
    assert min(result["searches_by_method"].values()) > 0
    assert result["writer"]["rounds"] > 0 and result["writer"]["turns_stored"] > 0
