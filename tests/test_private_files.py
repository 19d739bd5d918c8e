"""A memory holds users' conversations: its directory and files are its owner's alone, and
``forget`` says when another reader keeps the forgotten text on disk (issue 25, defects 5, 8)."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import ctxmem_plugin.encoders
import ctxmem_plugin.storage.sqlite
from ctxmem_plugin.cli import main
from ctxmem_plugin.memory import ContextMemory

from helpers import HashEncoder

SECRET = "the-launch-code-is-7731"


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)  # the usual default: files readable by everyone unless made otherwise
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_memory_and_its_database_files_are_owner_only(tmp_path: Path, umask_022: None) -> None:
    memory = tmp_path / "parent" / "mem"
    with ContextMemory(memory, encoder=HashEncoder()) as mem:
        mem.add([{"content": SECRET}, {"content": "another turn"}], ("u",))
        assert mode(memory) == 0o700
        for name in ("memory.sqlite3", "memory.sqlite3-wal", "memory.sqlite3-shm", "writer.lock"):
            assert mode(memory / name) == 0o600, name
        from ctxmem_plugin.formats.portable import export_jsonl

        export_jsonl(mem, tmp_path / "out" / "backup.jsonl")
    assert mode(tmp_path / "out" / "backup.jsonl") == 0o600
    assert mode(memory / "memory.sqlite3") == 0o600


def test_forget_says_when_a_reader_keeps_the_text_in_the_log_and_a_rerun_clears_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = HashEncoder()
    monkeypatch.setattr(ctxmem_plugin.encoders, "SentenceEncoder", lambda model=None, **_: encoder)
    real_connect = sqlite3.connect
    # The store waits up to 2 s for readers before giving up on clearing the log; a test waits less.
    monkeypatch.setattr(ctxmem_plugin.storage.sqlite.sqlite3, "connect", lambda *a, **k: real_connect(*a, **{**k, "timeout": 0.2}))
    memory = tmp_path / "mem"
    with ContextMemory(memory, encoder=encoder) as mem:
        mem.add([{"content": SECRET}], ("secret",))
        mem.add([{"content": "keep this"}], ("other",))
    reader = real_connect(memory / "memory.sqlite3", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM turns").fetchone()  # a read transaction, as a searching process holds
    try:
        result = CliRunner().invoke(main, ["forget", "--memory", str(memory), "-n", "secret", "--yes"])
        assert result.exit_code == 1, result.output
        assert result.stdout == "forgot 1 turns under secret\n"
        (line,) = result.stderr.splitlines()
        assert line.startswith("Error: another process is reading") and "run this command again" in line
    finally:
        reader.execute("COMMIT")
        reader.close()
    again = CliRunner().invoke(main, ["forget", "--memory", str(memory), "-n", "secret", "--yes"])
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("nothing to forget")
    for path in memory.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path.name


def test_what_a_reader_kept_from_forget_is_scrubbed_by_the_next_writer_to_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_connect = sqlite3.connect
    monkeypatch.setattr(ctxmem_plugin.storage.sqlite.sqlite3, "connect", lambda *a, **k: real_connect(*a, **{**k, "timeout": 0.2}))
    memory = tmp_path / "mem"
    with ContextMemory(memory, encoder=HashEncoder()) as mem:
        mem.add([{"content": f"{SECRET} {i}"} for i in range(20)], ("secret",))
        mem.add([{"content": "keep this"}], ("other",))
    reader = real_connect(memory / "memory.sqlite3", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM turns").fetchone()
    try:
        with ContextMemory(memory, encoder=HashEncoder()) as mem:
            assert mem.forget(("secret",)) == 20
            assert mem.store.scrub_pending  # the reader keeps the log: not done
    finally:
        reader.execute("COMMIT")
        reader.close()
    with ContextMemory(memory, encoder=HashEncoder()) as mem:  # no forget again: opening finishes it
        assert not mem.store.scrub_pending
        for path in memory.iterdir():
            assert SECRET.encode() not in path.read_bytes(), path.name
        assert [t.content for t in mem.list_turns(())] == ["keep this"]
