"""Every namespace, whatever the characters of its labels, lies inside the root range: count,
stats, export and a search of everything all see it (issue 25, defect 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import ctxmem_plugin.encoders
from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.cli import main
from ctxmem_plugin.errors import NamespaceError
from ctxmem_plugin.memory import ContextMemory

from helpers import HashEncoder

TOP = chr(0x10FFFF)
EDGE_NAMESPACES = [
    ("a",), (TOP,), (TOP + "x", "y"), (TOP * ns.MAX_LABEL_LENGTH,), (TOP * ns.MAX_LABEL_LENGTH, TOP), ("\uffff",),
    ("0",), ("~",), ("\U0001f600",), (TOP + "z",),
]


def test_labels_starting_with_the_last_code_point_are_counted_exported_and_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = HashEncoder()
    with ContextMemory(tmp_path / "mem", encoder=encoder) as mem:
        for i, space in enumerate(EDGE_NAMESPACES):
            mem.add({"content": f"note {i} about the dog"}, space)
        total = mem.store.count()
        assert total == len(EDGE_NAMESPACES)
        assert mem.stats()["turns"] == total
        assert sorted(s for s, _ in mem.namespaces()) == sorted(EDGE_NAMESPACES)
        assert sum(len(page) for page in mem.iter_turns()) == total
        assert len(mem.list_turns()) == total
        assert len(mem.search("dog", k=100, method="bm25")) == total
        assert len(mem.search("dog", k=100, method="dense")) == total
        # A prefix still holds only what is under it.
        assert {h.namespace for h in mem.search("dog", (TOP,), k=100, method="bm25")} == {(TOP,)}
        assert {h.namespace for h in mem.search("dog", (TOP * ns.MAX_LABEL_LENGTH,), k=100, method="bm25")} == {
            (TOP * ns.MAX_LABEL_LENGTH,), (TOP * ns.MAX_LABEL_LENGTH, TOP)}
    monkeypatch.setattr(ctxmem_plugin.encoders, "SentenceEncoder", lambda model=None, **_: encoder)
    out = tmp_path / "backup.jsonl"
    result = CliRunner().invoke(main, ["export", str(out), "--memory", str(tmp_path / "mem")])
    assert result.exit_code == 0, result.output
    lines = out.read_text(encoding="utf-8").splitlines()
    assert sorted(tuple(json.loads(line)["namespace"]) for line in lines) == sorted(EDGE_NAMESPACES)
    stats = json.loads(CliRunner().invoke(main, ["stats", "--memory", str(tmp_path / "mem"), "--json"]).stdout)
    assert stats["turns"] == len(EDGE_NAMESPACES)


def test_the_root_range_holds_every_key_a_valid_namespace_can_have() -> None:
    low, high = ns.prefix_range(())
    for space in EDGE_NAMESPACES:
        key = ns.to_key(space)
        assert low <= key < high
        assert low.encode() <= key.encode() < high.encode()  # the order SQLite compares them in


@pytest.mark.parametrize("label", ["\ud800", "a\udcff", "\udfff" + "b"])
def test_labels_that_are_not_valid_unicode_are_refused(label: str) -> None:
    with pytest.raises(NamespaceError, match="lone surrogate"):
        ns.validate((label,))
    with pytest.raises(NamespaceError, match="lone surrogate"):
        ns.validate(f"user/{label}")


@pytest.mark.parametrize("labels", [["", 1e20], ["ok", None], [" ", 3], ["a/b", 1]])
def test_a_label_of_the_wrong_type_is_named_before_anything_reads_the_others(labels: list[object]) -> None:
    # Found by the export reader's fuzzing: an empty label beside a number crashed joining them.
    with pytest.raises(NamespaceError, match="labels must be strings"):
        ns.validate(labels)  # type: ignore[arg-type]
