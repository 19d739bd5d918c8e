"""The thread pointer: what it reads, what it points at, how it is saved, trained and used in search."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ctxmem_plugin.errors import CheckpointError, InputError
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.reranker.checkpoint import (
    POINTER_CONFIG,
    POINTER_WEIGHTS,
    load_thread_pointer,
    save_model,
    save_thread_pointer,
)
from ctxmem_plugin.reranker.runtime import RuntimeSettings
from ctxmem_plugin.reranker.thread import (
    TURN_COLUMNS,
    ThreadPointer,
    ThreadPointerConfig,
    pointed_exchange,
    thread_features,
)
from ctxmem_plugin.retrieval.history import concat_query
from ctxmem_plugin.training.data import load_conversations
from ctxmem_plugin.training.threads import TRAIN_WORDING, make_threads, train_thread_pointer
from ctxmem_plugin.training.trainer import TrainConfig, build_model

from conftest import REPO, HashEncoder

COL = {name: j for j, name in enumerate(TURN_COLUMNS)}
LOGS = REPO / "examples" / "chat_logs"


def _features(turns: list[tuple[str, str]], query: str, slots: int = 4) -> tuple[np.ndarray, np.ndarray]:
    enc = HashEncoder(32, "hash-32")
    vectors = enc.encode([text for _, text in turns]) if turns else np.zeros((0, 32), np.float32)
    return thread_features(query, enc.encode_query(query), [t for _, t in turns], [r for r, _ in turns], vectors, slots)


def test_slots_hold_the_latest_turns_right_aligned_with_their_age() -> None:
    turns = [("user", "the violin concert"), ("assistant", "in May"), ("user", "ok")]
    f, g = _features(turns, "and the violin?")
    assert f.shape == (4, len(TURN_COLUMNS) + 4) and not f[0].any()  # one empty slot, first
    ages = f[1:, len(TURN_COLUMNS):]
    assert np.array_equal(ages, np.eye(4)[[2, 1, 0]])  # the latest turn is age 0, in the last row
    assert f[1, COL["own_overlap"]] == 1.0 and f[2, COL["own_overlap"]] == 0.0
    assert (f[1, COL["user"]], f[2, COL["assistant"]]) == (1.0, 1.0)
    # Only the user's later turns say the talk moved on: the answer after the violin does not.
    assert f[1, COL["longest_user_after"]] == f[3, COL["length"]]
    # Older turns than M are dropped; a word said in two turns belongs to neither alone.
    many = [("user", f"turn {i} violin") for i in range(6)]
    f, g = _features(many, "and the violin?")
    assert f[:, len(TURN_COLUMNS):].sum() == 4 and not f[:, COL["own_overlap"]].any() and f[:, COL["overlap"]].all()
    assert g[-1] == 1.0  # the null slot's bias
    _, back = _features(turns, "what did she say about it?")
    _, plain = _features(turns, "violin concert date")
    assert back[3] == 1.0 and plain[3] == 0.0  # refers_back


def test_the_pointer_never_points_at_an_empty_slot_and_null_means_none() -> None:
    pointer = ThreadPointer(ThreadPointerConfig(slots=4, hidden=8))
    turns = [("user", "the violin concert"), ("assistant", "in May")]
    f, g = _features(turns, "and the violin?")
    with torch.no_grad():
        pointer.turn[-1].bias.fill_(5.0)  # every turn likelier than null
        pointer.null.bias.fill_(-5.0)
    assert pointer.point(f, g) in (0, 1)
    logp = pointer(torch.from_numpy(f)[None], torch.from_numpy(g)[None], torch.from_numpy(np.abs(f).sum(1) > 0)[None])
    assert torch.isinf(logp[0, 1:3]).all() and torch.isclose(logp.exp().sum(), torch.tensor(1.0))
    with torch.no_grad():
        pointer.null.bias.fill_(50.0)
    assert pointer.point(f, g) is None


def test_the_pointed_exchange_adds_the_assistants_reply() -> None:
    pointer = ThreadPointer(ThreadPointerConfig(slots=4, hidden=8))
    enc = HashEncoder(32, "hash-32")
    texts, roles = ["the violin concert", "in May", "thanks", "sure"], ["user", "assistant", "user", "assistant"]
    vecs = enc.encode(texts)
    with torch.no_grad():  # point at the oldest slot only (age 3)
        pointer.turn[-1].weight.zero_()
        pointer.turn[-1].bias.zero_()
        pointer.null.bias.fill_(-50.0)
    for age, want in ((3, [0, 1]), (1, [2, 3]), (0, [3])):
        with torch.no_grad():
            pointer.turn[0].weight.zero_()
            pointer.turn[0].bias.zero_()
            pointer.turn[0].weight[0, len(TURN_COLUMNS) + age] = 10.0
            pointer.turn[-1].weight[0, 0] = 1.0
        assert pointed_exchange(pointer, "and?", enc.encode_query("and?"), texts, roles, vecs) == want


def test_save_and_load_give_the_same_pointer(tmp_path: Path) -> None:
    assert load_thread_pointer(tmp_path) is None  # a model trained before the pointer
    torch.manual_seed(0)
    pointer = ThreadPointer(ThreadPointerConfig(slots=4, hidden=8))
    save_thread_pointer(pointer, tmp_path)
    again = load_thread_pointer(tmp_path)
    assert again is not None and again.config == pointer.config
    f, g = _features([("user", "the violin concert"), ("assistant", "in May")], "and the violin?")
    x = (torch.from_numpy(f)[None], torch.from_numpy(g)[None], torch.from_numpy(np.abs(f).sum(1) > 0)[None])
    torch.testing.assert_close(again(*x), pointer(*x))
    # A pointer reading other feature columns, a corrupt file, a lone file: refused, all named.
    doc = json.loads((tmp_path / POINTER_CONFIG).read_text())
    doc["columns"]["turn"] = ["cosine"]
    (tmp_path / POINTER_CONFIG).write_text(json.dumps(doc))
    (tmp_path / POINTER_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="reads features") as err:
        load_thread_pointer(tmp_path)
    assert "not a valid safetensors" in str(err.value) and "does not match" in str(err.value)
    (tmp_path / POINTER_WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match=f"missing file {POINTER_WEIGHTS}"):
        load_thread_pointer(tmp_path)


def test_self_supervised_threads_point_at_their_referent() -> None:
    convs = load_conversations([LOGS])
    threads = [th for c in convs for th in make_threads(c, random.Random(0), 60, slots=8)]
    assert {th.kind for th in threads} == {"none", "partial", "switch", "self-contained"}
    small_talk = set(TRAIN_WORDING.user_small_talk + TRAIN_WORDING.assistant_small_talk)
    for th in threads:
        assert len(th.turns) <= 8
        if th.referent is None:
            assert th.kind == "self-contained" and th.depth is None
            continue
        after = th.turns[th.referent + 1 :]
        assert th.turns[th.referent].role == "user" and len(after) == th.depth
        if th.kind == "none":  # after the referent: the assistant's replies and small talk only
            assert th.query in TRAIN_WORDING.none
            assert all(t.role == "assistant" or t.content in small_talk for t in after)
        elif th.kind == "switch":  # another topic came up after it
            assert any(t.role == "user" and t.content not in small_talk for t in after)


def test_a_trained_pointer_in_search_joins_the_pointed_exchange(tmp_path: Path) -> None:
    convs = load_conversations([LOGS])
    encoder = HashEncoder()
    pointer, log = train_thread_pointer(convs, encoder, seed=0, per_conversation=80)
    assert log["threads"] > 100 and log["train_accuracy"] > 0.5
    cfg = TrainConfig(epochs=1, num_slots=4, hidden=16, write_chunk=4, members=1)
    save_model(build_model(encoder.dim, encoder.name, cfg), tmp_path / "m",
               extra={"runtime": RuntimeSettings(pool=10, write_chunk=4, focus_pool=2).to_dict()})
    save_thread_pointer(pointer, tmp_path / "m")
    thread = [{"role": "user", "content": "I adopted a greyhound called Comet last spring"},
              {"role": "assistant", "content": "Comet is a lovely name"}, {"role": "user", "content": "thanks!"}]
    history = ["Comet the greyhound loves the beach", "The bakery sells sourdough", "Our cat sleeps on the piano"]
    with ContextMemory(tmp_path / "mem", encoder=encoder, model=tmp_path / "m") as mem:
        assert mem.reranker is not None and mem.reranker.pointer is not None
        mem.add([{"role": "user", "content": t} for t in history], ("u", "history"))
        query = "what was that again?"
        hits = mem.search(query, ("u", "history"), k=3, history=thread)
        assert [h.id for h in hits] == [h.id for h in mem.search(query, ("u", "history"), k=3, history=thread,
                                                                 history_mode="pointer")]  # auto = pointer
        # The brute-force reference: the pointed exchange joined to the query, no focus.
        q = encoder.encode_query(query)
        said = pointed_exchange(pointer, query, q, [m["content"] for m in thread], [m["role"] for m in thread],
                                encoder.encode([f"{m['role']}: {m['content']}" for m in thread]))
        assert said  # this follow-up leans on the thread
        text = concat_query(query, [thread[i]["content"] for i in said], len(said))
        assert [(h.id, round(h.score, 5)) for h in hits] == [(h.id, round(h.score, 5)) for h in _no_focus(mem, text)]
        # Stored, the same thread gives the same search.
        mem.add(thread, ("u", "now"))
        stored = mem.search(query, ("u", "history"), k=3, history=("u", "now"))
        assert [(h.id, round(h.score, 5)) for h in stored] == [(h.id, round(h.score, 5)) for h in hits]
    with ContextMemory(tmp_path / "plain", encoder=encoder) as plain, pytest.raises(InputError, match="thread pointer"):
        plain.search("q", ("u",), history=thread, history_mode="pointer")


def _no_focus(mem: ContextMemory, text: str) -> list:  # noqa: ANN001
    """The re-ranked search for ``text`` with no focus at all: what ``pointer`` and ``concat`` run."""
    return mem.search(text, ("u", "history"), k=3, history=("u", "nothing-here"), history_mode="slots")
