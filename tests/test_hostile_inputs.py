"""The hostile input corpus (``tests/data/bad/``, described in its README): every case gets the
project's own error, one line, exit code 2 on the CLI, no traceback, and leaves the memory as it
was; a case marked ``ok`` (derived data that is rebuilt) succeeds instead."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

import ctxmem_plugin.encoders
from ctxmem_plugin.cli import main
from ctxmem_plugin.errors import CtxMemError
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.reranker.checkpoint import save_model
from ctxmem_plugin.reranker.model import CtxMemModel, ModelConfig
from ctxmem_plugin.reranker.scorer import ScorerConfig
from ctxmem_plugin.reranker.slots import SlotConfig
from ctxmem_plugin.retrieval.features import FEATURE_NAMES

from helpers import REPO, HashEncoder

CORPUS = REPO / "tests" / "data" / "bad"
DOCUMENT = json.loads((CORPUS / "cases.json").read_text(encoding="utf-8"))
CASES = {case["name"]: case for case in DOCUMENT["cases"]}
MAYA = REPO / "examples" / "chat_logs" / "maya.jsonl"
PROGRESS = {"loading the encoder..."}


@pytest.fixture(autouse=True)
def fast_encoder(monkeypatch: pytest.MonkeyPatch) -> HashEncoder:
    """Every encoder the CLI opens (the default, ``--encoder`` or the one a model names) is this one."""
    enc = HashEncoder()
    monkeypatch.setattr(ctxmem_plugin.encoders, "SentenceEncoder", lambda model=None, **_: enc)
    return enc


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small model over the hash encoder, and a memory written with it (so it holds slot
    states), copied for each case."""
    root = tmp_path_factory.mktemp("templates")
    torch_config = ModelConfig(
        slots=SlotConfig(dim=64, num_slots=4, feature_dim=8),
        scorer=ScorerConfig(num_features=len(FEATURE_NAMES), dim=64, hidden=8, bilinear_rank=4),
        encoder="hash-64", feature_names=FEATURE_NAMES,
    )
    save_model(CtxMemModel(torch_config), root / "model", extra={"runtime": {"pool": 50, "write_chunk": 4}})
    encoder = HashEncoder()
    from ctxmem_plugin.formats import read_paths

    with ContextMemory(root / "memory", model=root / "model", encoder=encoder) as memory:
        memory.ingest(read_paths([MAYA]), ("maya",))
        memory.add([{"content": "the garden has tomatoes", "metadata": {"session": 2, "place": {"city": "Oslo"}}}], ("notes",))
        assert memory.search("dog", ("maya",))
    return {"model": root / "model", "memory": root / "memory"}


def expand(text: str) -> str:
    for mark, (unit, times) in DOCUMENT["expand"].items():
        text = text.replace(mark, unit * times)
    return text


def snapshot(memory: Path) -> dict[str, Any]:
    """The memory's files byte for byte (not SQLite's -wal/-shm, which it rewrites on open, nor the
    lock), and its rows and meta when SQLite can read them."""
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(memory.iterdir())
             if p.is_file() and not p.name.endswith(("-wal", "-shm")) and p.name != "writer.lock"}
    try:
        db = sqlite3.connect(f"file:{memory / 'memory.sqlite3'}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT * FROM turns ORDER BY id").fetchall()
            meta = db.execute("SELECT * FROM meta ORDER BY key").fetchall()
            slots = db.execute("SELECT namespace, state FROM slot_states ORDER BY namespace").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError:
        rows = meta = slots = None
    return {"files": files, "rows": rows, "meta": meta, "slots": slots}


def edit_config(document: dict[str, Any], path: str, value: Any) -> None:
    keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
    node: Any = document
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value


