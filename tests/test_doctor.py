"""``ctxmem-plugin doctor``: each kind of damage is found (one line each, exit 1), nothing is
changed without --repair, and --repair rebuilds from SQLite a memory that answers exactly as an
intact copy does."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import ctxmem_plugin.encoders
from ctxmem_plugin.cli import main
from ctxmem_plugin.formats import read_paths
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.reranker.checkpoint import save_model
from ctxmem_plugin.reranker.model import CtxMemModel, ModelConfig
from ctxmem_plugin.reranker.scorer import ScorerConfig
from ctxmem_plugin.reranker.slots import SlotConfig
from ctxmem_plugin.retrieval.features import FEATURE_NAMES
from ctxmem_plugin.storage.ann import IndexConfig
from ctxmem_plugin.storage.base import MemoryStore
from ctxmem_plugin.storage.sqlite import LongTermStore

from helpers import REPO, HashEncoder

QUERIES = ["dog", "what is the name of the dog", "garden tomatoes", "Biscuit", "walk in the park"]


@pytest.fixture(autouse=True)
def fast_encoder(monkeypatch: pytest.MonkeyPatch) -> HashEncoder:
    enc = HashEncoder()
    monkeypatch.setattr(ctxmem_plugin.encoders, "SentenceEncoder", lambda model=None, **_: enc)
    return enc


@pytest.fixture(scope="module")
def intact(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("doctor")
    config = ModelConfig(
        slots=SlotConfig(dim=64, num_slots=4, feature_dim=8),
        scorer=ScorerConfig(num_features=len(FEATURE_NAMES), dim=64, hidden=8, bilinear_rank=4),
        encoder="hash-64", feature_names=FEATURE_NAMES,
    )
    save_model(CtxMemModel(config), root / "model", extra={"runtime": {"pool": 50, "write_chunk": 4}})
    with ContextMemory(root / "memory", model=root / "model", encoder=HashEncoder()) as mem:
        mem.ingest(read_paths([REPO / "examples" / "chat_logs"]), ("maya",), split_conversations=True)
    return {"memory": root / "memory", "model": root / "model"}


def copy(intact: dict[str, Path], tmp_path: Path) -> Path:
    shutil.copytree(intact["memory"], tmp_path / "memory")
    return tmp_path / "memory"


def doctor(memory: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["doctor", "--memory", str(memory), *args])


def answers(memory: Path, model: Path | None = None) -> list[list[tuple[int, float]]]:
    """Every method's hits for the queries: what a repaired memory must give exactly as before."""
    out = []
    with ContextMemory(memory, encoder=HashEncoder(), read_only=True, model=model) as mem:
        for query in QUERIES:
            for method in (("ctxmem",) if model else ("bm25", "dense", "hybrid")):
                out.append([(h.id, round(h.score, 6)) for h in mem.search(query, ("maya",), k=8, method=method)])
    return out


def files(memory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(memory.iterdir())
            if p.is_file() and not p.name.endswith(("-wal", "-shm")) and p.name != "writer.lock"}


def sql(memory: Path, *statements: str) -> None:
    db = sqlite3.connect(memory / "memory.sqlite3")
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def test_an_intact_memory_has_no_problems(intact: dict[str, Path], tmp_path: Path) -> None:
    memory = copy(intact, tmp_path)
    result = doctor(memory, "--model", str(intact["model"]))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{memory}: no problems found\n"
    store = LongTermStore(memory, read_only=True)
    try:
        assert isinstance(store, MemoryStore) and store.check() == []
    finally:
        store.close()


