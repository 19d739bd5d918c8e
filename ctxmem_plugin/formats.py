"""Readers of chat logs (OpenAI messages, LangChain dumps, ShareGPT, LoCoMo, transcripts) into turns.

Each reader yields validated :class:`~ctxmem_plugin.records.Turn` records with the ``file:line``
they came from. Bad input raises :class:`~ctxmem_plugin.errors.FormatError` whose one-line message
names ``file:line`` and what was expected; ``skip_invalid=True`` leaves bad records out and lists
their errors in :attr:`ParsedLog.skipped`. An empty file, bytes that are not UTF-8 and a JSON
document that does not parse fail either way.

Detection (:func:`detect_format`). Layout: ``.jsonl``/``.ndjson`` files are JSONL. Other files
(``.json`` excepted) are text when the first non-blank character is not ``[`` or ``{`` or the first
non-blank line is a ``[2024-03-01 10:00]`` stamp, and ``.txt``/``.log``/``.md`` files that are not
JSON are text too. The rest are JSONL when the first line is a whole JSON value followed by more,
else one JSON document. Format, from the keys of the first records: ``sample_id`` or
``conversation.speaker_a`` -> locomo; ``conversations`` or ``from`` + ``value`` -> sharegpt;
``type`` + ``data`` -> langchain; ``role``/``content`` -> openai (``messages`` -> what its messages
are); text with ``Name: text`` lines -> transcript.

Transcripts: ``Name: text`` starts a turn (a name of several words capitalises each, so ``She
said: yes`` is prose); other non-blank lines continue the turn (joined with newlines); blank lines
are ignored. A line ``## <time>`` or ``[<time>]``, ``<time>`` starting with a digit and accepted by
:func:`~ctxmem_plugin.records.parse_timestamp` (``2024-03-01``, ``2024-03-01 10:00``), sets the
timestamp of the turns that follow; ``[<time>] Name: text`` also starts a turn; other ``# ``
lines are headings. Speakers named like a role (User, Human, Assistant, AI, System...) get it; the
first other speaker is ``user`` unless a user-named one came first, later ones ``assistant``.

Messages that only carry a tool call (OpenAI ``tool_calls``/``function_call``, LangChain
``tool_calls``, with no text) are passed over: they hold nothing to remember.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from json.decoder import scanstring
from pathlib import Path
from typing import Any, Union

from pydantic import ValidationError

from ctxmem_plugin.errors import FormatError, InputError
from ctxmem_plugin.records import MAX_CONTENT_CHARS, ROLE_ALIASES, Turn, parse_timestamp

FORMATS = ("openai", "langchain", "sharegpt", "locomo", "transcript")
LOG_SUFFIXES = frozenset({".json", ".jsonl", ".ndjson", ".txt", ".text", ".log", ".md"})
"""File endings that :func:`read_paths` picks up when it expands a directory."""

_TEXT_SUFFIXES = frozenset({".txt", ".text", ".log", ".md"})
_MAX_DEPTH = 4  # deep enough to locate LoCoMo turns: [i]["conversation"]["session_n"][j]
_PROBE = 20  # records looked at to detect a format
_EXPECTED = (
    "OpenAI messages (role, content), LangChain messages (type, data), ShareGPT (conversations of "
    "from, value), LoCoMo (sample_id, conversation) or a 'Speaker: text' transcript"
)
_KINDS = {dict: "an object", list: "an array", str: "a string", type(None): "null", bool: "a boolean",
          int: "a number", float: "a number"}
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_SPEAKER = re.compile(r"(?P<name>[^\W\d_][\w .'’-]{0,39}?)\s*:(?:\s+(?P<text>.*))?")
_BRACKET = re.compile(r"\[(?P<time>\d[^\]]*)\]\s*(?P<rest>.*)")
_HEADING = re.compile(r"#+\s+(?P<text>.*)")
_LANGCHAIN_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool",
                    "function": "tool"}
# Role spellings of OpenAI's newer API and of ShareGPT variants, beyond records.ROLE_ALIASES.
_MORE_ROLES = {"developer": "system", "observation": "tool", "function_call": "assistant",
               "bing": "assistant"}

KeyPath = tuple[Any, ...]
Record = Union[tuple[Any, KeyPath], FormatError]
"""A top-level record and its key path, or the error of a JSONL line that is not JSON."""
Pending = Union[tuple[str, Turn, str], InputError]
"""What readers yield: ``(conversation, turn, source)``, or the error of a bad record."""
Convert = Callable[[Any, str], Union[Turn, None]]


@dataclass(frozen=True)
class SourceTurn:
    """A validated turn and where it came from.

    Attributes:
        turn: the record.
        source: ``"path:line"``; in a JSON document, the line where the record starts.
        conversation: the id from the file (LoCoMo ``sample_id``, ShareGPT or OpenAI conversation
            ``id``), else the file stem, or ``"<stem>#<n>"`` for the n-th (from 1) conversation of
            a file holding a list of conversations.
        position: 0-based index of the turn within its conversation.
    """

    turn: Turn
    source: str
    conversation: str
    position: int


@dataclass
class ParsedLog:
    """The turns read from one file.

    Attributes:
        path: the file.
        format: one of :data:`FORMATS`.
        turns: the turns in file order.
        skipped: errors of the records left out; only filled when ``skip_invalid=True``.
    """

    path: Path
    format: str
    turns: list[SourceTurn]
    skipped: list[InputError] = field(default_factory=list)

    def conversations(self) -> dict[str, list[SourceTurn]]:
        """The turns grouped by conversation id, in order of first appearance."""
        grouped: dict[str, list[SourceTurn]] = {}
        for item in self.turns:
            grouped.setdefault(item.conversation, []).append(item)
        return grouped


@dataclass
class Document:
    """A log file in memory: its text, layout and top-level records, with their lines.

    Attributes:
        path: the file, named in errors as given.
        layout: ``"json"``, ``"jsonl"`` or ``"text"``.
        text: the decoded text.
        records: JSON: the elements of a top-level array (key path ``(i,)``) or the top-level
            object (key path ``()``); JSONL: one per non-blank line (key path ``(line,)``), or the
            :class:`FormatError` of a line that is not JSON; text: none.
        offsets: JSON: where the value at each key path (down to depth 4) starts in ``text``.
    """

    path: Path
    layout: str
    text: str
    records: list[Record] = field(default_factory=list)
    offsets: dict[KeyPath, int] = field(default_factory=dict, repr=False)

    @cached_property
    def _newlines(self) -> list[int]:
        return [match.start() for match in re.finditer("\n", self.text)]

    def line(self, keypath: KeyPath) -> int:
        """The 1-based line where the value at ``keypath`` (or its nearest located parent) starts."""
        if self.layout == "jsonl":
            return int(keypath[0])
        while keypath and keypath not in self.offsets:
            keypath = keypath[:-1]
        return bisect.bisect_left(self._newlines, self.offsets.get(keypath, 0)) + 1

    def where(self, keypath: KeyPath) -> str:
        """``"path:line"`` of the value at ``keypath``."""
        return f"{self.path}:{self.line(keypath)}"


def detect_format(path: Path, text: str | None = None) -> str:
    """Name the format of a chat log, one of :data:`FORMATS` (rules in the module docstring).

    Args:
        path: the file; its extension helps, and it is read when ``text`` is not given.
        text: the file's text, when already read.

    Raises:
        FormatError: the file is empty, not UTF-8, malformed JSON, or in no known format.
    """
    return _detect(open_document(path, text))


def read_log(path: str | Path, fmt: str | None = None, *, skip_invalid: bool = False) -> ParsedLog:
    """Read one chat log into validated turns.

    Args:
        path: the file.
        fmt: one of :data:`FORMATS`; ``None`` (or ``"auto"``) detects it.
        skip_invalid: leave bad records out (listed in ``skipped``) instead of raising.

    Raises:
        InputError: unknown ``fmt``, or a file that cannot be read.
        FormatError: bad input, with ``source="path:line"``.
    """
    return parse_document(open_document(path, fmt=_check_format(fmt)), fmt, skip_invalid=skip_invalid)


def read_paths(
    paths: Iterable[str | Path], fmt: str | None = None, *, skip_invalid: bool = False
) -> list[ParsedLog]:
    """Read files and directories (each standing for its log files, recursively) like :func:`read_log`.

    A directory's files are read in sorted order, leaving out hidden files and folders and files
    not ending in one of :data:`LOG_SUFFIXES`; each file's format is detected on its own.

    Raises:
        InputError: unknown ``fmt``, a missing file, or a directory without log files.
        FormatError: as :func:`read_log`.
    """
    name = _check_format(fmt)
    files: list[Path] = []
    for item in [paths] if isinstance(paths, (str, Path)) else paths:
        path = Path(item)
        files.extend(_log_files(path) if path.is_dir() else [path])
    return [read_log(file, name, skip_invalid=skip_invalid) for file in files]


def open_document(path: str | Path, text: str | None = None, *, fmt: str | None = None) -> Document:
    """Read and decode a file and split it into records; ``fmt`` forces a text or JSON layout.

    Raises:
        InputError: the file cannot be read.
        FormatError: empty, not UTF-8, or (in a JSON layout) malformed JSON.
    """
    path = Path(path)
    text = (_read_text(path) if text is None else text).removeprefix("\ufeff")
    if not text.strip():
        raise FormatError("file is empty", f"{path}:1")
    first, suffix = text.lstrip().split("\n", 1)[0].strip(), path.suffix.lower()
    if fmt == "transcript":
        return Document(path, "text", text)
    if suffix in (".jsonl", ".ndjson"):
        return Document(path, "jsonl", text, _jsonl_records(path, text))
    if fmt is None and suffix != ".json" and (first[0] not in "[{" or _BRACKET.fullmatch(first)):
        return Document(path, "text", text)
    try:
        value, offsets = _parse_located(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and "\n" not in text[: exc.pos].strip():  # one value per line
            return Document(path, "jsonl", text, _jsonl_records(path, text))
        if fmt is None and suffix in _TEXT_SUFFIXES:
            return Document(path, "text", text)
        raise FormatError(f"malformed JSON: {exc.msg} at column {exc.colno}", f"{path}:{exc.lineno}") from None
    doc = Document(path, "json", text, offsets=offsets)
    if not isinstance(value, (list, dict)):
        raise FormatError(f"expected a JSON array or object, found {_kind(value)}", doc.where(()))
    doc.records = [(item, (i,)) for i, item in enumerate(value)] if isinstance(value, list) else [(value, ())]
    return doc


def parse_document(doc: Document, fmt: str | None, *, skip_invalid: bool = False) -> ParsedLog:
    """Run the reader of ``fmt`` (``None``: detected) over ``doc``; see :func:`read_log`."""
    fmt = _check_format(fmt) or _detect(doc)
    turns: list[SourceTurn] = []
    skipped: list[InputError] = []
    counts: dict[str, int] = {}
    for item in _READERS[fmt](doc):
        if isinstance(item, InputError):
            if not skip_invalid:
                raise item
            skipped.append(item)
            continue
        conversation, turn, source = item
        counts[conversation] = counts.get(conversation, -1) + 1
        turns.append(SourceTurn(turn, source, conversation, counts[conversation]))
    if not turns and not skipped:
        raise FormatError(f"no messages found; expected {fmt} records", f"{doc.path}:1")
    return ParsedLog(doc.path, fmt, turns, skipped)


def build_turn(source: str, **fields: Any) -> Turn:
    """Validate ``fields`` into a :class:`Turn`, or raise a one-line :class:`FormatError`."""
    content = fields.get("content")
    if isinstance(content, str) and len(content) > MAX_CONTENT_CHARS:
        raise FormatError(f"message has {len(content):,} characters; at most {MAX_CONTENT_CHARS:,}", source)
    try:
        return Turn(**fields)
    except ValidationError as exc:
        parts = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "string_too_short":
                message = f"{name} is empty"
            parts.append(message if name in message else f"{name}: {message}")
        raise FormatError(" ".join("; ".join(parts).splitlines()), source) from None


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _check_format(fmt: str | None) -> str | None:
    if fmt not in (None, "auto", *FORMATS):
        raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)} (or auto)")
    return None if fmt == "auto" else fmt


def _log_files(directory: Path) -> list[Path]:
    found = sorted(
        path for path in directory.rglob("*")
        if path.is_file() and path.suffix.lower() in LOG_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )
    if not found:
        endings = ", ".join(sorted(LOG_SUFFIXES))
        raise InputError(f"no chat logs in this directory; expected files ending in {endings}", str(directory))
    return found


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("no such file", str(path)) from None
    except IsADirectoryError:
        raise InputError("is a directory; expected a file (read_paths expands directories)", str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror}", str(path)) from None
    try:
        return data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        message = f"not valid UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start}; expected UTF-8 text"
        raise FormatError(message, f"{path}:{line}") from None


def _jsonl_records(path: Path, text: str) -> list[Record]:
    records: list[Record] = []
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                records.append((json.loads(line), (number,)))
            except json.JSONDecodeError as exc:
                message = f"malformed JSON line: {exc.msg} at column {exc.colno}; expected one JSON value per line"
                records.append(FormatError(message, f"{path}:{number}"))
    return records


def _parse_located(text: str) -> tuple[Any, dict[KeyPath, int]]:
    """``json.loads`` that also records where each value down to depth 4 starts."""
    offsets: dict[KeyPath, int] = {}

    def skip(i: int) -> int:
        match = _WS.match(text, i)
        return match.end() if match else i

    def value(i: int, path: KeyPath) -> tuple[Any, int]:
        offsets[path] = i
        opener = text[i : i + 1]
        if len(path) >= _MAX_DEPTH or opener not in ("[", "{"):
            return _DECODER.raw_decode(text, i)  # C speed below the depth that needs lines
        closer = "]" if opener == "[" else "}"
        items: list[Any] = []
        members: dict[str, Any] = {}
        i = skip(i + 1)
        if text[i : i + 1] == closer:
            return (items if opener == "[" else members), i + 1
        while True:
            if opener == "[":
                item, i = value(i, (*path, len(items)))
                items.append(item)
            else:
                if text[i : i + 1] != '"':
                    raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
                key, i = scanstring(text, i + 1)
                i = skip(i)
                if text[i : i + 1] != ":":
                    raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
                members[key], i = value(skip(i + 1), (*path, key))
            i = skip(i)
            if text[i : i + 1] == closer:
                return (items if opener == "[" else members), i + 1
            if text[i : i + 1] != ",":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
            i = skip(i + 1)

    result, end = value(skip(0), ())
    if skip(end) != len(text):
        raise json.JSONDecodeError("Extra data", text, skip(end))
    return result, offsets


def _detect(doc: Document) -> str:
    if doc.layout == "text":
        for line in [line.strip() for line in doc.text.split("\n") if line.strip()][:50]:
            bracket = _BRACKET.fullmatch(line)
            if _speaker(bracket["rest"] if bracket else line):
                return "transcript"
        raise FormatError(f"not a recognised chat log; expected {_EXPECTED}", f"{doc.path}:1")
    bad: FormatError | None = None
    for record in doc.records[:_PROBE]:
        if isinstance(record, FormatError):
            bad = bad or record
        elif found := _classify(record[0]):
            return found
    if bad is not None:
        raise bad
    first = doc.records[0] if doc.records else None
    where = doc.where(first[1]) if isinstance(first, tuple) else f"{doc.path}:1"
    raise FormatError(f"not a recognised chat log; expected {_EXPECTED}", where)


def _classify(value: Any, depth: int = 0) -> str | None:
    if isinstance(value, list) and depth < 3:
        return next(filter(None, (_classify(item, depth + 1) for item in value[:5])), None)
    if not isinstance(value, dict):
        return None
    conversation = value.get("conversation")
    if "sample_id" in value or (isinstance(conversation, dict) and "speaker_a" in conversation):
        return "locomo"
    if "conversations" in value or ("from" in value and "value" in value):
        return "sharegpt"
    if "type" in value and isinstance(value.get("data"), dict):
        return "langchain"
    if "messages" in value and depth < 3:
        return _classify(value["messages"], depth + 1) or "openai"
    return "openai" if "role" in value or "content" in value else None


def _text_of(content: Any, source: str) -> str | None:
    """A message's text: a string, or the text parts of an OpenAI/LangChain list of parts joined."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise FormatError(f"content must be a string or a list of text parts, found {_kind(content)}", source)
    texts = [part if isinstance(part, str) else part["text"] for part in content
             if isinstance(part, str) or (isinstance(part, dict) and isinstance(part.get("text"), str))]
    if not texts:
        raise FormatError("content has no text parts; expected {'type': 'text', 'text': ...}", source)
    return "\n".join(texts)


