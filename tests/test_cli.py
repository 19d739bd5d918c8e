"""The ``ctxmem-plugin`` CLI: help and docs in sync, idempotent ingest, JSON outputs, export/import.

Most tests swap the embedding model for the fast :class:`HashEncoder` (the CLI builds its
encoder through ``ctxmem_plugin.encoder.SentenceEncoder``); the ``slow`` ones run the real
default model once per module, through the real CLI.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner, Result

import ctxmem_plugin.encoders
from ctxmem_plugin.cli import main
from ctxmem_plugin.formats import read_log
from ctxmem_plugin.memory import ContextMemory

from helpers import REPO, HashEncoder

EXAMPLES = REPO / "examples" / "chat_logs"
CLI_DOC = REPO / "docs" / "cli.md"


class CountingEncoder(HashEncoder):
    """A HashEncoder that counts the texts it embeds (to prove what is, and is not, re-encoded)."""

    def __init__(self) -> None:
        super().__init__()
        self.texts = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += len(texts)
        return super().encode(texts)


@pytest.fixture
def encoder(monkeypatch: pytest.MonkeyPatch) -> CountingEncoder:
    """Every encoder the CLI opens (default model or ``--encoder DIR``) is this fast fake."""
    enc = CountingEncoder()
    monkeypatch.setattr(ctxmem_plugin.encoders, "SentenceEncoder", lambda model=None, **_: enc)
    return enc


def cli(*args: str | Path, code: int = 0) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def cli_json(*args: str | Path) -> object:
    return json.loads(cli(*args).stdout)


def commands(group: click.Group = main, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command under ``group``, groups included, as ``(name path, command)``."""
    found: list[tuple[tuple[str, ...], click.Command]] = [(path, group)]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


def doc_sections() -> dict[str, str]:
    """docs/cli.md split at ``## `ctxmem-plugin ...` `` headings, keyed by the command path."""
    sections: dict[str, str] = {}
    current = None
    for line in CLI_DOC.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"##\s+`ctxmem-plugin\s*([a-z ]*?)\s*(?:[A-Z].*)?`", line.strip())
        if heading:
            current = heading[1].strip()
            sections[current] = line + "\n"  # the heading names the arguments
        elif line.startswith("## "):
            current = None
        elif current is not None:
            sections[current] += line + "\n"
    return sections


# -- help and docs ------------------------------------------------------------------------


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in commands()])
def test_every_command_has_help_and_a_docs_section_listing_its_options(path: str) -> None:
    command = dict((" ".join(p), c) for p, c in commands())[path]
    result = cli(*path.split(), "--help")
    assert (command.help or "").strip(), f"{path or 'the root group'} has no help text"
    assert " ".join(command.help.split("\n\n")[0].split()) in " ".join(result.stdout.split())
    sections = doc_sections()
    assert path in sections, f"docs/cli.md has no '## `ctxmem-plugin {path}`' section"
    documented = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", sections[path]))
    options = {name for param in command.params if isinstance(param, click.Option)
               for name in (*param.opts, *param.secondary_opts) if name.startswith("--") and name != "--help"}
    assert options - documented == set(), f"options of '{path}' missing from docs/cli.md"
    for param in command.params:
        if isinstance(param, click.Argument):
            assert param.human_readable_name in sections[path], f"argument {param.name} of '{path}' undocumented"


