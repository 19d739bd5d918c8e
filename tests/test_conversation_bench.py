"""The conversational benchmark's threads and scores, and the non-learned history methods."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ctxmem_plugin.errors import InputError
from ctxmem_plugin.evaluation.conversation import (
    DEPTHS,
    EVAL_WORDING,
    KINDS,
    build_threads,
    cell_of,
    decay_weights,
    decayed_query_vector,
    recall_at,
    recall_table,
)
from ctxmem_plugin.retrieval.history import concat_query
from ctxmem_plugin.retrieval.text import query_terms
from ctxmem_plugin.training.data import Conversation, load_conversations

TOPICS = ["violin", "garden", "marathon", "pottery", "camping", "painting", "adoption", "bakery", "chess", "sailing"]


def _locomo(tmp_path: Path) -> Path:
    """A LoCoMo-shaped file: one conversation, a turn and a question per topic, turns apart."""
    turns, qa = [], []
    for i, topic in enumerate(TOPICS):
        turns.append({"speaker": "Ann", "dia_id": f"D1:{2 * i + 1}", "text": f"I started {topic} lessons last week."})
        turns.append({"speaker": "Bo", "dia_id": f"D1:{2 * i + 2}", "text": "Oh nice, tell me more!"})
        qa.append({"question": f"When was the {topic}?", "answer": f"week {i}", "evidence": [f"D1:{2 * i + 1}"], "category": 2})
    sample = {"sample_id": "conv-t", "qa": qa,
              "conversation": {"speaker_a": "Ann", "speaker_b": "Bo", "session_1_date_time": "1:56 pm on 8 May, 2023", "session_1": turns}}
    path = tmp_path / "t.json"
    path.write_text(json.dumps([sample]))
    return path


@pytest.fixture
def conv(tmp_path: Path) -> Conversation:
    (c,) = load_conversations([_locomo(tmp_path)])
    return c


def _check_thread_properties(conv: Conversation, threads) -> None:
    evidence_texts = {conv.turns[p].turn.content for _, ev in conv.questions for p in ev}
    for th in threads:
        question, evidence = conv.questions[th.question]
        assert th.evidence == frozenset(evidence)
        # The answer turns (the evidence) are never said in the thread: only questions,
        # gold answers and small talk are.
        assert not any(t.content in evidence_texts for t in th.turns)
        if th.kind == "self-contained":
            assert th.query == question and th.referent is None and th.depth is None
            assert question not in [t.content for t in th.turns]
            continue
        # The referent is the question, said by the user, with exactly ``depth`` turns after it.
        assert th.turns[th.referent].content == question and th.turns[th.referent].role == "user"
        assert len(th.turns) - 1 - th.referent == th.depth
        assert th.turns.count(th.turns[th.referent]) == 1
        if th.kind == "none":
            assert th.query in EVAL_WORDING.none
        else:  # the partial query carries one word of the question
            assert set(query_terms(th.query)) & set(query_terms(question)) - {"thing"}
        after = th.turns[th.referent + 1 :]
        if th.kind == "switch":
            # Another question follows the referent: the last turns are not about it.
            others = [t for t in after if t.role == "user" and "?" in t.content]
            assert len(others) == 1 and others[0].content != question
        elif th.depth:
            assert after[0].content == str(conv.answers[th.question])  # the assistant's answer first
            assert all(t.content in EVAL_WORDING.user_small_talk + EVAL_WORDING.assistant_small_talk for t in after[1:])
        # Other topics' evidence is neither the target's nor next to it.
        asked = [q for q, _ in conv.questions]
        for t in th.turns:
            if t.content in asked and t.content != question:
                i = asked.index(t.content)
                gap = min(abs(a - b) for a in conv.questions[i][1] for b in evidence)
                assert gap > 2


def test_threads_put_the_referent_at_its_depth_and_never_say_the_answer_turn(conv: Conversation) -> None:
    threads = build_threads(conv)
    assert len(threads) == 15 * len(conv.questions)
    cells = {cell_of(t) for t in threads}
    assert cells == {f"{k}/{d}" for k in ("none", "partial") for d in DEPTHS} | {f"switch/{d}" for d in DEPTHS[1:]} | {"self-contained"}
    _check_thread_properties(conv, threads)
    # Deterministic for a seed, different for another.
    assert build_threads(conv) == threads and build_threads(conv, seed=1) != threads
    assert len(build_threads(conv, questions=3)) == 45


def test_threads_of_the_dev_file_hold_the_same_properties(locomo_dev: Path) -> None:
    for conv in load_conversations([locomo_dev]):
        threads = build_threads(conv, questions=20)
        assert {t.kind for t in threads} == set(KINDS)
        _check_thread_properties(conv, threads)


def test_threads_need_questions_and_answers(conv: Conversation) -> None:
    from dataclasses import replace

    with pytest.raises(InputError, match="gold answer"):
        build_threads(replace(conv, answers=[]))
    with pytest.raises(InputError, match="no labelled questions"):
        build_threads(replace(conv, questions=[], answers=[]))


def test_recall_table_by_cell_and_depth_group(conv: Conversation) -> None:
    threads = build_threads(conv, questions=2)
    perfect = [np.array(sorted(t.evidence)) for t in threads]
    wrong = [np.array([99]) for _ in threads]
    # Half right: the evidence found for the first question's threads only.
    half = [perfect[i] if t.question == threads[0].question else wrong[i] for i, t in enumerate(threads)]
    table = recall_table(threads, {"p": perfect, "w": wrong, "h": half}, ks=(1, 10))
    assert table["p"]["all"]["recall@1"] == 1.0 and table["w"]["all"]["recall@10"] == 0.0
    assert table["h"]["none/3"] == {"count": 2.0, "recall@1": 0.5, "recall@10": 0.5}
    assert table["h"]["follow-ups/2-4"]["count"] == 2 * (3 + 3 + 3)
    assert table["h"]["switch/0-1"]["count"] == 2 and "switch/0" not in table["h"]
    assert recall_at(np.array([5, 1, 3]), {1, 3}, 2) == 0.5
    # "balanced": the three groups counted once each, however many threads each holds.
    only_self = [perfect[i] if t.kind == "self-contained" else wrong[i] for i, t in enumerate(threads)]
    balanced = recall_table(threads, {"s": only_self})["s"]
    assert balanced["self-contained"]["recall@10"] == 1.0 and balanced["follow-ups/2-4"]["recall@10"] == 0.0
    assert balanced["balanced"]["recall@10"] == pytest.approx(1 / 3)
    assert balanced["all"]["recall@10"] < 1 / 3  # the benchmark holds 14 follow-ups per self-contained thread
    with pytest.raises(InputError, match="rankings"):
        recall_table(threads, {"p": perfect[:-1]})


def test_concat_query_keeps_the_last_k_turns_then_the_query() -> None:
    history = ["a", "b", "c"]
    for k in range(6):
        want = "\n".join(history[max(0, 3 - k) :][:k] + ["q"]) if k else "q"
        assert concat_query("q", history, k) == want
    assert concat_query("q", [], 3) == "q"
    with pytest.raises(InputError):
        concat_query("q", history, -1)


def test_decayed_query_vector_is_the_brute_force_sum() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=8).astype(np.float32)
    turns = rng.normal(size=(4, 8)).astype(np.float32)
    for decay in (0.0, 0.3, 0.5, 1.0):
        weights = [decay ** (3 - i) if (3 - i) else 1.0 for i in range(4)]
        m = sum(w * t for w, t in zip(weights, turns)) / sum(weights)
        want = q / np.linalg.norm(q) + m / np.linalg.norm(m)
        assert np.allclose(decayed_query_vector(q, turns, decay), want / np.linalg.norm(want), atol=1e-6)
        assert np.isclose(decay_weights(4, decay).sum(), 1.0)
    # Decay 0 is the last turn alone; an empty thread leaves the query's direction.
    assert np.allclose(decay_weights(3, 0.0), [0, 0, 1])
    assert np.allclose(decayed_query_vector(q, np.zeros((0, 8)), 0.5), q / np.linalg.norm(q))
    with pytest.raises(InputError):
        decay_weights(2, 1.5)
