"""LoCoMo loader: session order, roles, metadata, questions and evidence, on invented and real data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ctxmem_plugin.errors import FormatError
from ctxmem_plugin.formats import detect_format, read_log
from ctxmem_plugin.formats.locomo import LocomoQuestion, load_locomo, normalise_evidence

DEV = Path(__file__).resolve().parents[1].parent / "shared/data/locomo/locomo_dev.json"
DIA_ID = re.compile(r"D(\d+):(\d+)")


def _session(number: int, texts: list[str]) -> list[dict[str, object]]:
    return [{"speaker": ("Ann", "Bo")[i % 2], "dia_id": f"D{number}:{i + 1}", "text": text}
            for i, text in enumerate(texts)]


def _sample(sample_id: str = "conv-x") -> dict[str, object]:
    """An invented two-person, three-session sample; sessions stored out of numeric order."""
    session_2 = _session(2, ["I painted the fence blue.", "Looks great!"])
    session_2[0].update(img_url=["http://example.invalid/fence.jpg"], blip_caption="a blue fence",
                        query="blue fence")
    return {
        "sample_id": sample_id,
        "conversation": {
            "speaker_a": "Ann", "speaker_b": "Bo",
            "session_10_date_time": "4:05 pm on 1 June, 2023", "session_10": _session(10, ["Late news.", "Tell me!"]),
            "session_1_date_time": "1:56 pm on 8 May, 2023", "session_1": _session(1, ["Hi Bo, my cat is Tofu.", "Hi Ann!"]),
            "session_2_date_time": "9:00 am on 9 May, 2023", "session_2": session_2,
            "session_11_date_time": "10:00 am on 2 June, 2023",  # a date without a session, as in the real file
        },
        "qa": [
            {"question": "What is Ann's cat called?", "answer": "Tofu", "evidence": ["D1:1"], "category": 4},
            {"question": "Which year?", "answer": 2023, "evidence": ["D1:1; D2:1", " D 10:2"], "category": 2},
            {"question": "What colour is Bo's fence?", "evidence": ["D2:1", "D", "D:10:1"], "category": 5,
             "adversarial_answer": "blue"},
        ],
    }


def _write(tmp_path: Path, samples: list[dict[str, object]]) -> Path:
    path = tmp_path / "loco.json"
    path.write_text(json.dumps(samples, indent=2), encoding="utf-8")
    return path


def test_sessions_in_numeric_order_with_roles_times_and_metadata(tmp_path: Path) -> None:
    path = _write(tmp_path, [_sample()])
    (conversation,) = load_locomo(path)
    assert conversation.sample_id == "conv-x" and conversation.speakers == ("Ann", "Bo")
    turns = conversation.turns
    assert [t.turn.metadata["dia_id"] for t in turns] == ["D1:1", "D1:2", "D2:1", "D2:2", "D10:1", "D10:2"]
    assert [t.turn.metadata["session"] for t in turns] == [1, 1, 2, 2, 10, 10]
    assert [t.position for t in turns] == list(range(6))
    assert [(t.turn.role, t.turn.speaker) for t in turns[:2]] == [("user", "Ann"), ("assistant", "Bo")]
    assert turns[0].turn.timestamp == "2023-05-08T13:56:00" and turns[4].turn.timestamp == "2023-06-01T16:05:00"
    assert turns[2].turn.metadata == {"dia_id": "D2:1", "session": 2, "conversation": "conv-x",
                                      "image_caption": "a blue fence", "image_query": "blue fence"}
    assert all(t.conversation == "conv-x" for t in turns)
    lines = path.read_text().split("\n")
    for item in turns:  # each source line is where that turn's object starts
        start = int(item.source.rsplit(":", 1)[1])
        assert lines[start - 1].strip() == "{" and item.turn.metadata["dia_id"] in "".join(lines[start : start + 4])


def test_questions_keep_answers_as_text_and_clean_evidence(tmp_path: Path) -> None:
    (conversation,) = load_locomo(_write(tmp_path, [_sample()]))
    assert conversation.questions == [
        LocomoQuestion("What is Ann's cat called?", "Tofu", ("D1:1",), 4),
        LocomoQuestion("Which year?", "2023", ("D1:1", "D2:1", "D10:2"), 2),
        LocomoQuestion("What colour is Bo's fence?", "", ("D2:1", "D10:1"), 5, adversarial_answer="blue"),
    ]
    index = conversation.by_dia_id()
    assert index["D1:1"].turn.content == "Hi Bo, my cat is Tofu."


def test_normalise_evidence() -> None:
    assert normalise_evidence(["D8:6; D9:17", "D:11:26", " D1:3 ", "D", "d1:3", "D02:07"]) == (
        "D8:6", "D9:17", "D11:26", "D1:3", "D2:7")


def test_formats_reads_locomo_through_the_same_parser(tmp_path: Path) -> None:
    path = _write(tmp_path, [_sample("a"), _sample("b")])
    assert detect_format(path) == "locomo"
    log = read_log(path)
    by_id = {c.sample_id: c.turns for c in load_locomo(path)}
    assert log.conversations() == by_id


def test_bad_locomo_records_name_file_line(tmp_path: Path) -> None:
    sample = _sample()
    sample["conversation"]["session_2"][1]["speaker"] = "Cy"  # type: ignore[index]
    path = _write(tmp_path, [sample])
    with pytest.raises(FormatError, match=r"loco\.json:\d+: speaker 'Cy' is neither speaker_a 'Ann' nor speaker_b 'Bo'"):
        load_locomo(path)
    log = read_log(path, skip_invalid=True)
    assert len(log.turns) == 5 and len(log.skipped) == 1
    duplicate = _write(tmp_path, [_sample(), _sample()])
    with pytest.raises(FormatError, match="duplicate sample_id 'conv-x'"):
        load_locomo(duplicate)
    broken = _sample()
    broken["qa"][0]["category"] = "four"  # type: ignore[index]
    with pytest.raises(FormatError, match=r"loco\.json:\d+: question 'category' must be an integer"):
        load_locomo(_write(tmp_path, [broken]))


@pytest.mark.skipif(not DEV.exists(), reason=f"LoCoMo dev split not found at {DEV}")
def test_locomo_dev_file() -> None:
    conversations = load_locomo(DEV)
    assert len(conversations) == 7
    assert len({c.sample_id for c in conversations}) == 7
    evidence = found = 0
    for conversation in conversations:
        assert len(conversation.turns) > 100 and conversation.questions
        sessions = [t.turn.metadata["session"] for t in conversation.turns]
        assert sessions == sorted(sessions) and len(set(sessions)) > 10
        for item in conversation.turns:
            match = DIA_ID.fullmatch(item.turn.metadata["dia_id"])
            assert match and int(match[1]) == item.turn.metadata["session"]
            assert item.turn.speaker in conversation.speakers and item.turn.timestamp
        index = conversation.by_dia_id()
        for question in conversation.questions:
            assert question.question and isinstance(question.answer, str) and 1 <= question.category <= 5
            assert all(DIA_ID.fullmatch(ident) for ident in question.evidence)
            assert question.answer or question.category == 5
            evidence += len(question.evidence)
            found += sum(ident in index for ident in question.evidence)
    assert evidence > 1000 and found / evidence > 0.99  # the released file has a couple of stale ids
    assert read_log(DEV).format == "locomo"