def _openai_turn(message: Any, source: str) -> Turn | None:
    if not isinstance(message, dict) or "role" not in message:
        found = "an object without 'role'" if isinstance(message, dict) else _kind(message)
        raise FormatError(f"expected a message object with 'role' and 'content', found {found}", source)
    content = _text_of(message.get("content"), source)
    if not content and (message.get("tool_calls") or message.get("function_call")):
        return None
    if content is None:
        raise FormatError("message has no 'content'; expected a string", source)
    metadata = message.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise FormatError(f"'metadata' must be an object, found {_kind(metadata)}", source)
    role = message["role"]
    role = _MORE_ROLES.get(role.strip().lower(), role) if isinstance(role, str) else role
    return build_turn(source, role=role, content=content, timestamp=message.get("timestamp"),
                      speaker=message.get("speaker", message.get("name")), metadata=metadata)


def _langchain_turn(message: Any, source: str) -> Turn | None:
    if not isinstance(message, dict) or "type" not in message or not isinstance(message.get("data"), dict):
        raise FormatError(f"expected a LangChain message {{'type', 'data'}}, found {_kind(message)}", source)
    kind, data = message["type"], message["data"]
    if kind == "chat":  # ChatMessage: the role is in the data
        role = data.get("role")
    elif isinstance(kind, str) and kind in _LANGCHAIN_ROLES:
        role = _LANGCHAIN_ROLES[kind]
    else:
        known = "human, ai, system, tool, function, chat"
        raise FormatError(f"unknown LangChain message type {kind!r:.40}; expected one of {known}", source)
    extra = data.get("additional_kwargs")
    timestamp = extra.get("timestamp") if isinstance(extra, dict) else None
    fields = {"content": data.get("content"), "name": data.get("name"), "tool_calls": data.get("tool_calls")}
    return _openai_turn({**fields, "role": role, "timestamp": timestamp}, source)


