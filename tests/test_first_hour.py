"""The rough edges a first user met in their first hour, each fixed and kept fixed.

One test per problem, numbered as they were reported: an export into a new folder, a failed
import into a new directory, ingest progress, a memory opened twice, stray files beside the
logs, empty namespaces, long turns, turns without a speaker, message wording, the rate of an
ingest that added nothing, and the memory directory of the README's first command.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import ctxmem_plugin.encoders
from ctxmem_plugin.cli import main
from ctxmem_plugin.errors import CtxMemError, InputError, MemoryLockedError, NamespaceError
from ctxmem_plugin.formats import read_paths
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.namespaces import validate
from ctxmem_plugin.records import to_turn

from helpers import REPO, HashEncoder

EXAMPLES = REPO / "examples" / "chat_logs"


@pytest.fixture(autouse=True)
def fast_encoder(monkeypatch: pytest.MonkeyPatch) -> HashEncoder:
    """Every encoder the CLI opens is the fast hashing one."""
    enc = HashEncoder()
    monkeypatch.setattr(ctxmem_plugin.encoders, "SentenceEncoder", lambda model=None, **_: enc)
    return enc


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def ingested(tmp_path: Path, namespace: str = "users/maya") -> Path:
    memory = tmp_path / "mem"
    assert cli("ingest", EXAMPLES / "maya.jsonl", "--memory", memory, "-n", namespace).exit_code == 0
    return memory


def test_1_export_into_a_folder_that_does_not_exist_creates_it(tmp_path: Path) -> None:
    memory = ingested(tmp_path)
    out = tmp_path / "backups" / "2026" / "all.jsonl"
    result = cli("export", "--memory", memory, out)
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 54


def test_2_a_failed_import_into_a_new_directory_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"namespace": ["u"], "content": "fine"}\n{oops\n')
    target = tmp_path / "new-memory"
    result = cli("import", "--memory", target, bad)
    assert result.exit_code == 2 and f"{bad}:2: invalid JSON" in result.stderr
    assert not target.exists()


def test_3_ingest_reports_progress_per_batch_and_its_wall_time(tmp_path: Path) -> None:
    log = tmp_path / "big.jsonl"
    log.write_text("".join(json.dumps({"role": "user", "content": f"message number {i} about gardens"}) + "\n" for i in range(600)))
    steps: list[int] = []
    with ContextMemory(tmp_path / "mem", encoder=HashEncoder()) as memory:
        report = memory.ingest(read_paths([log]), ("u",), progress=steps.append)
    assert report.added == 600
    assert len(steps) >= 3 and sum(steps) == 600  # one file, yet the bar moves several times
    result = cli("ingest", log, "--memory", tmp_path / "mem2", "-n", "u")
    assert result.exit_code == 0 and "loading the encoder..." in result.stderr
    assert re.search(r"in \d+\.\ds \(\d+ turns/s; \d+\.\ds with start-up\)", result.stdout)
    summary = json.loads(cli("ingest", log, "--memory", tmp_path / "mem3", "-n", "u", "--json").stdout)
    assert summary["wall_seconds"] >= summary["seconds"]


def test_4_a_memory_opened_twice_in_one_process_fails_at_once_and_async_with_works(tmp_path: Path) -> None:
    with ContextMemory(tmp_path, encoder=HashEncoder()):
        with pytest.raises(MemoryLockedError, match="already open for writing in this process"):
            ContextMemory(tmp_path, encoder=HashEncoder(), lock_timeout=600)  # refused, not waited for

    async def use() -> int:
        async with ContextMemory(tmp_path, encoder=HashEncoder()) as memory:
            await memory.aadd({"role": "user", "content": "hello"}, ("u",))
            return len(await memory.alist_turns(("u",)))

    assert asyncio.run(use()) == 1
    # A failed open releases the lock: a memory of a newer schema is refused, then a good open works.
    with sqlite3.connect(tmp_path / "memory.sqlite3") as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(CtxMemError, match="newer than this ctxmem-plugin understands"):
        ContextMemory(tmp_path, encoder=HashEncoder())
    with sqlite3.connect(tmp_path / "memory.sqlite3") as db:
        db.execute(f"PRAGMA user_version = {version}")
    with ContextMemory(tmp_path, encoder=HashEncoder(), lock_timeout=0) as memory:
        assert memory.stats()["turns"] == 1


def test_5_skip_invalid_skips_files_that_are_not_chat_logs(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "maya.jsonl").write_bytes((EXAMPLES / "maya.jsonl").read_bytes())
    (logs / "README.md").write_text("# Our chat exports\n\nExported every night from the support tool.\n")
    strict = cli("ingest", logs, "--memory", tmp_path / "strict", "-n", "u")
    assert strict.exit_code == 2 and "README.md:1: not a recognised chat log" in strict.stderr
    result = cli("ingest", logs, "--memory", tmp_path / "mem", "-n", "u", "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert "ingested 54 turns from 2 file(s)" in result.stdout
    assert f"skipped: {logs / 'README.md'}:1: not a recognised chat log" in result.stderr


def test_6_an_empty_namespace_is_named_with_the_nearest_ones(tmp_path: Path) -> None:
    memory = ingested(tmp_path)
    query = cli("query", "dog", "--memory", memory, "-n", "users/mya")
    assert query.exit_code == 0
    assert query.stdout == "no memories found: nothing is stored under users/mya; nearest namespaces: users/maya\n"
    forget = cli("forget", "--memory", memory, "-n", "users/mya", "--yes")
    assert forget.exit_code == 0 and "nothing to forget: nothing is stored under users/mya" in forget.stdout
    export = cli("export", "--memory", memory, tmp_path / "out.jsonl", "-n", "users/mya")
    assert export.exit_code == 2 and "nearest namespaces: users/maya" in export.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_7_query_truncates_a_long_turn_in_text_but_not_in_json(tmp_path: Path) -> None:
    memory = tmp_path / "mem"
    log = tmp_path / "long.jsonl"
    log.write_text(json.dumps({"role": "user", "content": "gardens " * 100_000}) + "\n")
    assert cli("ingest", log, "--memory", memory, "-n", "u").exit_code == 0
    text = cli("query", "gardens", "--memory", memory, "-n", "u").stdout
    assert len(text) < 1000 and "[800,000 characters; --json for all]" in text
    hits = json.loads(cli("query", "gardens", "--memory", memory, "-n", "u", "--json").stdout)
    assert len(hits[0]["text"]) == 800_000


def test_8_a_turn_without_a_speaker_is_shown_by_its_role(tmp_path: Path) -> None:
    with ContextMemory(tmp_path, encoder=HashEncoder()) as memory:
        memory.add([{"role": "assistant", "content": "The vet is on Friday."}], ("u",))
        (hit,) = memory.search("vet Friday", ("u",), k=1)
    assert hit.speaker == "assistant"
    assert "None" not in cli("query", "vet", "--memory", tmp_path, "-n", "u").stdout


def test_9_messages_show_namespaces_as_paths_and_plain_words() -> None:
    with pytest.raises(NamespaceError) as caught:
        validate(("people", ""))
    assert str(caught.value) == "namespace 'people/' has an empty label"
    with pytest.raises(InputError) as bad_role:
        to_turn({"role": "wizard", "content": "hi"})
    assert "Value error" not in str(bad_role.value) and "unknown role 'wizard'" in str(bad_role.value)
    broken = CliRunner().invoke(main, ["query", "x", "--memory", "nowhere", "--filter", '{"a": "\x01"}'])
    assert broken.exit_code == 2 and " at at " not in broken.stderr and "at column" in broken.stderr


def test_10_an_ingest_that_added_nothing_reports_no_rate(tmp_path: Path) -> None:
    memory = ingested(tmp_path)
    again = json.loads(cli("ingest", EXAMPLES / "maya.jsonl", "--memory", memory, "-n", "users/maya", "--json").stdout)
    assert (again["added"], again["turns_per_second"]) == (0, 0.0)


def test_11_the_readme_memory_directories_are_ignored_by_git() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    # What a user runs as it is: the first set-up command and the Python quickstart.
    first = next(line for line in readme.splitlines() if "ctxmem-plugin ingest examples/chat_logs" in line)
    made = set(re.findall(r"--memory \./([\w-]+)", first)) | set(re.findall(r'ContextMemory\("\./([\w-]+)"\)', readme))
    assert made >= {"mem"}, made
    patterns = [line.strip().rstrip("/") for line in (REPO / ".gitignore").read_text().splitlines() if line.strip()]
    for name in made:
        assert any(fnmatch.fnmatch(name, p.lstrip("/")) for p in patterns), f"{name}/ is not in .gitignore"
