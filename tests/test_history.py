"""Conversational search: ``search(query, namespace, history=...)`` and the ways it uses the thread."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import HashEncoder

from ctxmem_plugin.errors import InputError
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.retrieval.history import CONCAT_TURNS, DEFAULT_HISTORY_MODE, FUSE_K, concat_query, fuse_rankings

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
    hits = memory.search(query, ("u", "history"), k=5, history=THREAD, history_mode="concat")
    # The brute-force reference: the same search for the joined text.
    joined = concat_query(query, [m["content"] for m in THREAD], CONCAT_TURNS)
    assert _ranked(hits) == _ranked(memory.search(joined, ("u", "history"), k=5))
    assert hits[0].text == HISTORY[0]  # the thread says what "she" is
    # The same for every method (BM25 sees the joined text too).
    for method in ("bm25", "dense"):
        assert _ranked(memory.search(query, ("u", "history"), k=5, history=THREAD, method=method, history_mode="concat")) == _ranked(
            memory.search(joined, ("u", "history"), k=5, method=method)
        )
    # Only the last CONCAT_TURNS turns are joined.
    long = [{"role": "user", "content": f"filler turn {i}"} for i in range(10)] + THREAD
    assert concat_query(query, [m["content"] for m in long], CONCAT_TURNS).count("filler") == CONCAT_TURNS - len(THREAD)
    assert _ranked(memory.search(query, ("u", "history"), k=5, history=long, history_mode="concat")) == _ranked(
        memory.search(concat_query(query, [m["content"] for m in long[-CONCAT_TURNS:]], CONCAT_TURNS), ("u", "history"), k=5)
    )


def _fused_by_hand(memory: ContextMemory, query: str, joined: str, space: tuple[str, ...], k: int, offset: int,
                   method: str = "hybrid") -> list[tuple[int, float]]:
    """Reciprocal rank fusion written out: each plain search's top 2(k+offset), 1/(60+rank) per list."""
    depth = 2 * (k + offset)
    scores: dict[int, float] = {}
    for text in (query, joined):
        for rank, hit in enumerate(memory.search(text, space, k=depth, method=method), start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1 / (60 + rank)
    best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[offset : offset + k]
    return [(i, round(v, 6)) for i, v in best]


def test_fuse_is_the_default_and_merges_the_query_alone_with_the_joined_text(memory: ContextMemory) -> None:
    assert DEFAULT_HISTORY_MODE == "fuse" and FUSE_K == 60
    query = "and where does she play?"
    joined = concat_query(query, [m["content"] for m in THREAD], CONCAT_TURNS)
    hits = memory.search(query, ("u", "history"), k=5, history=THREAD)
    assert _ranked(hits) == _fused_by_hand(memory, query, joined, ("u", "history"), 5, 0)
    assert _ranked(memory.search(query, ("u", "history"), k=5, history=THREAD, history_mode="fuse")) == _ranked(hits)
    assert hits[0].text == HISTORY[0]  # found by both searches: it leads
    assert hits[0].signals["fuse"]["rank_alone"] >= 1 and hits[0].signals["fuse"]["rank_with_thread"] == 1
    for method in ("bm25", "dense"):
        got = memory.search(query, ("u", "history"), k=4, history=THREAD, method=method)
        assert _ranked(got) == _fused_by_hand(memory, query, joined, ("u", "history"), 4, 0, method)
    # Paging: offset skips the best fused hits; pages put together are one longer search.
    page1 = memory.search(query, ("u", "history"), k=3, history=THREAD)
    page2 = memory.search(query, ("u", "history"), k=3, offset=3, history=THREAD)
    assert _ranked(page2) == _fused_by_hand(memory, query, joined, ("u", "history"), 3, 3)
    assert [h.id for h in page1] == [h.id for h in hits[:3]]
    assert not {h.id for h in page1} & {h.id for h in page2}


def test_fuse_keeps_a_question_that_needs_no_thread_found(memory: ContextMemory) -> None:
    # The thread is about the cello; the question is about something else entirely.
    question = "what does the bakery on Main Street sell?"
    alone = memory.search(question, ("u", "history"), k=1)
    assert alone[0].text == HISTORY[3]
    fused = memory.search(question, ("u", "history"), k=2, history=THREAD)
    assert HISTORY[3] in [h.text for h in fused]


def test_fuse_never_shows_another_namespace(memory: ContextMemory) -> None:
    memory.add([{"role": "user", "content": "Ana plays the cello at the opera house."}], ("other", "history"))
    memory.add(THREAD, ("u", "thread"))
    for history in (THREAD, ("u", "thread"), ("other", "history")):
        for method in ("hybrid", "bm25", "dense"):
            hits = memory.search("and where does she play?", ("u", "history"), k=10, history=history, method=method)
            assert hits and all(h.namespace == ("u", "history") for h in hits)


def test_fuse_rankings_adds_both_terms_and_orders_ties_by_id() -> None:
    fused = fuse_rankings([5, 3, 9], [3, 7])
    assert [i for i, _ in fused] == [3, 5, 7, 9]  # 3 is in both; 5 and 7 tie at rank 1 and 2... by score, then id
    assert fused[0][1] == 1 / 62 + 1 / 61
    assert dict(fused)[5] == 1 / 61 and dict(fused)[7] == 1 / 62
    assert fuse_rankings([1, 2], [2, 1]) == fuse_rankings([2, 1], [1, 2])  # symmetric: a tie is ordered by id
    assert fuse_rankings([], []) == []


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
