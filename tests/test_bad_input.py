"""Bad input through the CLI: one line naming file:line and what was expected, exit code 2, and
the memory left exactly as it was (unless ``--skip-invalid``, which keeps the valid records).

Every bad input on its own is a case of the hostile input corpus (``tests/data/bad/``, run by
``test_hostile_inputs.py``); these tests are about what surrounds it: ``--skip-invalid``,
directories of mixed files, new memories that must not be created."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import ctxmem_plugin.encoders
from ctxmem_plugin.cli import main
from ctxmem_plugin.errors import NamespaceError
from ctxmem_plugin.memory import ContextMemory

from helpers import REPO, HashEncoder

MAYA = REPO / "examples" / "chat_logs" / "maya.jsonl"


@pytest.fixture(autouse=True)
def fast_encoder(monkeypatch: pytest.MonkeyPatch) -> HashEncoder:
    enc = HashEncoder()
    monkeypatch.setattr(ctxmem_plugin.encoders, "SentenceEncoder", lambda model=None, **_: enc)
    return enc


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result: Result, start: str, *expected: str) -> str:
    """Exit code 2, nothing on stdout, exactly one ``Error: ...`` line on stderr, no traceback."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: {start}"), lines[0]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def snapshot(memory: Path) -> dict[str, object]:
    """Everything a write could change: the files, the bytes of the database and the index, and
    the rows and meta read back through SQLite."""
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(memory.iterdir())
              if p.is_file() and p.suffix not in (".sqlite3-wal", ".sqlite3-shm") and p.name != "writer.lock"}
    db = sqlite3.connect(f"file:{memory / 'memory.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT * FROM turns ORDER BY id").fetchall()
        meta = db.execute("SELECT * FROM meta ORDER BY key").fetchall()
    finally:
        db.close()
    return {"files": digest, "rows": rows, "meta": meta}


@pytest.fixture
def memory(tmp_path: Path) -> Path:
    """A memory that already holds maya.jsonl under ``maya``."""
    mem = tmp_path / "mem"
    result = cli("ingest", MAYA, "--memory", mem, "--namespace", "maya")
    assert result.exit_code == 0, result.output
    return mem


def jsonl(*records: object) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


GOOD = [{"role": "user", "content": "I planted tomatoes today."}, {"role": "assistant", "content": "How many?"}]

# name -> (file name, content, line named in the error, what the message must say, valid records)
RECORD_ERRORS = {
    "malformed JSON line": ("chat.jsonl", jsonl(GOOD[0]) + b'{"role": "user", "content": \n' + jsonl(GOOD[1]), 2,
                            ["malformed JSON line", "expected one JSON value per line"], 2),
    "no content": ("chat.jsonl", jsonl(GOOD[0], {"role": "user"}, GOOD[1]), 2,
                   ["message has no 'content'; expected a string"], 2),
    "unknown role": ("chat.jsonl", jsonl(GOOD[0], GOOD[1], {"role": "wizard", "content": "abracadabra"}), 3,
                     ["unknown role 'wizard'; expected one of user, assistant, system, tool"], 2),
    "10 MB message": ("chat.jsonl", jsonl(GOOD[0], {"role": "user", "content": "x" * 10_000_000}, GOOD[1]), 2,
                      ["message has 10,000,000 characters; at most 1,000,000"], 2),
    "transcript line without speaker": ("chat.txt", b"just words\nAna: hello\n", 1, ["expected 'Speaker: text'"], 1),
}
FILE_ERRORS = {
    "empty file": ("chat.jsonl", b"\n   \n", 1, ["file is empty"]),
    "non-UTF-8 bytes": ("chat.jsonl", jsonl(GOOD[0]) + b'{"role": "user", "content": "caf\xe9"}\n', 2,
                        ["not valid UTF-8: byte 0xe9", "expected UTF-8 text"]),
    "non-UTF-8 transcript": ("chat.txt", b"Ana: hello\nBo: \xff\xfe\n", 2, ["not valid UTF-8: byte 0xff"]),
}


