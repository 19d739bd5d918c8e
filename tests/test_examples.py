"""The examples and the README quick start run, with the real default model, and give the answer."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxmem_plugin.cli import main
from ctxmem_plugin.formats import FORMATS, read_log
from ctxmem_plugin.storage.schema import MIGRATIONS, migrate

from helpers import REPO

README = REPO / "README.md"
ANSWER = "Her name is Pretzel."  # examples/chat_logs/maya.jsonl, the turn that answers the dog question


@pytest.mark.slow
def test_quickstart_finds_the_answer(tmp_path: Path) -> None:
    memory = tmp_path / "mem"
    run = subprocess.run([sys.executable, str(REPO / "examples" / "quickstart.py"), str(memory)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    hits, _, context = run.stdout.partition("Context for the LLM")
    assert ANSWER in hits, run.stdout
    assert ANSWER in context, run.stdout
    assert "Traceback" not in run.stderr
    # The memory it built is an ordinary memory directory: the CLI reads it.
    stats = json.loads(CliRunner().invoke(main, ["stats", "--memory", str(memory), "--json"]).stdout)
    logs = REPO / "examples" / "chat_logs"
    assert stats["namespaces"] == {f"demo/{p.stem}": len(read_log(p).turns) for p in logs.iterdir()}


def readme_python_block(text: str) -> str | None:
    """The first ```python block after the first heading that mentions Python."""
    heading = re.search(r"^#{1,6} .*python.*$", text, flags=re.IGNORECASE | re.MULTILINE)
    if heading is None:
        return None
    block = re.search(r"^```python[ \t]*\n(.*?)^```", text[heading.end():], flags=re.DOTALL | re.MULTILINE)
    return None if block is None else block[1]


def test_readme_python_block_extraction() -> None:
    text = "# Tool\n```python\nnot this\n```\n## Use it from Python\nprose\n```python\nx = 1\n```\n```python\ny\n```\n"
    assert readme_python_block(text) == "x = 1\n"
    assert readme_python_block("# Tool\n```python\nx\n```\n") is None


@pytest.mark.slow
def test_readme_python_quickstart_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs in an empty directory holding a copy of examples/, so relative paths in it work."""
    if not README.is_file():
        pytest.skip("README.md does not exist yet; its Python quick start is tested once it does")
    code = readme_python_block(README.read_text(encoding="utf-8"))
    assert code is not None, "README.md has no ```python block under a heading that mentions Python"
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["README.md"])
    exec(compile(code, str(README), "exec"), {"__name__": "__main__"})


# -- the docs say what the code does ------------------------------------------------------------


def test_format_examples_in_usage_docs_are_read_as_labelled(tmp_path: Path) -> None:
    text = (REPO / "docs" / "usage.md").read_text(encoding="utf-8")
    examples = re.findall(r"<!-- format: (\w+), file: ([\w.]+) -->\n```\w*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    assert sorted(fmt for fmt, _, _ in examples) == sorted(FORMATS)
    for fmt, name, body in examples:
        path = tmp_path / name
        path.write_text(body, encoding="utf-8")
        log = read_log(path)
        assert log.format == fmt and len(log.turns) >= 2 and not log.skipped, name


def test_schema_in_storage_docs_matches_the_migrations(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "storage-format.md").read_text(encoding="utf-8")
    sql = "\n".join(re.findall(r"```sql\n(.*?)```", doc, flags=re.DOTALL))  # one block per migration
    documented = {name: [c for c in re.findall(r"^\s+(\w+)\s+[A-Z]", body, flags=re.MULTILINE) if c != "PRIMARY"]
                  for name, body in re.findall(r"CREATE TABLE (\w+) \(\n(.*?)\n\)[^;\n]*;", sql, flags=re.DOTALL)}
    for table, column in re.findall(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", sql):
        documented[table].append(column)
    documented["meta"] = ["key", "value"]  # written on one line
    db = sqlite3.connect(tmp_path / "db.sqlite3")
    migrate(db)
    actual = {name: [col[1] for col in db.execute(f"PRAGMA table_info({name})")]
              for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE TABLE%'")
              if not name.startswith(("sqlite_", "turns_fts", "turns_nsfts"))}
    indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    db.close()
    assert documented == actual
    assert indexes == set(re.findall(r"CREATE (?:UNIQUE )?INDEX (\w+)", sql))
    assert [f"Migration `{name}`" in doc for name, _ in MIGRATIONS] == [True] * len(MIGRATIONS)