def _sharegpt_turn(message: Any, source: str) -> Turn | None:
    if not isinstance(message, dict) or "from" not in message:
        raise FormatError(f"expected a ShareGPT message {{'from', 'value'}}, found {_kind(message)}", source)
    if not isinstance(message.get("value"), str):
        raise FormatError(f"ShareGPT 'value' must be a string, found {_kind(message.get('value'))}", source)
    fields = {"role": message["from"], "content": message["value"], "name": message.get("name")}
    return _openai_turn(fields, source)


def _read_grouped(doc: Document, key: str, convert: Convert) -> Iterator[Pending]:
    """Top-level messages form the conversation ``<stem>``; an array of messages, or an object
    holding one under ``key``, is a conversation of its own."""
    stem, count = doc.path.stem, 0
    for record in doc.records:
        if isinstance(record, FormatError):
            yield record
            continue
        value, keypath = record
        if not (isinstance(value, list) or (isinstance(value, dict) and key in value)):
            yield from _convert(convert, value, stem, doc.where(keypath))
            continue
        count += 1
        name = f"{stem}#{count}" if keypath else stem
        messages, base = value, keypath
        if isinstance(value, dict):
            name = name if value.get("id") is None else str(value["id"])
            messages, base = value[key], (*keypath, key)
        if not isinstance(messages, list):
            yield FormatError(f"{key!r} must be an array of messages, found {_kind(messages)}", doc.where(base))
            continue
        for index, message in enumerate(messages):
            yield from _convert(convert, message, name, doc.where((*base, index)))