def damage(memory: Path, op: dict[str, Any]) -> None:
    if "sql" in op:
        db = sqlite3.connect(memory / "memory.sqlite3")
        db.execute(op["sql"])
        db.commit()
        db.close()
    elif "truncate" in op:
        name, size = op["truncate"]
        (memory / name).write_bytes((memory / name).read_bytes()[:size])
    elif "write" in op:
        name, text = op["write"]
        (memory / name).write_text(expand(text))
    elif "slot_state" in op:
        db = sqlite3.connect(memory / "memory.sqlite3")
        (namespace, state), = db.execute("SELECT namespace, state FROM slot_states LIMIT 1").fetchall()
        broken = state[: len(state) // 2 + 3] if op["slot_state"] == "truncate" else np.full(len(state) // 4, np.nan, np.float32).tobytes()
        db.execute("UPDATE slot_states SET state = ? WHERE namespace = ?", (broken, namespace))
        db.commit()
        db.close()
    else:
        raise AssertionError(f"unknown damage {op}")


def prepare(case: dict[str, Any], templates: dict[str, Path], tmp: Path) -> dict[str, str]:
    """Copies of the templates for this case, damaged or edited as it says; the placeholders."""
    memory, model = tmp / "memory", tmp / "model"
    shutil.copytree(templates["memory"], memory)
    shutil.copytree(templates["model"], model)
    for op in case.get("damage", []):
        damage(memory, op)
    config = model / "config.json"
    if "model_config_text" in case:
        config.write_text(expand(case["model_config_text"]))
    elif case.get("model_edit"):
        document = json.loads(config.read_text())
        for path, value in case["model_edit"].items():
            edit_config(document, path, value)
        config.write_text(json.dumps(document))
    if "model_weights_text" in case:
        (model / "model.safetensors").write_bytes(case["model_weights_text"].encode("latin-1"))
    return {"memory": str(memory), "model": str(model), "out": str(tmp / "out" / "export.jsonl"), "missing": str(tmp / "nowhere")}


def resolve(arg: str, places: dict[str, str], tmp: Path) -> str:
    def log(match: re.Match[str]) -> str:
        target = tmp / "logs" / match[1]
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            text = (CORPUS / "logs" / match[1]).read_bytes()
            target.write_bytes(expand(text.decode("latin-1")).encode("latin-1"))
        return str(target)

    arg = re.sub(r"\{log:([^}]+)\}", log, arg)
    for name, value in places.items():
        arg = arg.replace("{" + name + "}", value)
    return expand(arg)


def assert_one_line_error(result: Result, expected: list[str]) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught exception
    assert result.stdout == "", result.stdout
    # Progress notes ("loading the encoder...") may come first; the error is one line.
    lines = [line for line in result.stderr.splitlines() if line not in PROGRESS]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])


CLI_CASES = sorted(name for name, case in CASES.items() if "run" in case)
API_CASES = sorted(name for name, case in CASES.items() if "api" in case)


@pytest.mark.parametrize("name", CLI_CASES)
def test_hostile_input_on_the_command_line(name: str, templates: dict[str, Path], tmp_path: Path) -> None:
    case = CASES[name]
    places = prepare(case, templates, tmp_path)
    memory = Path(places["memory"])
    for run in case["run"]:
        before = snapshot(memory) if memory.exists() else None
        result = CliRunner().invoke(main, [resolve(a, places, tmp_path) for a in run])
        if case.get("ok"):
            assert result.exit_code == 0, (run, result.output, result.exception)
            continue
        assert_one_line_error(result, case["error"])
        after = snapshot(memory) if memory.exists() else None
        assert after == before, f"{run[0]} changed the memory"
        assert not Path(places["missing"]).exists() and not Path(places["out"]).exists()
    if case.get("ok"):  # the rebuilt index holds every turn, and only those
        with ContextMemory(memory, encoder=HashEncoder(), read_only=True) as mem:
            turns = {t.id for t in mem.list_turns()}
            found = {h.id for h in mem.search_by_vector(np.ones(64), k=10_000)}
            assert found == turns and len(turns) > 2
    elif "damage" in case:  # doctor names the damage, changes nothing, and exits with 1
        before = snapshot(memory)
        result = CliRunner().invoke(main, ["doctor", "--memory", str(memory)])
        assert result.exit_code == 1 and result.stdout.startswith("problem "), (result.output, result.exception)
        assert snapshot(memory) == before


@pytest.mark.parametrize("name", API_CASES)
def test_hostile_input_through_the_api(name: str, templates: dict[str, Path], tmp_path: Path) -> None:
    case = CASES[name]
    places = prepare(case, templates, tmp_path)
    memory = Path(places["memory"])
    before = snapshot(memory)
    # Python expressions over literals (``10 ** 5000``, ``float('nan')``), no names but float.
    kwargs = eval(case["args"], {"__builtins__": {}}, {"float": float})  # noqa: S307 (the corpus's own data)
    with ContextMemory(memory, encoder=HashEncoder()) as mem:
        with pytest.raises(CtxMemError) as info:
            getattr(mem, case["api"])(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    for text in case["error"]:
        assert text in message, (text, message)
    assert snapshot(memory) == before


def test_the_corpus_covers_every_hostile_input_of_the_issue() -> None:
    """The cases named in issue 25, item 7 (and the storage ones), each present."""
    names = " | ".join(CASES)
    for needed in ("nested 100,000 deep", "5,000-digit integer in metadata", "timestamp 1e20", "timestamp Infinity",
                   "filter integer above 2^63", "write_chunk 0", 'write_chunk "abc"', "unknown retrieval key",
                   "runtime as a list", "pool -5", "user_version set to 1", "user_version set to 0",
                   "user_version set to -1", "generation not a number", "dim not a number", "truncated",
                   "garbage", "vectors.json holds null", "vectors.json holds [1, 2]", "truncated slot state",
                   "slot state full of NaN", "lone surrogate in the namespace", "lone surrogate in the query",
                   "k='5'", "non-string filter key", "num_slots 10^9", "members 1000", "depth 10^6"):
        assert needed in names, needed
    assert len(CASES) >= 100