def test_help_does_not_import_torch_or_sentence_transformers() -> None:
    script = """
import sys, json
from click.testing import CliRunner
from ctxmem_plugin.cli import main
def paths(group, prefix):
    yield prefix
    for name, command in group.commands.items():
        yield from paths(command, [*prefix, name]) if hasattr(command, "commands") else [[*prefix, name]]
runner = CliRunner()
codes = [runner.invoke(main, [*p, "--help"]).exit_code for p in paths(main, [])]
heavy = sorted(m for m in ("torch", "sentence_transformers", "transformers", "faiss") if m in sys.modules)
print(json.dumps({"codes": codes, "heavy": heavy}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report["codes"]) == {0} and len(report["codes"]) == len(commands())
    assert report["heavy"] == []


def test_errors_are_one_line_on_stderr_with_exit_code_2(tmp_path: Path) -> None:
    for args in (["query", "x", "--memory", tmp_path / "none"], ["stats", "--memory", tmp_path / "none"],
                 ["forget", "--memory", tmp_path / "none", "--namespace", "a"],
                 ["export", "--memory", tmp_path / "none", tmp_path / "out.jsonl"],
                 ["ingest", EXAMPLES, "--memory", tmp_path / "m", "--format", "csv"],
                 ["query", "x", "--memory", tmp_path, "-k", "0"], ["nonsense"]):
        result = cli(*args, code=2)
        assert result.stdout == "" and "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        if args[0] == "nonsense" or "-k" in args:  # click's own usage errors add Usage and Try lines
            lines = [line for line in lines if line.startswith("Error: ")]
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert not (tmp_path / "none").exists() and not (tmp_path / "m").exists()


# -- ingest, query, stats, forget (fast encoder) --------------------------------------------


def test_reingest_adds_nothing_and_embeds_nothing(tmp_path: Path, encoder: CountingEncoder) -> None:
    mem = tmp_path / "mem"
    turns = sum(len(read_log(p).turns) for p in EXAMPLES.iterdir())
    first = cli_json("ingest", EXAMPLES, "--memory", mem, "--namespace", "demo", "--json")
    assert (first["files"], first["turns"], first["added"], first["duplicates"]) == (2, turns, turns, 0)
    assert encoder.texts == turns
    db_before = (mem / "memory.sqlite3").stat().st_size
    for _ in range(2):
        again = cli_json("ingest", EXAMPLES, "--memory", mem, "--namespace", "demo", "--json")
        assert (again["added"], again["duplicates"], again["skipped"]) == (0, turns, 0)
    assert encoder.texts == turns
    assert cli_json("stats", "--memory", mem, "--json")["namespaces"] == {"demo": turns}
    assert (mem / "memory.sqlite3").stat().st_size == db_before
    # A single file of the directory is the same turns again: still nothing new.
    assert cli_json("ingest", EXAMPLES / "maya.jsonl", "--memory", mem, "--namespace", "demo", "--json")["added"] == 0


def test_ingest_prints_a_summary_line_with_the_rate(tmp_path: Path, encoder: CountingEncoder) -> None:
    result = cli("ingest", EXAMPLES / "maya.jsonl", "--memory", tmp_path, "-n", "maya")
    turns = len(read_log(EXAMPLES / "maya.jsonl").turns)
    assert re.fullmatch(
        rf"ingested {turns} turns from 1 file\(s\) into maya \(0 already present, 0 invalid skipped\) "
        r"in \d+\.\ds \(\d+ turns/s; \d+\.\ds with start-up\)\n", result.stdout,
    ), result.stdout


def test_ingest_rate_does_not_count_loading_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class SlowToLoad(HashEncoder):
        """Loads its model on first use, as SentenceEncoder does."""

        loaded = False

        @property
        def dim(self) -> int:
            if not self.loaded:
                time.sleep(1.0)
                self.loaded = True
            return 64

        @dim.setter
        def dim(self, value: int) -> None:
            pass

    monkeypatch.setattr(ctxmem_plugin.encoders, "SentenceEncoder", lambda model=None, **_: SlowToLoad())
    summary = cli_json("ingest", EXAMPLES / "maya.jsonl", "--memory", tmp_path, "--json")
    assert summary["added"] > 0 and summary["seconds"] < 0.5, summary


def test_split_conversations_puts_each_file_in_its_own_namespace(tmp_path: Path, encoder: CountingEncoder) -> None:
    cli("ingest", EXAMPLES, "--memory", tmp_path, "-n", "demo", "--split-conversations")
    counts = cli_json("stats", "--memory", tmp_path, "--json")["namespaces"]
    assert counts == {f"demo/{p.stem}": len(read_log(p).turns) for p in EXAMPLES.iterdir()}


def test_query_json_parses_and_stays_in_its_namespace(tmp_path: Path, encoder: CountingEncoder) -> None:
    cli("ingest", EXAMPLES / "maya.jsonl", "--memory", tmp_path, "-n", "users/maya")
    cli("ingest", EXAMPLES / "book_club.txt", "--memory", tmp_path, "-n", "users/club")
    hits = cli_json("query", "Pretzel corgi dog name", "--memory", tmp_path, "-n", "users/maya", "-k", "4", "--json")
    assert isinstance(hits, list) and len(hits) == 4
    assert all(set(h) >= {"id", "score", "namespace", "speaker", "role", "timestamp", "text", "metadata", "signals"}
               for h in hits)
    assert {h["namespace"] for h in hits} == {"users/maya"}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert any("Her name is Pretzel" in h["text"] for h in hits)
    everywhere = cli_json("query", "Miso cat dumplings", "--memory", tmp_path, "-k", "50", "--json")
    assert {h["namespace"] for h in everywhere} == {"users/maya", "users/club"}
    assert cli_json("query", "Miso", "--memory", tmp_path, "-n", "users/nobody", "--json") == []
    assert cli("query", "Miso", "--memory", tmp_path, "-n", "users/nobody").stdout == (
        "no memories found: nothing is stored under users/nobody; nearest namespaces: users/maya, users/club\n"
    )


def test_query_asked_in_a_conversation(tmp_path: Path, encoder: CountingEncoder) -> None:
    cli("ingest", EXAMPLES / "maya.jsonl", "--memory", tmp_path, "-n", "users/maya")
    thread = tmp_path / "thread.json"
    thread.write_text(json.dumps([{"role": "user", "content": "What is the name of Maya's corgi?"},
                                  {"role": "assistant", "content": "Let me look."}]))
    query = ["query", "and what breed?", "--memory", tmp_path, "-n", "users/maya", "-k", "3", "--json"]
    with_file = cli_json(*query, "--history", thread)
    # The same search as with the thread's messages given to the library.
    with ContextMemory(tmp_path, encoder=encoder, read_only=True) as memory:
        want = memory.search("and what breed?", ("users", "maya"), k=3, history=json.loads(thread.read_text()))
    assert [h["id"] for h in with_file] == [h.id for h in want]  # type: ignore[union-attr]
    assert any("Pretzel" in h["text"] for h in with_file)  # type: ignore[union-attr]
    cli("ingest", thread, "--memory", tmp_path, "-n", "users/maya-now")
    stored = cli_json(*query, "--history-namespace", "users/maya-now")
    assert [h["id"] for h in stored] == [h["id"] for h in with_file]  # type: ignore[union-attr, index]
    both = cli(*query, "--history", thread, "--history-namespace", "users/maya-now", code=2)
    assert "not both" in both.output


def test_query_text_output_ranks_hits(tmp_path: Path, encoder: CountingEncoder) -> None:
    cli("ingest", EXAMPLES / "book_club.txt", "--memory", tmp_path, "-n", "club")
    lines = cli("query", "What did Elif vote for?", "--memory", tmp_path, "-k", "3").stdout.splitlines()
    assert len(lines) == 3 and [line.split(".")[0].strip() for line in lines] == ["1", "2", "3"]
    assert any("Piranesi" in line for line in lines)
    assert all(line.rstrip().endswith("]") and "[club; " in line for line in lines)


def test_query_filter_and_method_options(tmp_path: Path, encoder: CountingEncoder) -> None:
    with ContextMemory(tmp_path, encoder=encoder) as mem:
        mem.add([{"content": f"note {i} about tea", "metadata": {"n": i}} for i in range(6)], ("u",))
    hits = cli_json("query", "tea", "--memory", tmp_path, "--filter", '{"n": {"$gte": 4}}', "--method", "bm25", "--json")
    assert sorted(h["metadata"]["n"] for h in hits) == [4, 5]
    bad = cli("query", "tea", "--memory", tmp_path, "--filter", "{nope", code=2)
    assert bad.stderr.startswith("Error: --filter: invalid JSON")


def test_stats_json_counts_per_namespace(tmp_path: Path, encoder: CountingEncoder) -> None:
    with ContextMemory(tmp_path, encoder=encoder) as mem:
        for space, n in [(("a",), 3), (("a", "x"), 2), (("b",), 5)]:
            mem.add([{"content": f"{space} message {i}"} for i in range(n)], space)
    info = cli_json("stats", "--memory", tmp_path, "--json")
    assert info["namespaces"] == {"a": 3, "a/x": 2, "b": 5} and info["turns"] == 10
    assert (info["encoder"], info["dim"]) == (encoder.name, encoder.dim)
    assert info["files"]["memory.sqlite3"] > 0 and info["bytes"] >= sum(info["files"].values())
    assert info["bytes_per_turn"] == round(info["bytes"] / 10, 1) and info["ram_bytes_per_turn"] > 0
    text = cli("stats", "--memory", tmp_path).stdout.splitlines()
    assert text[0].startswith(f"{tmp_path}: 10 turns") and text[2:] == ["  a: 3", "  a/x: 2", "  b: 5"]
    assert text[1].startswith("per turn: ") and "B on disk" in text[1]


def test_upgrade_brings_an_older_memory_to_the_current_schema(tmp_path: Path, encoder: CountingEncoder) -> None:
    cli("ingest", EXAMPLES, "--memory", tmp_path, "--namespace", "demo")
    before = cli_json("query", "Maya dog", "--memory", tmp_path, "--namespace", "demo", "--method", "bm25", "--json")
    # Undo migrations 003 and 002: the memory as ctxmem-plugin wrote it before per-namespace BM25.
    import sqlite3

    db = sqlite3.connect(tmp_path / "memory.sqlite3", isolation_level=None)
    for statement in ("DROP TABLE turns_nsfts_instance", "DROP TABLE turns_nsfts", "DROP TRIGGER turns_ann_ad",
                      "DROP TABLE ann_cells", "DROP TABLE ann_centroids",
                      "DROP TRIGGER turns_stats_ai", "DROP TRIGGER turns_stats_ad", "DROP TRIGGER turns_stats_au",
                      "DROP TABLE namespace_stats", "DROP TABLE turns_fts_instance",
                      "ALTER TABLE turns DROP COLUMN n_tokens", "PRAGMA user_version = 1"):
        db.execute(statement)
    db.close()
    result = cli("stats", "--memory", tmp_path, code=1)
    assert "schema version 1 predates" in result.output and "ctxmem-plugin upgrade --memory DIR" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert cli("upgrade", "--memory", tmp_path).stdout.strip() == f"{tmp_path}: storage schema version 3, current"
    after = cli_json("query", "Maya dog", "--memory", tmp_path, "--namespace", "demo", "--method", "bm25", "--json")
    assert after == before and before  # the migrated lengths and counters score as the new ones did
    cli("upgrade", "--memory", tmp_path / "missing", code=2)


def test_forget_removes_a_namespace_prefix_only(tmp_path: Path, encoder: CountingEncoder) -> None:
    with ContextMemory(tmp_path, encoder=encoder) as mem:
        mem.add([{"content": "secret one"}, {"content": "secret two"}], ("u1", "s1"))
        mem.add([{"content": "secret three"}], ("u1",))
        mem.add([{"content": "keep me"}], ("u10",))
    assert cli("forget", "--memory", tmp_path, "-n", "u1", "--yes").stdout == "forgot 3 turns under u1\n"
    assert cli_json("stats", "--memory", tmp_path, "--json")["namespaces"] == {"u10": 1}
    assert b"secret" not in (tmp_path / "memory.sqlite3").read_bytes()
    assert [h["text"] for h in cli_json("query", "secret", "--memory", tmp_path, "--json")] == ["keep me"]
    assert cli("forget", "--memory", tmp_path, "-n", "", code=2).stderr.startswith("Error: namespace")


# -- export / import ------------------------------------------------------------------------


def rich_turns() -> list[tuple[tuple[str, ...], dict]]:
    """Turns exercising every field, including two identical messages said twice."""
    return [
        (("u1", "s1"), {"role": "user", "speaker": "Ana", "content": "My dog is called Biscuit 🐶",
                        "timestamp": "2024-03-02T09:15:00", "metadata": {"session": 1, "tags": ["pets"]}}),
        (("u1", "s1"), {"role": "assistant", "content": "ok", "metadata": {}}),
        (("u1", "s1"), {"role": "assistant", "content": "ok", "metadata": {}}),
        (("u1", "s1"), {"role": "system", "speaker": "policy", "content": "Be brief.\nSecond line.", "key": "sys"}),
        (("u1",), {"role": "tool", "content": "weather: 12°C", "timestamp": "2024-03-03T10:00:00+01:00",
                   "metadata": {"nested": {"a": [1, 2.5, None, True]}}, "key": "weather"}),
        (("u2",), {"role": "user", "speaker": "Bo", "content": "I moved to Porto", "metadata": {"n": 0}}),
    ]


def rows(memory_dir: Path, encoder: HashEncoder) -> list[tuple]:
    with ContextMemory(memory_dir, encoder=encoder, read_only=True) as mem:
        return [(t.namespace, t.role, t.speaker, t.content, t.timestamp, t.metadata, t.key) for t in mem.list_turns()]


def build(memory_dir: Path, encoder: HashEncoder) -> None:
    with ContextMemory(memory_dir, encoder=encoder) as mem:
        for space, turn in rich_turns():
            mem.add(turn, space)


@pytest.mark.parametrize("with_vectors", [False, True])
def test_export_import_round_trips_every_field(tmp_path: Path, encoder: CountingEncoder, with_vectors: bool) -> None:
    build(tmp_path / "src", encoder)
    out = tmp_path / "dump.jsonl"
    flag = ["--with-vectors"] if with_vectors else []
    assert cli("export", "--memory", tmp_path / "src", out, *flag).stdout == f"exported 6 turns to {out}\n"
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert all(("vector" in r) == with_vectors for r in records)
    encoder.texts = 0
    assert cli("import", "--memory", tmp_path / "dst", out).stdout == f"imported 6 turns (0 already present) from {out}\n"
    assert encoder.texts == (0 if with_vectors else 6)  # vectors in the file are reused, not re-encoded
    assert rows(tmp_path / "dst", encoder) == rows(tmp_path / "src", encoder)
    with ContextMemory(tmp_path / "src", encoder=encoder, read_only=True) as a, \
            ContextMemory(tmp_path / "dst", encoder=encoder, read_only=True) as b:
        assert np.array_equal(a.store.vectors(a.store.all_ids().tolist(), encoder.dim),
                              b.store.vectors(b.store.all_ids().tolist(), encoder.dim))
        query = "what is the dog called?"
        assert [(h.text, round(h.score, 5)) for h in a.search(query, k=6)] == \
               [(h.text, round(h.score, 5)) for h in b.search(query, k=6)]
    assert cli("import", "--memory", tmp_path / "dst", out).stdout == f"imported 0 turns (6 already present) from {out}\n"
    assert len(rows(tmp_path / "dst", encoder)) == 6


def test_export_namespace_prefix(tmp_path: Path, encoder: CountingEncoder) -> None:
    build(tmp_path / "src", encoder)
    out = tmp_path / "u1.jsonl"
    cli("export", "--memory", tmp_path / "src", out, "--namespace", "u1")
    assert {tuple(json.loads(line)["namespace"]) for line in out.read_text().splitlines()} == {("u1",), ("u1", "s1")}
    cli("export", "--memory", tmp_path / "src", out, "--namespace", "u1/s1")
    assert len(out.read_text().splitlines()) == 4


def test_import_of_a_bad_file_changes_nothing(tmp_path: Path, encoder: CountingEncoder) -> None:
    build(tmp_path / "mem", encoder)
    before = rows(tmp_path / "mem", encoder)
    bad = tmp_path / "bad.jsonl"
    good = json.dumps({"namespace": ["u3"], "role": "user", "content": "fine"})
    for text, message in [
        (f"{good}\n{{oops\n", f"{bad}:2: invalid JSON"),
        (f'{good}\n{{"namespace": ["u3"], "role": "user"}}\n', f"{bad}:2: expected an object with 'namespace' and 'content'"),
        (f'{good}\n{{"namespace": ["a/b"], "content": "x"}}\n', f"{bad}:2: namespace label 'a/b' contains '/'"),
        (f'{good}\n{{"namespace": [], "content": "x"}}\n', f"{bad}:2: namespace must have at least one label"),
        (f'{good}\n{{"namespace": 7, "content": "x"}}\n', f"{bad}:2: "),
        (f'{good}\n{{"namespace": ["u3"], "content": "x", "role": "wizard"}}\n', f"{bad}:2: unknown role 'wizard'"),
        (f'{good}\n{{"namespace": ["u3"], "content": "x", "vector": 5, "encoder": "hash-64"}}\n', f"{bad}:2: vector"),
    ]:
        bad.write_text(text, encoding="utf-8")
        result = cli("import", "--memory", tmp_path / "mem", bad, code=2)
        assert result.stderr.startswith(f"Error: {message}"), result.stderr
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    bad.write_bytes(good.encode() + b'\n{"namespace": ["u3"], "content": "caf\xe9"}\n')
    result = cli("import", "--memory", tmp_path / "mem", bad, code=2)
    assert result.stderr.startswith(f"Error: {bad}:2: not valid UTF-8"), result.stderr
    assert rows(tmp_path / "mem", encoder) == before


# -- eval -----------------------------------------------------------------------------------


def test_eval_locomo_json_prints_exactly_one_json_object(tmp_path: Path, encoder: CountingEncoder) -> None:
    turns = ["I adopted a corgi called Pretzel.", "Lovely name!", "I work at a bakery.", "Since when?",
             "Since 2019, I open at five.", "Early!"]
    sample = {
        "sample_id": "conv-t",
        "conversation": {
            "speaker_a": "Ann", "speaker_b": "Bo", "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [{"speaker": ("Ann", "Bo")[i % 2], "dia_id": f"D1:{i + 1}", "text": t}
                          for i, t in enumerate(turns)],
        },
        "qa": [
            {"question": "What is Ann's dog called?", "answer": "Pretzel", "evidence": ["D1:1"], "category": 4},
            {"question": "Where does Ann work?", "answer": "a bakery", "evidence": ["D1:3", "D1:5"], "category": 1},
        ],
    }
    path = tmp_path / "loco.json"
    path.write_text(json.dumps([sample]), encoding="utf-8")
    result = cli("eval", "locomo", path, "--json", "--k", "1,3")
    assert len(result.stdout.strip().splitlines()) == 1
    report = json.loads(result.stdout)
    assert report["questions"] == 2
    assert set(report["methods"]) >= {"bm25", "dense", "hybrid"}
    for values in report["methods"].values():
        assert set(values) >= {"recall@1", "hit@1", "recall@3", "hit@3"}
        assert all(0.0 <= v <= 1.0 for v in values.values())
    assert report["methods"]["bm25"]["hit@1"] == 1.0  # both questions name a word only their evidence holds
    table = cli("eval", "locomo", path, "--k", "1,3").stdout.splitlines()
    assert table[0] == "2 questions" and table[1].split() == ["method", "recall@1", "hit@1", "recall@3", "hit@3"]
    assert cli("eval", "locomo", path, "--k", "0", code=2).stderr.startswith("Error: --k")


# -- the real default model, through the real CLI (one ingest per module) --------------------


@pytest.fixture(scope="module")
def real_memory(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """examples/chat_logs ingested twice with the default model: the memory and both summaries."""
    mem = tmp_path_factory.mktemp("real") / "mem"
    summaries = [cli_json("ingest", EXAMPLES, "--memory", mem, "--namespace", "demo", "--json") for _ in range(2)]
    return mem, summaries


@pytest.mark.slow
def test_real_model_reingest_adds_nothing(real_memory: tuple[Path, list[dict]]) -> None:
    mem, (first, second) = real_memory
    assert first["added"] == first["turns"] > 0 and first["duplicates"] == 0
    assert second["added"] == 0 and second["duplicates"] == first["turns"]
    info = cli_json("stats", "--memory", mem, "--json")
    assert info["namespaces"] == {"demo": first["turns"]} and info["encoder"] == "all-MiniLM-L6-v2"


@pytest.mark.slow
def test_real_model_query_finds_the_answer(real_memory: tuple[Path, list[dict]]) -> None:
    mem, _ = real_memory
    hits = cli_json("query", "What is the name of Maya's dog?", "--memory", mem, "-n", "demo", "-k", "3", "--json")
    assert any(h["text"].startswith("Her name is Pretzel") for h in hits), [h["text"] for h in hits]
    hits = cli_json("query", "What book did the club pick for May?", "--memory", mem, "-k", "3", "--json")
    assert any("Piranesi" in h["text"] for h in hits), [h["text"] for h in hits]


def test_train_then_query_and_explain_with_the_model(tmp_path: Path, encoder: CountingEncoder) -> None:
    out = tmp_path / "model"
    result = cli("train", EXAMPLES, "--out", out, "--epochs", "2", "--cues", "30")
    assert "trained 2 epochs of 3 member(s)" in result.stdout
    log = json.loads((out / "train_log.json").read_text())
    assert len(log["epochs"]) == 2 and log["data"]["examples"] > 0 and log["files"] == [str(EXAMPLES)]
    assert log["config"]["members"] == 3 and len(log["epochs"][-1]["member_losses"]) == 3
    assert json.loads((out / "config.json").read_text())["model"]["members"] == 3
    cli("train", EXAMPLES, "--out", out, "--epochs", "3", "--cues", "30", "--resume")
    assert len(json.loads((out / "train_log.json").read_text())["epochs"]) == 3
    mem = tmp_path / "mem"
    cli("ingest", EXAMPLES / "maya.jsonl", "--memory", mem, "--namespace", "maya", "--model", out)
    hits = cli_json("query", "Maya dog name", "--memory", mem, "--namespace", "maya", "--model", out, "--json")
    assert hits and all("ctxmem" in h["signals"] for h in hits)
    info = cli_json("explain", "Maya dog name", "--memory", mem, "--namespace", "maya", "--model", out, "--json")
    assert abs(sum(info["attention"]) - 1.0) < 1e-4 and info["top_slots"]
    cli("train", EXAMPLES, "--out", tmp_path / "none", "--resume", code=2)


def test_the_cli_reference_is_generated_from_the_commands_help() -> None:
    from ctxmem_plugin.cli.reference import render

    assert CLI_DOC.read_text(encoding="utf-8") == render(), (
        "docs/cli.md is out of date: python -m ctxmem_plugin.cli.reference > docs/cli.md"
    )
