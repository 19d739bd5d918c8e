"""A chat-log file in memory: its text, layout and records, located by line; and the turn records.

Every reader works on a :class:`Document`: the decoded text, split into top-level records whose
``file:line`` is known, so that every error names where the bad input is. Bad input raises
:class:`~ctxmem_plugin.errors.FormatError` (one line: ``file:line: what was expected``). An empty
file, bytes that are not UTF-8 and a JSON document that does not parse fail whatever the format.

Layout: ``.jsonl``/``.ndjson`` files are JSONL. Other files (``.json`` excepted) are text when the
first non-blank character is not ``[`` or ``{`` or the first non-blank line is a
``[2024-03-01 10:00]`` stamp, and ``.txt``/``.log``/``.md`` files that are not JSON are text too.
The rest are JSONL when the first line is a whole JSON value followed by more, else one JSON
document.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from json.decoder import scanstring
from pathlib import Path
from typing import Any, Union

from pydantic import ValidationError

from ctxmem_plugin import safejson
from ctxmem_plugin.errors import FormatError, InputError
from ctxmem_plugin.namespaces import Namespace
from ctxmem_plugin.records import MAX_CONTENT_CHARS, NewTurn, Turn

_TEXT_SUFFIXES = frozenset({".txt", ".text", ".log", ".md"})


_MAX_DEPTH = 4  # deep enough to locate LoCoMo turns: [i]["conversation"]["session_n"][j]


_KINDS = {dict: "an object", list: "an array", str: "a string", type(None): "null", bool: "a boolean",
          int: "a number", float: "a number"}


_WS = re.compile(r"[ \t\n\r]*")


_DECODER = json.JSONDecoder()


TIME_STAMP = re.compile(r"\[(?P<time>\d[^\]]*)\]\s*(?P<rest>.*)")

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

    def entry(self, namespace: Namespace) -> NewTurn:
        """This turn to store in ``namespace``, identified by its conversation and position in it.

        The same file ingested again then adds nothing, while a message said twice stays two turns.
        """
        return NewTurn(namespace, self.turn, f"{self.conversation}#{self.position}")


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

    def entries(self, namespace: Namespace, *, split_conversations: bool = False) -> list[NewTurn]:
        """This file's turns to store under ``namespace`` (each conversation in ``namespace/<id>`` when split)."""
        return [st.entry((*namespace, st.conversation) if split_conversations else namespace) for st in self.turns]

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
    if fmt is None and suffix != ".json" and (first[0] not in "[{" or TIME_STAMP.fullmatch(first)):
        return Document(path, "text", text)
    try:
        value, offsets = _parse_located(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and "\n" not in text[: exc.pos].strip():  # one value per line
            return Document(path, "jsonl", text, _jsonl_records(path, text))
        if fmt is None and suffix in _TEXT_SUFFIXES:
            return Document(path, "text", text)
        raise FormatError(f"malformed JSON: {json_problem(exc)}", f"{path}:{exc.lineno}") from None
    doc = Document(path, "json", text, offsets=offsets)
    if not isinstance(value, (list, dict)):
        raise FormatError(f"expected a JSON array or object, found {kind_of(value)}", doc.where(()))
    doc.records = [(item, (i,)) for i, item in enumerate(value)] if isinstance(value, list) else [(value, ())]
    return doc


def json_problem(exc: json.JSONDecodeError) -> str:
    """``"Expecting value at column 7"``: the parser's words and the column, said once.

    Some of Python's messages end in "at" already ("Invalid control character at").
    """
    return f"{exc.msg.removesuffix(' at')} at column {exc.colno}"


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


def kind_of(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


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
                records.append((safejson.loads(line), (number,)))
            except json.JSONDecodeError as exc:
                message = f"malformed JSON line: {json_problem(exc)}; expected one JSON value per line"
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
            return safejson.raw_decode(_DECODER, text, i)  # C speed below the depth that needs lines
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


def collect(doc: Document, fmt: str, pending: Iterable[Pending], *, skip_invalid: bool = False) -> ParsedLog:
    """The turns a reader yielded for ``doc``, numbered within their conversations.

    Raises the first bad record's error unless ``skip_invalid``, and an error when nothing at
    all was found.
    """
    turns: list[SourceTurn] = []
    skipped: list[InputError] = []
    counts: dict[str, int] = {}
    for item in pending:
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
