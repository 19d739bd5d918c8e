"""Answer-type marks: what a query asks for, what a turn holds, and their feature columns."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import HashEncoder

from ctxmem_plugin import answer_types
from ctxmem_plugin.answer_types import answer_features, query_marks, turn_marks
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.retrieval import FEATURE_NAMES


@pytest.mark.parametrize(
    ("query", "marks"),
    [
        ("When did Caroline go to the LGBTQ support group?", (1.0, 0.0)),
        ("What year did Jon open his studio?", (1.0, 0.0)),
        ("How long ago was Melanie's trip?", (1.0, 1.0)),
        ("How many children does Melanie have?", (0.0, 1.0)),
        ("how often does she run", (0.0, 1.0)),
        ("What is the name of Maya's dog?", (0.0, 0.0)),
        ("Whenever I ask, what does he cook?", (0.0, 0.0)),  # "whenever" is not "when"
    ],
)
def test_query_marks(query: str, marks: tuple[float, float]) -> None:
    assert query_marks(query) == marks


@pytest.mark.parametrize(
    ("content", "marks"),
    [
        ("I went to a support group yesterday.", (1.0, 0.0, 0.0)),
        ("We moved here two years ago", (1.0, 1.0, 0.0)),
        ("Last weekend we painted the fence", (1.0, 0.0, 0.0)),
        ("My sister visits in May.", (1.0, 0.0, 0.0)),
        ("You may like it, I think.", (0.0, 0.0, 0.0)),  # the verb, not the month
        ("I have 3 kids and a dog", (0.0, 1.0, 0.0)),
        ("Did you like the concert?", (0.0, 0.0, 1.0)),
        ("Back in 2019, on Friday 5/12?", (1.0, 1.0, 1.0)),
        ("That sounds lovely!", (0.0, 0.0, 0.0)),
    ],
)
def test_turn_marks(content: str, marks: tuple[float, float, float]) -> None:
    assert turn_marks(content) == marks


def test_answer_features_are_the_marks_and_their_products() -> None:
    row = dict(zip(answer_types.FEATURE_NAMES, answer_features("When did she move?", "She moved 2 years ago"), strict=True))
    assert row == {"query_asks_time": 1.0, "query_asks_count": 0.0, "turn_has_time": 1.0, "turn_has_number": 1.0,
                   "turn_is_question": 0.0, "time_match": 1.0, "count_match": 0.0}
    row = dict(zip(answer_types.FEATURE_NAMES, answer_features("How many dogs?", "Two dogs, did I say?"), strict=True))
    assert (row["time_match"], row["count_match"], row["turn_is_question"]) == (0.0, 1.0, 1.0)


def test_retrieval_features_carry_the_marks_of_each_candidate(tmp_path: Path) -> None:
    assert FEATURE_NAMES[-len(answer_types.FEATURE_NAMES):] == answer_types.FEATURE_NAMES
    texts = ["I went to the support group yesterday.", "The support group was lovely, want to come?",
             "I cooked soup for the support group"]
    with ContextMemory(tmp_path / "m", encoder=HashEncoder()) as mem:
        ids = mem.add([{"role": "user", "content": t} for t in texts], ("u",))
        query = "When did she go to the support group?"
        cands = mem.retriever.candidates(query, mem.encoder.encode_query(query), ("u",))
    col = {name: FEATURE_NAMES.index(name) for name in answer_types.FEATURE_NAMES}
    row = {int(i): cands.features[j] for j, i in enumerate(cands.ids)}
    assert set(row) == set(ids)
    assert [row[i][col["time_match"]] for i in ids] == [1.0, 0.0, 0.0]
    assert [row[i][col["turn_is_question"]] for i in ids] == [0.0, 1.0, 0.0]
    assert all(row[i][col["query_asks_time"]] == 1.0 and row[i][col["query_asks_count"]] == 0.0 for i in ids)
