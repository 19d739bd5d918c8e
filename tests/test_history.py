"""Conversational search: ``search(query, namespace, history=...)`` and the ways it uses the thread."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import HashEncoder

from ctxmem_plugin.errors import InputError
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.retrieval.history import CONCAT_TURNS, DEFAULT_HISTORY_MODE, concat_query

HISTORY = [
    "My sister Ana plays the cello in an orchestra.",
    "I bought a red bicycle last spring.",
    "We went camping by the lake in June.",
    "The bakery on Main Street sells sourdough.",
    "Our cat Tofu sleeps on the piano.",
    "I am learning to sail on weekends.",
    "The garden has tomatoes and basil now.",
]
THREAD = [
    {"role": "user", "content": "Who plays the cello?"},
    {"role": "assistant", "content": "Your sister Ana does."},
    {"role": "user", "content": "thanks"},
]


@pytest.fixture
def memory(tmp_path: Path):
    with ContextMemory(tmp_path / "m", encoder=HashEncoder()) as mem:
        mem.add([{"role": "user", "content": t} for t in HISTORY], ("u", "history"))
        yield mem


def _ranked(hits) -> list[tuple[int, float]]:
    return [(h.id, round(h.score, 6)) for h in hits]


def test_no_history_or_an_empty_one_is_plain_search(memory: ContextMemory) -> None:
    plain = memory.search("and where does she play?", ("u",), k=5)
    for empty in (None, [], ()):
        assert _ranked(memory.search("and where does she play?", ("u",), k=5, history=empty)) == _ranked(plain)


def test_concat_searches_the_last_turns_joined_to_the_query(memory: ContextMemory) -> None:
    query = "and where does she play?"
    hits = memory.search(query, ("u", "history"), k=5, history=THREAD)
    # The brute-force reference: the same search for the joined text.
    joined = concat_query(query, [m["content"] for m in THREAD], CONCAT_TURNS)
    assert _ranked(hits) == _ranked(memory.search(joined, ("u", "history"), k=5))
    assert hits[0].text == HISTORY[0]  # the thread says what "she" is
    # "auto" is concat, the default, and it is the same for every method (BM25 sees the joined text too).
    assert DEFAULT_HISTORY_MODE == "concat"
    assert _ranked(memory.search(query, ("u", "history"), k=5, history=THREAD, history_mode="concat")) == _ranked(hits)
    for method in ("bm25", "dense"):
        assert _ranked(memory.search(query, ("u", "history"), k=5, history=THREAD, method=method)) == _ranked(
            memory.search(joined, ("u", "history"), k=5, method=method)
        )
    # Only the last CONCAT_TURNS turns are joined.
    long = [{"role": "user", "content": f"filler turn {i}"} for i in range(10)] + THREAD
    assert concat_query(query, [m["content"] for m in long], CONCAT_TURNS).count("filler") == CONCAT_TURNS - len(THREAD)
    assert _ranked(memory.search(query, ("u", "history"), k=5, history=long)) == _ranked(
        memory.search(concat_query(query, [m["content"] for m in long[-CONCAT_TURNS:]], CONCAT_TURNS), ("u", "history"), k=5)
    )


def test_a_stored_thread_is_read_from_its_namespace(memory: ContextMemory) -> None:
    memory.add(THREAD, ("u", "thread"))
    query = "and where does she play?"
    stored = memory.search(query, ("u", "history"), k=5, history=("u", "thread"))
    assert _ranked(stored) == _ranked(memory.search(query, ("u", "history"), k=5, history=THREAD))
    assert _ranked(memory.search(query, ("u", "history"), k=5, history="u/thread")) == _ranked(stored)
    # A thread namespace with nothing in it is no thread.
    assert _ranked(memory.search(query, ("u", "history"), k=5, history=("u", "empty"))) == _ranked(
        memory.search(query, ("u", "history"), k=5)
    )


def test_context_uses_the_history(memory: ContextMemory) -> None:
    text = memory.context("and where does she play?", ("u", "history"), max_tokens=20, k=1, history=THREAD)
    assert text.endswith(HISTORY[0])


def test_bad_history_is_an_input_error(memory: ContextMemory) -> None:
    with pytest.raises(InputError, match="not one message"):
        memory.search("q", ("u",), history={"role": "user", "content": "x"})  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"history\[1\]"):
        memory.search("q", ("u",), history=[{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}])
    with pytest.raises(InputError, match="history_mode"):
        memory.search("q", ("u",), history=THREAD, history_mode="magic")
    with pytest.raises(InputError, match="trained model"):
        memory.search("q", ("u",), history=THREAD, history_mode="slots")