def _convert(convert: Convert, message: Any, conversation: str, source: str) -> Iterator[Pending]:
    try:
        turn = convert(message, source)
    except FormatError as error:
        yield error
        return
    if turn is not None:
        yield conversation, turn, source


def _read_transcript(doc: Document) -> Iterator[Pending]:
    roles: dict[str, str] = {}
    stamp: str | None = None
    current: tuple[str, int, str | None, list[str]] | None = None  # name, line, time, text lines

    def finish(name: str, number: int, time: str | None, lines: list[str]) -> Iterator[Pending]:
        key = name.lower()
        if key not in roles:
            roles[key] = ROLE_ALIASES.get(key) or ("assistant" if "user" in roles.values() else "user")
        message = {"role": roles[key], "content": "\n".join(lines).strip(), "speaker": name, "timestamp": time}
        return _convert(_openai_turn, message, doc.path.stem, f"{doc.path}:{number}")

    for number, raw in enumerate(doc.text.split("\n"), 1):
        line = raw.strip()
        heading, bracket = _HEADING.fullmatch(line), _BRACKET.fullmatch(line)
        if heading and not heading["text"][:1].isdigit():
            continue  # a title, not a time
        time = heading["text"] if heading else bracket["time"] if bracket else None
        if time is not None:
            try:
                stamp = parse_timestamp(time)
            except ValueError as exc:
                yield FormatError(str(exc), f"{doc.path}:{number}")
            line = bracket["rest"] if bracket else ""
        speaker = _speaker(line) if line else None
        if speaker:
            if current:
                yield from finish(*current)
            current = (speaker[0], number, stamp, [speaker[1]])
        elif line and current:
            current[3].append(line)
        elif line:
            yield FormatError(f"expected 'Speaker: text', found {line!r:.60}", f"{doc.path}:{number}")
    if current:
        yield from finish(*current)


def _speaker(line: str) -> tuple[str, str] | None:
    """``(name, text)`` of a ``Name: text`` line; several-word names must capitalise each word."""
    match = _SPEAKER.fullmatch(line)
    words = match["name"].split() if match else []
    if not match or (len(words) > 1 and (len(words) > 4 or not all(word[0].isupper() for word in words))):
        return None
    return " ".join(words), match["text"] or ""


def _read_locomo(doc: Document) -> Iterator[Pending]:
    from ctxmem_plugin.locomo import iter_turns  # locomo.py imports this module at load time

    return iter_turns(doc)


_READERS: dict[str, Callable[[Document], Iterator[Pending]]] = {
    "openai": lambda doc: _read_grouped(doc, "messages", _openai_turn),
    "langchain": lambda doc: _read_grouped(doc, "messages", _langchain_turn),
    "sharegpt": lambda doc: _read_grouped(doc, "conversations", _sharegpt_turn),
    "locomo": _read_locomo,
    "transcript": _read_transcript,
}