@pytest.mark.parametrize("case", sorted(RECORD_ERRORS))
def test_skip_invalid_keeps_the_valid_records_and_says_what_was_skipped(tmp_path: Path, memory: Path, case: str) -> None:
    name, content, line, expected, valid = RECORD_ERRORS[case]
    path = tmp_path / name
    path.write_bytes(content)
    result = cli("ingest", path, "--memory", memory, "-n", "garden", "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert f"ingested {valid} turns from 1 file(s) into garden (0 already present, 1 invalid skipped)" in result.stdout
    skipped = [line for line in result.stderr.splitlines() if line != "loading the encoder..."]
    assert len(skipped) == 1 and skipped[0].startswith(f"skipped: {path}:{line}: ") and expected[0] in skipped[0]
    counts = json.loads(cli("stats", "--memory", memory, "--json").stdout)["namespaces"]
    assert counts["garden"] == valid
    # The summary as JSON lists the same, and re-running adds nothing.
    again = json.loads(cli("ingest", path, "--memory", memory, "-n", "garden", "--skip-invalid", "--json").stdout)
    assert (again["added"], again["duplicates"], again["skipped"]) == (0, valid, 1)
    assert len(again["invalid"]) == 1 and again["invalid"][0].startswith(f"{path}:{line}: ")


@pytest.mark.parametrize("case", sorted(FILE_ERRORS))
@pytest.mark.parametrize("skip", [False, True])
def test_unreadable_file_fails_even_when_skipping(tmp_path: Path, memory: Path, case: str, skip: bool) -> None:
    name, content, line, expected = FILE_ERRORS[case]
    path = tmp_path / name
    path.write_bytes(content)
    before = snapshot(memory)
    flags = ["--skip-invalid"] if skip else []
    assert_one_line_error(cli("ingest", path, "--memory", memory, "-n", "garden", *flags), f"{path}:{line}: ", *expected)
    assert snapshot(memory) == before


def test_bad_input_into_a_new_memory_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes(RECORD_ERRORS["unknown role"][1])
    target = tmp_path / "new-mem"
    assert_one_line_error(cli("ingest", path, "--memory", target), f"{path}:3: ", "unknown role")
    assert not target.exists()


def mixed_directory(root: Path) -> Path:
    logs = root / "logs"
    (logs / "sub").mkdir(parents=True)
    (logs / "a.jsonl").write_bytes(jsonl(*GOOD))
    (logs / "b.txt").write_text("Ana: my bike is red\nBo: nice\n", encoding="utf-8")
    (logs / "sub" / "c.jsonl").write_bytes(jsonl(GOOD[0], {"role": "user", "content": "ok"}, {"role": "oracle", "content": "x"}))
    (logs / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")  # not a log file: passed over
    (logs / "table.csv").write_text("a,b\n1,2\n")
    (logs / ".hidden.json").write_text("{not json")
    return logs


def test_directory_with_mixed_files(tmp_path: Path, memory: Path) -> None:
    logs = mixed_directory(tmp_path)
    before = snapshot(memory)
    bad = logs / "sub" / "c.jsonl"
    assert_one_line_error(cli("ingest", logs, "--memory", memory, "-n", "mixed"), f"{bad}:3: ", "unknown role 'oracle'")
    assert snapshot(memory) == before  # a.jsonl and b.txt were valid, but nothing is written
    result = cli("ingest", logs, "--memory", memory, "-n", "mixed", "--skip-invalid", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["files"], summary["added"], summary["skipped"]) == (3, 6, 1)
    assert summary["invalid"] == [f"{bad}:3: unknown role 'oracle'; expected one of user, assistant, system, tool"]
    counts = json.loads(cli("stats", "--memory", memory, "--json").stdout)["namespaces"]
    assert counts["mixed"] == 6


def test_unknown_format(tmp_path: Path, memory: Path) -> None:
    before = snapshot(memory)
    line = assert_one_line_error(cli("ingest", MAYA, "--memory", memory, "--format", "csv"), "unknown format 'csv'")
    assert all(name in line for name in ("openai", "langchain", "sharegpt", "locomo", "transcript"))
    assert snapshot(memory) == before
    assert not (tmp_path / "other").exists()
    assert_one_line_error(cli("ingest", MAYA, "--memory", tmp_path / "other", "--format", "xml"), "unknown format")
    assert not (tmp_path / "other").exists()


def test_forced_format_that_does_not_fit(tmp_path: Path, memory: Path) -> None:
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(GOOD))
    before = snapshot(memory)
    assert_one_line_error(cli("ingest", path, "--memory", memory, "--format", "sharegpt"), f"{path}:", "ShareGPT")
    assert snapshot(memory) == before


@pytest.mark.parametrize("namespace", ["", "a//b", "/a", "a/", " ", "a/\tb"])
def test_bad_namespace_label(tmp_path: Path, memory: Path, namespace: str) -> None:
    before = snapshot(memory)
    assert_one_line_error(cli("ingest", MAYA, "--memory", memory, "--namespace", namespace), "namespace")
    assert_one_line_error(cli("forget", "--memory", memory, "--namespace", namespace), "namespace")
    assert snapshot(memory) == before
    if namespace:  # the empty prefix is "everything" for reads
        assert_one_line_error(cli("query", "dog", "--memory", memory, "--namespace", namespace), "namespace")


def test_label_containing_a_slash_is_refused_by_the_api(tmp_path: Path, memory: Path, fast_encoder: HashEncoder) -> None:
    before = snapshot(memory)
    with ContextMemory(memory, encoder=fast_encoder) as mem:
        for bad in [("user/42",), ("user", ""), ()]:
            with pytest.raises(NamespaceError):
                mem.add({"content": "hello"}, bad)
    assert snapshot(memory)["rows"] == before["rows"]