DAMAGE = {
    "fts": ("the full-text index does not match the turns",
            ["INSERT INTO turns_fts(turns_fts, rowid, index_text) SELECT 'delete', id, index_text FROM turns WHERE id % 3 = 0"]),
    "bm25 statistics": ("BM25 statistics of", ["UPDATE namespace_stats SET turns = turns + 7, tokens = tokens * 2"]),
    "token counts": ("record a token count", ["UPDATE turns SET n_tokens = n_tokens + 1 WHERE id % 2 = 0"]),
    "schema version": ("records version 0, its tables are version 3", ["PRAGMA user_version = 0"]),
    # Postings of a turn that is gone: words a forget or delete must not leave behind.
    "stale postings": ("the per-namespace postings hold words of 1 deleted turn(s)",
                       ["INSERT INTO turns_nsfts(rowid, terms) VALUES (999999, 'secret_6d6179612f')"]),
    "vector dtype": ("meta vector_dtype is 'float8', not float32 or float16",
                     ["INSERT OR REPLACE INTO meta(key, value) VALUES ('vector_dtype', 'float8')"]),
    "generation": ("meta generation is 'x1', not a number", ["UPDATE meta SET value = 'x1' WHERE key = 'generation'"]),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damage_is_found_left_alone_and_repaired_to_the_intact_answers(intact: dict[str, Path], tmp_path: Path, kind: str) -> None:
    says, statements = DAMAGE[kind]
    memory = copy(intact, tmp_path)
    sql(memory, *statements)
    before = files(memory)
    found = doctor(memory)
    assert found.exit_code == 1 and found.stdout.startswith("problem ") and says in found.stdout, found.output
    assert all(line.startswith("problem ") for line in found.stdout.splitlines())
    assert files(memory) == before  # without --repair nothing changes
    repaired = doctor(memory, "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert repaired.stdout.startswith("repaired ") and repaired.stdout.endswith("no problems found\n")
    assert answers(memory) == answers(intact["memory"])


@pytest.mark.parametrize("damage", ["cells lost", "centroids truncated"])
def test_a_damaged_approximate_index_is_found_and_rebuilt(tmp_path: Path, damage: str) -> None:
    memory = tmp_path / "memory"
    small = IndexConfig(exact_limit=32)  # trains the cells at 32 turns
    with ContextMemory(memory, encoder=HashEncoder(), index=small) as mem:
        mem.ingest(read_paths([REPO / "examples" / "chat_logs"]), ("maya",), split_conversations=True)
        (turns,) = mem.store.db.execute("SELECT count(*) FROM turns").fetchone()
        assert mem.store.db.execute("SELECT count(*) FROM ann_cells").fetchone()[0] == turns
    before = answers(memory)  # exact: this process's limit is the default
    sql(memory, "DELETE FROM ann_cells WHERE id % 2 = 0" if damage == "cells lost"
        else "UPDATE ann_centroids SET centroids = substr(centroids, 1, 100)")
    found = doctor(memory)
    says = "the approximate index places" if damage == "cells lost" else "the approximate index's centroids are not"
    assert found.exit_code == 1 and says in found.stdout, found.output
    repaired = doctor(memory, "--repair")
    assert repaired.exit_code == 0 and "vectors: the approximate index dropped" in repaired.stdout, repaired.output
    assert answers(memory) == before


@pytest.mark.parametrize("damage", ["truncated", "nan"])
def test_damaged_slot_states_are_found_and_rebuilt_from_the_turns(intact: dict[str, Path], tmp_path: Path, damage: str) -> None:
    memory = copy(intact, tmp_path)
    db = sqlite3.connect(memory / "memory.sqlite3")
    for namespace, state in db.execute("SELECT namespace, state FROM slot_states").fetchall():
        broken = state[:100] if damage == "truncated" else np.full(len(state) // 4, np.nan, np.float32).tobytes()
        db.execute("UPDATE slot_states SET state = ? WHERE namespace = ?", (broken, namespace))
    db.commit()
    db.close()
    found = doctor(memory, "--model", str(intact["model"]))
    assert found.exit_code == 1, found.output
    assert len(found.stdout.splitlines()) == 2  # one line per damaged state (two conversations)
    assert ("bytes" if damage == "truncated" else "NaN") in found.stdout
    result = doctor(memory, "--repair", "--model", str(intact["model"]))
    assert result.exit_code == 0 and "2 damaged slot state(s) dropped" in result.stdout, result.output
    assert answers(memory, intact["model"]) == answers(intact["memory"], intact["model"])


def test_what_cannot_be_rebuilt_stays_a_problem_after_repair(intact: dict[str, Path], tmp_path: Path) -> None:
    memory = copy(intact, tmp_path)
    sql(memory, "UPDATE turns SET namespace = 'no-trailing-slash' WHERE id = (SELECT min(id) FROM turns)")
    result = doctor(memory, "--repair")
    assert result.exit_code == 1
    assert "problem namespaces: turns holds namespace 'no-trailing-slash'" in result.stdout
    assert "(not repairable here)" in result.stdout
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "memory.sqlite3").write_bytes(b"not a database" * 100)
    result = doctor(garbage, "--repair")
    assert result.exit_code == 1 and result.stdout == "problem database: not a SQLite database (damaged or replaced) (not repairable here)\n"


def test_the_store_methods_check_and_repair(intact: dict[str, Path], tmp_path: Path) -> None:
    memory = copy(intact, tmp_path)
    sql(memory, *DAMAGE["fts"][1])
    with ContextMemory(memory, encoder=HashEncoder()) as mem:
        assert [f.part for f in mem.store.check()] == ["fts"]
        assert mem.store.repair() == ["fts: full-text indexes, token counts and BM25 statistics rebuilt from the turns"]
        assert mem.store.check() == []
    assert answers(memory) == answers(intact["memory"])
