"""Chat-log readers: every format round-trips, detection picks it, bad input names file:line."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxmem_plugin.errors import FormatError, InputError
from ctxmem_plugin.formats import FORMATS, ParsedLog, detect_format, read_log, read_paths
from ctxmem_plugin.formats.document import open_document

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "chat_logs"

# (role, speaker, content, timestamp): a small conversation every writer below encodes.
CONVERSATION = [
    ("user", "Maya", "We adopted a corgi called Pretzel.", "2024-03-02T09:15:00"),
    ("assistant", "Sage", "Congratulations! How old is she?", "2024-03-02T09:16:00"),
    ("user", "Maya", "Two years old.\nShe steals socks: every single day.", "2024-03-02T09:17:00"),
    ("assistant", "Sage", "A classic corgi hobby.", "2024-03-02T09:18:00"),
]
LC_TYPES = {"user": "human", "assistant": "ai"}


def _openai(role: str, speaker: str, content: str, time: str) -> dict[str, object]:
    return {"role": role, "content": content, "speaker": speaker, "timestamp": time}


def _langchain(role: str, speaker: str, content: str, time: str) -> dict[str, object]:
    data = {"content": content, "additional_kwargs": {"timestamp": time}, "response_metadata": {},
            "type": LC_TYPES[role], "name": speaker, "id": None}
    return {"type": LC_TYPES[role], "data": data}


def _sharegpt(role: str, speaker: str, content: str, time: str) -> dict[str, object]:
    return {"from": {"user": "human", "assistant": "gpt"}[role], "value": content}


def _transcript() -> str:
    lines = ["# Chat with Sage", "", "## 2024-03-02 09:15"]
    for _, speaker, content, _ in CONVERSATION:
        first, *rest = content.split("\n")
        lines += [f"{speaker}: {first}", *rest, ""]
    return "\n".join(lines)


def _locomo() -> str:
    session = [{"speaker": speaker, "dia_id": f"D1:{i + 1}", "text": content}
               for i, (_, speaker, content, _) in enumerate(CONVERSATION)]
    sample = {"sample_id": "chat", "qa": [], "conversation": {
        "speaker_a": "Maya", "speaker_b": "Sage",
        "session_1_date_time": "9:15 am on 2 March, 2024", "session_1": session}}
    return json.dumps([sample], indent=2)


def _lines(items: list[object]) -> str:
    return "\n".join(json.dumps(item) for item in items) + "\n"


def _messages(make: Callable[..., dict[str, object]]) -> list[dict[str, object]]:
    return [make(*row) for row in CONVERSATION]


# name -> (file name, text, detected format, conversation id, whether speakers survive)
WRITERS: dict[str, tuple[str, str, str, str, bool]] = {
    "openai-array": ("chat.json", json.dumps(_messages(_openai), indent=2), "openai", "chat", True),
    "openai-object": ("chat.json", json.dumps({"messages": _messages(_openai)}), "openai", "chat", True),
    "openai-jsonl": ("chat.jsonl", _lines(_messages(_openai)), "openai", "chat", True),
    "openai-jsonl-conversation": ("chat.jsonl", _lines([{"messages": _messages(_openai)}]), "openai", "chat#1", True),
    "openai-jsonl-bare-array": ("log.json", _lines([_messages(_openai)]) + "\n", "openai", "log", True),
    "openai-parts": ("chat.json", json.dumps([{**m, "content": [{"type": "text", "text": m["content"]}]}
                                             for m in _messages(_openai)]), "openai", "chat", True),
    "langchain-array": ("dump.json", json.dumps(_messages(_langchain)), "langchain", "dump", True),
    "langchain-jsonl": ("dump.jsonl", _lines(_messages(_langchain)), "langchain", "dump", True),
    "sharegpt-array": ("sg.json", json.dumps([{"id": "c-7", "conversations": _messages(_sharegpt)}]), "sharegpt", "c-7", False),
    "sharegpt-object": ("sg.json", json.dumps({"conversations": _messages(_sharegpt)}), "sharegpt", "sg", False),
    "sharegpt-jsonl": ("sg.jsonl", _lines([{"conversations": _messages(_sharegpt)}]), "sharegpt", "sg#1", False),
    "locomo": ("loco.json", _locomo(), "locomo", "chat", True),
    "transcript": ("chat.txt", _transcript(), "transcript", "chat", True),
    "transcript-md": ("chat.md", _transcript(), "transcript", "chat", True),
}


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", sorted(WRITERS))
def test_every_format_round_trips_and_is_detected(tmp_path: Path, case: str) -> None:
    name, text, fmt, conversation, has_speakers = WRITERS[case]
    path = _write(tmp_path, name, text)
    assert detect_format(path) == fmt
    assert detect_format(Path(name), text) == fmt  # from text alone, no file read
    log = read_log(path)
    assert (log.format, log.skipped) == (fmt, [])
    assert [(t.turn.role, t.turn.content) for t in log.turns] == [(r, c) for r, _, c, _ in CONVERSATION]
    assert [t.position for t in log.turns] == list(range(len(CONVERSATION)))
    assert {t.conversation for t in log.turns} == {conversation}
    if has_speakers:
        assert [t.turn.speaker for t in log.turns] == [s for _, s, _, _ in CONVERSATION]
    if fmt in ("openai", "langchain"):
        assert [t.turn.timestamp for t in log.turns] == [time for *_, time in CONVERSATION]
    for item in log.turns:
        file, line = item.source.rsplit(":", 1)
        assert file == str(path) and 1 <= int(line) <= text.count("\n") + 1
    assert read_log(path, fmt).turns == log.turns  # explicit format gives the same result


def test_json_array_sources_point_at_the_line_where_each_element_starts(tmp_path: Path) -> None:
    text = "[\n" + ",\n".join(json.dumps(m) for m in _messages(_openai)) + "\n]\n"
    log = read_log(_write(tmp_path, "chat.json", text))
    assert [t.source for t in log.turns] == [f"{tmp_path / 'chat.json'}:{i + 2}" for i in range(4)]
    pretty = json.dumps({"messages": _messages(_openai)}, indent=2)
    lines = pretty.split("\n")
    for item in read_log(_write(tmp_path, "pretty.json", pretty)).turns:
        start = int(item.source.rsplit(":", 1)[1])
        assert lines[start - 1].strip() == "{"
        assert json.dumps(item.turn.content) in "\n".join(lines[start - 1 : start + 6])


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
_VALUES = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=100, deadline=None)
@given(value=st.lists(_VALUES, max_size=4) | st.dictionaries(st.text(max_size=4), _VALUES, max_size=4),
       indent=st.sampled_from([None, 0, 2]))
def test_located_json_parses_like_json_and_knows_where_each_value_starts(value: object, indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    doc = open_document(Path("x.json"), text, fmt="openai")
    expected = json.loads(text)
    records = [item for item, _ in doc.records]  # type: ignore[misc]
    assert (records if isinstance(expected, list) else records[0]) == expected
    decoder = json.JSONDecoder()
    for keypath, offset in doc.offsets.items():
        target = expected
        for key in keypath:
            target = target[key]
        assert decoder.raw_decode(text, offset)[0] == target
        assert doc.line(keypath) == text.count("\n", 0, offset) + 1


def test_role_spellings_of_other_tools(tmp_path: Path) -> None:
    openai = [{"role": "developer", "content": "be brief"}, {"role": "Human", "content": "hi"}]
    sharegpt = {"conversations": [{"from": "observation", "value": "42"}, {"from": "gpt", "value": "ok"}]}
    assert [t.turn.role for t in read_log(_write(tmp_path, "o.json", json.dumps(openai))).turns] == ["system", "user"]
    assert [t.turn.role for t in read_log(_write(tmp_path, "s.json", json.dumps(sharegpt))).turns] == ["tool", "assistant"]


def test_several_conversations_get_ids_and_their_own_positions(tmp_path: Path) -> None:
    first, second = _messages(_openai)[:2], _messages(_openai)[2:]
    path = _write(tmp_path, "many.jsonl", _lines([{"messages": first}, {"id": "abc", "messages": second}, first]))
    log = read_log(path)
    assert [(t.conversation, t.position) for t in log.turns] == [
        ("many#1", 0), ("many#1", 1), ("abc", 0), ("abc", 1), ("many#3", 0), ("many#3", 1)]
    assert list(log.conversations()) == ["many#1", "abc", "many#3"]


def test_tool_call_messages_without_text_are_passed_over(tmp_path: Path) -> None:
    messages = [_openai(*CONVERSATION[0]),
                {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]},
                {"role": "tool", "content": "sunny", "tool_call_id": "1"}]
    log = read_log(_write(tmp_path, "tools.json", json.dumps(messages)))
    assert [(t.turn.role, t.position) for t in log.turns] == [("user", 0), ("tool", 1)]


def test_transcript_roles_times_and_continuations(tmp_path: Path) -> None:
    text = ("Human: hi there\nAI: hello\nwhat can I do?\n\n## 2024-05-01\nBo: a third speaker\n"
            "[2024-05-02 10:30]\nCy: next day\n[2024-05-03 08:00] Human: with a stamp\n")
    log = read_log(_write(tmp_path, "t.log", text))
    got = [(t.turn.role, t.turn.speaker, t.turn.content, t.turn.timestamp, t.source.rsplit(":")[-1]) for t in log.turns]
    assert got == [
        ("user", "Human", "hi there", None, "1"),
        ("assistant", "AI", "hello\nwhat can I do?", None, "2"),
        ("assistant", "Bo", "a third speaker", "2024-05-01T00:00:00", "6"),
        ("assistant", "Cy", "next day", "2024-05-02T10:30:00", "8"),
        ("user", "Human", "with a stamp", "2024-05-03T08:00:00", "9"),
    ]


BAD_INPUTS: dict[str, tuple[str, str | bytes, int, str]] = {
    # name -> (file name, content, line of the error, expected text in the message)
    "malformed JSON line": ("c.jsonl", _lines(_messages(_openai)[:2]) + '{"role": "user", "content": \n', 3,
                            "malformed JSON line"),
    "malformed JSON array": ("c.json", '[\n  {"role": "user", "content": "a"},\n  {"role": "user"\n   "content": "b"}\n]', 4,
                             "malformed JSON: Expecting ',' delimiter"),
    "no content": ("c.jsonl", _lines([_openai(*CONVERSATION[0]), {"role": "user"}]), 2,
                   "message has no 'content'; expected a string"),
    "content not a string": ("c.jsonl", _lines([{"role": "user", "content": 42}]), 1,
                             "content must be a string or a list of text parts, found a number"),
    "unknown role": ("c.json", json.dumps([_openai(*CONVERSATION[0]), {"role": "wizard", "content": "x"}], indent=1), 8,
                     "unknown role 'wizard'; expected one of user, assistant, system, tool"),
    "bad timestamp": ("c.jsonl", _lines([{"role": "user", "content": "x", "timestamp": "soon"}]), 1,
                      "timestamp 'soon' is not ISO-8601"),
    "empty file": ("c.jsonl", "\n  \n", 1, "file is empty"),
    "not UTF-8": ("c.jsonl", b'{"role": "user", "content": "ok"}\n{"role": "user", "content": "caf\xe9"}\n', 2,
                  "not valid UTF-8: byte 0xe9 at byte offset 66"),
    "huge message": ("c.jsonl", _lines([_openai(*CONVERSATION[0]), {"role": "user", "content": "x" * 10_000_000}]), 2,
                     "message has 10,000,000 characters; at most 1,000,000"),
    "unknown langchain type": ("c.json", json.dumps([{"type": "wizard", "data": {"content": "x"}}]), 1,
                               "unknown LangChain message type 'wizard'"),
    "sharegpt value missing": ("c.json", json.dumps([{"conversations": [{"from": "human"}]}]), 1,
                               "ShareGPT 'value' must be a string, found null"),
    "text before any speaker": ("c.txt", "just some words\nMaya: hi\n", 1, "expected 'Speaker: text'"),
    "unrecognised JSON": ("c.json", '[{"foo": 1}]', 1, "not a recognised chat log; expected OpenAI messages"),
    "unrecognised text": ("c.txt", "no speakers here\n", 1, "not a recognised chat log"),
    "no messages": ("c.json", '{"messages": []}', 1, "no messages found"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_file_line_and_what_was_expected(tmp_path: Path, case: str) -> None:
    name, content, line, expected = BAD_INPUTS[case]
    path = _write(tmp_path, name, content)
    with pytest.raises(FormatError) as caught:
        read_log(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: ") and caught.value.source == f"{path}:{line}"
    assert expected in message
    assert "\n" not in message and len(message) < 400


def test_empty_and_non_utf8_files_fail_even_when_skipping(tmp_path: Path) -> None:
    for case in ("empty file", "not UTF-8", "malformed JSON array"):
        name, content, line, expected = BAD_INPUTS[case]
        with pytest.raises(FormatError, match=re.escape(f"{name}:{line}: {expected}")):
            read_log(_write(tmp_path, name, content), skip_invalid=True)


def test_skip_invalid_keeps_valid_records_and_reports_the_rest(tmp_path: Path) -> None:
    good = _messages(_openai)
    text = _lines([good[0], {"role": "wizard", "content": "x"}]) + "{oops\n\n" + _lines([{"role": "user"}, good[1]])
    path = _write(tmp_path, "mixed.jsonl", text)
    with pytest.raises(FormatError, match="mixed.jsonl:2: unknown role"):
        read_log(path)
    log = read_log(path, skip_invalid=True)
    assert [(t.turn.content, t.position, t.source) for t in log.turns] == [
        (good[0]["content"], 0, f"{path}:1"), (good[1]["content"], 1, f"{path}:6")]
    assert [error.source for error in log.skipped] == [f"{path}:2", f"{path}:3", f"{path}:5"]
    assert all(isinstance(error, FormatError) for error in log.skipped)


def test_unknown_format_lists_the_formats(tmp_path: Path) -> None:
    path = _write(tmp_path, "chat.jsonl", _lines(_messages(_openai)))
    for call in (lambda: read_log(path, "csv"), lambda: read_paths([path], "csv")):
        with pytest.raises(InputError) as caught:
            call()
        assert all(fmt in str(caught.value) for fmt in FORMATS)


def test_explicit_format_overrides_detection(tmp_path: Path) -> None:
    path = _write(tmp_path, "odd.txt", '[2024-01-01] Maya: {"not": "json"}\n')
    assert read_log(path).format == "transcript"
    with pytest.raises(FormatError, match=r"odd.txt:1: malformed JSON"):
        read_log(path, "openai")


def test_directory_with_mixed_formats_detects_each_file(tmp_path: Path) -> None:
    for case, target in [("openai-jsonl", "a.jsonl"), ("sharegpt-array", "b.json"),
                         ("transcript", "c.txt"), ("langchain-array", "sub/d.json")]:
        (tmp_path / target).parent.mkdir(parents=True, exist_ok=True)
        _write(tmp_path, target, WRITERS[case][1])
    _write(tmp_path, ".hidden.json", "not json at all")
    (tmp_path / ".git").mkdir()
    _write(tmp_path, ".git/x.json", "[")
    _write(tmp_path, "table.csv", "a,b\n")
    logs = read_paths([tmp_path])
    assert [(log.path.relative_to(tmp_path).as_posix(), log.format) for log in logs] == [
        ("a.jsonl", "openai"), ("b.json", "sharegpt"), ("c.txt", "transcript"), ("sub/d.json", "langchain")]
    assert all(len(log.turns) == len(CONVERSATION) for log in logs)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no chat logs"):
        read_paths([tmp_path / "empty"])


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_paths([tmp_path / "nope.json"])


def _facts(log: ParsedLog, word: str) -> list[str]:
    return [t.turn.content for t in log.turns if word in t.turn.content]


def test_example_logs_hold_the_facts_the_docs_ask_about() -> None:
    maya, book_club = read_log(EXAMPLES / "maya.jsonl"), read_log(EXAMPLES / "book_club.txt")
    assert (maya.format, book_club.format) == ("openai", "transcript")
    assert 40 <= len(maya.turns) <= 60 and not maya.skipped and not book_club.skipped
    assert {t.turn.speaker for t in maya.turns} == {"Maya", "Sage"}
    assert len({t.turn.timestamp[:10] for t in maya.turns if t.turn.timestamp}) == 4  # sessions
    assert any("Her name is Pretzel" in text for text in _facts(maya, "Pretzel"))
    assert _facts(maya, "Harbor Health") and _facts(maya, "lentil") and _facts(maya, "Lisbon")
    assert {t.turn.speaker for t in book_club.turns} == {"Jonas", "Priya"}
    assert _facts(book_club, "Miso")
